//! The keys of one queue and the operations the queue logic needs on them.
//!
//! The module implements [`Store`] on Redis's low-level key API (replicating every change as
//! a plain command); [`crate::mem::MemStore`] implements it in memory for unit tests.

/// The keys of a queue (docs/storage.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// Ready messages: list of records.
    Msg,
    /// Delayed messages: zset record → due.
    Dly,
    /// In flight: zset receipt → deadline.
    Bak,
    /// In flight: hash receipt → record.
    Inf,
    /// Failed messages: list of records.
    Fai,
    /// Errored messages: list of records.
    Err,
    /// Settings overrides: hash.
    Cfg,
    /// Counters: hash.
    St,
    /// Dedup window: zset producer id → push time.
    Dup,
    /// Message log: stream.
    Log,
}

impl Key {
    pub const ALL: [Key; 10] = [Key::Msg, Key::Dly, Key::Bak, Key::Inf, Key::Fai, Key::Err, Key::Cfg, Key::St, Key::Dup, Key::Log];

    pub fn prefix(self) -> &'static str {
        match self {
            Key::Msg => "msg",
            Key::Dly => "dly",
            Key::Bak => "bak",
            Key::Inf => "inf",
            Key::Fai => "fai",
            Key::Err => "err",
            Key::Cfg => "cfg",
            Key::St => "st",
            Key::Dup => "dup",
            Key::Log => "log",
        }
    }

    /// `msg:{q}`.
    pub fn name(self, queue: &[u8]) -> Vec<u8> {
        let mut n = Vec::with_capacity(queue.len() + 6);
        n.extend_from_slice(self.prefix().as_bytes());
        n.extend_from_slice(b":{");
        n.extend_from_slice(queue);
        n.push(b'}');
        n
    }

    /// The queue of a key name of ours, if it is one (`bak:{jobs}` → `jobs`).
    pub fn parse(name: &[u8]) -> Option<(Key, &[u8])> {
        let colon = name.iter().position(|c| *c == b':')?;
        let key = Key::ALL.into_iter().find(|k| k.prefix().as_bytes() == &name[..colon])?;
        let rest = &name[colon + 1..];
        if rest.len() < 3 || rest[0] != b'{' || rest[rest.len() - 1] != b'}' {
            return None;
        }
        Some((key, &rest[1..rest.len() - 1]))
    }
}

/// Operations on the keys of one queue. Scores are unix ms.
pub trait Store {
    fn exists(&mut self, k: Key) -> bool;
    fn llen(&mut self, k: Key) -> u64;
    fn rpush(&mut self, k: Key, v: &[u8]);
    fn lpush(&mut self, k: Key, v: &[u8]);
    fn lpop(&mut self, k: Key) -> Option<Vec<u8>>;
    /// The element at `index` from the front.
    fn lindex(&mut self, k: Key, index: u64) -> Option<Vec<u8>>;

    fn zcard(&mut self, k: Key) -> u64;
    /// Adds or updates.
    fn zadd(&mut self, k: Key, score: u64, member: &[u8]);
    fn zrem(&mut self, k: Key, member: &[u8]) -> bool;
    fn zscore(&mut self, k: Key, member: &[u8]) -> Option<u64>;
    /// Up to `limit` members with score ≤ `max`, lowest first.
    fn zrange_upto(&mut self, k: Key, max: u64, limit: usize) -> Vec<(Vec<u8>, u64)>;

    fn hget(&mut self, k: Key, field: &[u8]) -> Option<Vec<u8>>;
    fn hset(&mut self, k: Key, field: &[u8], value: &[u8]);
    fn hdel(&mut self, k: Key, field: &[u8]) -> bool;
    fn hincrby(&mut self, k: Key, field: &[u8], by: i64) -> i64;

    /// Appends an entry to the log stream, trimmed to `maxlen` entries.
    fn xadd(&mut self, k: Key, maxlen: u64, fields: &[(&[u8], &[u8])]);
}
