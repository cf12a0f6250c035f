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

    /// The Redis type the key holds (an existing key of another type is WRONGTYPE).
    pub fn kind(self) -> Kind {
        match self {
            Key::Msg | Key::Fai | Key::Err => Kind::List,
            Key::Dly | Key::Bak | Key::Dup => Kind::Zset,
            Key::Inf | Key::Cfg | Key::St => Kind::Hash,
            Key::Log => Kind::Stream,
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

/// The Redis types the keys of a queue hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    List,
    Zset,
    Hash,
    Stream,
}

/// Keys that hold messages: one of them existing means the queue has messages.
pub const MESSAGE_KEYS: [Key; 5] = [Key::Msg, Key::Dly, Key::Bak, Key::Fai, Key::Err];

/// Whether a walk over a key's elements goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    Next,
    Stop,
}

/// What [`Store::inflight_walk`] calls: receipt, deadline, record.
pub type InflightVisit<'a> = dyn FnMut(&[u8], u64, &[u8]) -> Walk + 'a;

/// Operations on the keys of one queue. Scores are unix ms.
///
/// Reads never create a key; a write on a key of another type than [`Key::kind`] is a bug of
/// the caller, who checks the keys an operation will touch with [`Store::check`] before its
/// first write, so that a wrong-type key is refused and nothing changes.
pub trait Store {
    /// `Err(WrongType)` when one of `keys` exists with another type than its own.
    fn check(&mut self, keys: &[Key]) -> crate::Result<()>;
    fn exists(&mut self, k: Key) -> bool;
    fn llen(&mut self, k: Key) -> u64;
    fn rpush(&mut self, k: Key, v: &[u8]);
    fn lpush(&mut self, k: Key, v: &[u8]);
    fn lpop(&mut self, k: Key) -> Option<Vec<u8>>;
    /// Pops the front element and hands it to `take` where it lies, for a caller that makes
    /// its own changed copy anyway (FETCH): no copy of the element is made for it.
    fn lpop_with<R>(&mut self, k: Key, take: impl FnOnce(&[u8]) -> R) -> Option<R>
    where
        Self: Sized,
    {
        self.lpop(k).map(|v| take(&v))
    }
    /// The element at `index` from the front.
    fn lindex(&mut self, k: Key, index: u64) -> Option<Vec<u8>>;
    /// Visits the elements of a list from the front, with their index, until `visit` stops.
    fn list_walk(&mut self, k: Key, visit: &mut dyn FnMut(u64, &[u8]) -> Walk);
    /// Removes the element at `index`, which is `value` (found by a walk in this command).
    fn lremove(&mut self, k: Key, index: u64, value: &[u8]);

    fn zcard(&mut self, k: Key) -> u64;
    /// Adds or updates.
    fn zadd(&mut self, k: Key, score: u64, member: &[u8]);
    fn zrem(&mut self, k: Key, member: &[u8]) -> bool;
    fn zscore(&mut self, k: Key, member: &[u8]) -> Option<u64>;
    /// Up to `limit` members with score ≤ `max`, lowest first.
    fn zrange_upto(&mut self, k: Key, max: u64, limit: usize) -> Vec<(Vec<u8>, u64)>;
    /// Visits the members of a zset, lowest score first, until `visit` stops.
    fn zset_walk(&mut self, k: Key, visit: &mut dyn FnMut(&[u8], u64) -> Walk);
    /// Visits the messages in flight by deadline (`bak:{q}`), each with its receipt, deadline
    /// and record (`inf:{q}`), until `visit` stops.
    fn inflight_walk(&mut self, visit: &mut InflightVisit);

    fn hget(&mut self, k: Key, field: &[u8]) -> Option<Vec<u8>>;
    fn hset(&mut self, k: Key, field: &[u8], value: &[u8]);
    fn hdel(&mut self, k: Key, field: &[u8]) -> bool;
    /// Adds to an integer field; `Err(NotAnInteger)`, changing nothing, when it holds
    /// something else.
    fn hincrby(&mut self, k: Key, field: &[u8], by: i64) -> crate::Result<i64>;

    /// Appends an entry to the log stream, trimmed to `maxlen` entries.
    fn xadd(&mut self, k: Key, maxlen: u64, fields: &[(&'static [u8], &[u8])]);

    /// Random bytes, for the nonce that makes receipts unique across queues and histories.
    fn random(&mut self, out: &mut [u8]);
    /// Something may have become fetchable without a push to ready (an ordered queue's
    /// in-flight message or held retry went away): wake the FETCHes waiting on the queue.
    fn wake(&mut self);
}
