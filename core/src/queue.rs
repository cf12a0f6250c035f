//! The state machine of one queue, written against [`Store`]:
//!
//! ```text
//!   PUSH ──► ready (msg) ◄── promote ── delayed (dly) ◄── PUSH DELAY/AT, NACK RETRY + backoff
//!              │  ▲  ▲
//!        FETCH │  │  └── reclaim (lock ran out) ─┐
//!              ▼  │ NACK RETRY                   │
//!          in flight (bak + inf) ────────────────┘
//!              │ ACK → gone     │ NACK FAIL / max attempts → failed (fai)
//!                               │ NACK ERROR               → errors (err)
//!   RECOVER: expired → ready, failed → ready, errors → ready
//! ```
//!
//! No parsing and no reply shaping here: requests come typed from [`crate::args`].

use crate::args::{NackAction, Push, Recover, When};
use crate::error::{Error, Result};
use crate::record::{self, Layout, Record};
use crate::settings::{Settings, NAMES};
use crate::store::{Key, Store};

/// How many due or expired messages one FETCH moves before handing out its own.
pub const FETCH_MOVE_LIMIT: usize = 1000;
/// How many expired dedup entries one PUSH with ID removes.
pub const DEDUP_TRIM_LIMIT: usize = 16;

pub const MAX_ATTEMPTS_REASON: &[u8] = b"max attempts";
pub const LOCK_EXPIRED_REASON: &[u8] = b"max attempts (lock expired)";

/// Reads the queue's settings: the node's values with the queue's overrides on top.
pub fn settings<S: Store>(s: &mut S, node: &Settings) -> Settings {
    let mut set = node.clone();
    // Most queues have no override: then this is one lookup of an absent key.
    if s.exists(Key::Cfg) {
        for name in NAMES {
            if let Some(v) = s.hget(Key::Cfg, name.as_bytes()) {
                set.apply(name.as_bytes(), &v);
            }
        }
    }
    set
}

#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Stored(Vec<u8>),
    Duplicate(Vec<u8>),
}

impl PushOutcome {
    pub fn id(&self) -> &[u8] {
        match self {
            PushOutcome::Stored(id) | PushOutcome::Duplicate(id) => id,
        }
    }
}

/// One delivery handed out by FETCH: the record as stored in flight, read in place.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub bytes: Vec<u8>,
    pub layout: Layout,
    pub receipt: Vec<u8>,
    pub deadline: u64,
}

impl Delivery {
    pub fn field(&self, span: &std::ops::Range<usize>) -> &[u8] {
        &self.bytes[span.clone()]
    }

    pub fn message_id(&self) -> Vec<u8> {
        self.layout.message_id(&self.bytes)
    }

    /// The whole record, decoded (for tests and tools; FETCH itself never needs it).
    pub fn record(&self) -> Record {
        Record::decode(&self.bytes).expect("a delivery's record decodes")
    }
}

/// Moves on the whole queue: counters of what a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub promoted: u64,
    /// Expired in-flight messages taken (back to ready or to failed).
    pub reclaimed: u64,
    /// True when the limit stopped the pass before the work was done.
    pub more: bool,
}

pub struct Queue<'a, S: Store> {
    pub store: &'a mut S,
    pub set: Settings,
    pub now: u64,
}

impl<'a, S: Store> Queue<'a, S> {
    pub fn new(store: &'a mut S, node: &Settings, now: u64) -> Self {
        let set = settings(store, node);
        Queue { store, set, now }
    }

    /// With settings already known (the module caches them per queue).
    pub fn with_settings(store: &'a mut S, set: Settings, now: u64) -> Self {
        Queue { store, set, now }
    }

    /// RMQ.PUSH.
    pub fn push(&mut self, req: &Push) -> Result<PushOutcome> {
        let dedup = req.id.filter(|_| self.set.dedup_window_ms > 0);
        if let Some(id) = dedup {
            self.trim_dedup(DEDUP_TRIM_LIMIT);
            if let Some(seen) = self.store.zscore(Key::Dup, id) {
                // Pushed less than a window ago (or "later", if the clock went back).
                if self.now < seen.saturating_add(self.set.dedup_window_ms) {
                    self.store.hincrby(Key::St, b"dups", 1);
                    return Ok(PushOutcome::Duplicate(id.to_vec()));
                }
            }
        }
        if self.set.maxlen > 0 {
            let held = self.store.llen(Key::Msg) + self.store.zcard(Key::Dly) + self.store.zcard(Key::Bak);
            if held >= self.set.maxlen {
                return Err(Error::QueueFull);
            }
        }
        // Every push takes an offset: `pushed` is the offset, no second counter to write.
        let offset = self.store.hincrby(Key::St, b"offset", 1) as u64;
        let record = Record {
            id: req.id.unwrap_or(b"").to_vec(),
            body: req.body.to_vec(),
            tag: req.tag.to_vec(),
            key: req.key.to_vec(),
            headers: req.headers.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
            created: self.now,
            offset,
            ..Record::default()
        };
        let due = match req.when {
            When::Now => self.now,
            When::Delay(ms) => self.now + ms,
            When::At(at) => at,
        };
        let bytes = record.encode();
        let delayed = due > self.now;
        if delayed {
            self.store.zadd(Key::Dly, due, &bytes);
        } else {
            self.store.rpush(Key::Msg, &bytes);
        }
        if let Some(id) = dedup {
            self.store.zadd(Key::Dup, self.now, id);
        }
        self.log_push(&record, delayed.then_some(due));
        Ok(PushOutcome::Stored(record.message_id()))
    }

    /// RMQ.FETCH: promote, reclaim, then hand out up to `count`.
    pub fn fetch(&mut self, count: u64, lock: Option<u64>, consumer: &[u8]) -> Vec<Delivery> {
        if self.set.paused {
            return Vec::new();
        }
        self.promote_due(FETCH_MOVE_LIMIT);
        self.reclaim_expired(FETCH_MOVE_LIMIT);
        let mut n = count;
        if self.set.ordered {
            if self.store.zcard(Key::Bak) > 0 || self.store.hget(Key::St, b"hold").is_some() {
                return Vec::new();
            }
            n = 1;
        }
        let deadline = self.now + lock.unwrap_or(self.set.lock_ms);
        let mut out = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            let Some(bytes) = self.store.lpop(Key::Msg) else { break };
            // Only attempt, deliveries and consumer change: the body is not decoded.
            let (bytes, layout) = match record::redeliver(&bytes, consumer) {
                Ok(next) => next,
                Err(_) => {
                    self.quarantine(bytes);
                    continue;
                }
            };
            let receipt = layout.receipt();
            self.store.hset(Key::Inf, &receipt, &bytes);
            self.store.zadd(Key::Bak, deadline, &receipt);
            let d = Delivery { bytes, layout, receipt, deadline };
            self.log_fetch(&d, consumer);
            out.push(d);
        }
        out
    }

    /// A record that does not decode is never dropped: it goes to errors, its bytes kept as
    /// the body, so an operator can look at it.
    fn decode_or_quarantine(&mut self, bytes: Vec<u8>) -> Option<Record> {
        match Record::decode(&bytes) {
            Ok(r) => Some(r),
            Err(_) => {
                self.quarantine(bytes);
                None
            }
        }
    }

    fn quarantine(&mut self, bytes: Vec<u8>) {
        let r = Record { body: bytes, error: b"corrupt record".to_vec(), created: self.now, ..Record::default() };
        self.store.rpush(Key::Err, &r.encode());
    }

    /// Takes the current delivery of `receipt` out of flight.
    fn take_inflight(&mut self, receipt: &[u8]) -> Option<Record> {
        if !self.store.zrem(Key::Bak, receipt) {
            return None;
        }
        let bytes = self.store.hget(Key::Inf, receipt);
        self.store.hdel(Key::Inf, receipt);
        let mut record = self.decode_or_quarantine(bytes?)?;
        record.consumer.clear();
        Some(record)
    }

    /// RMQ.ACK: how many receipts were current.
    pub fn ack(&mut self, receipts: &[&[u8]]) -> u64 {
        let mut acked = 0;
        for r in receipts {
            // Without a log the record is never read: deleting it is enough (the hot path).
            if !self.set.log {
                if self.store.zrem(Key::Bak, r) {
                    self.store.hdel(Key::Inf, r);
                    acked += 1;
                }
            } else if let Some(record) = self.take_inflight(r) {
                self.log_plain(b"ack", &record);
                acked += 1;
            }
        }
        acked
    }

    /// RMQ.NACK: false for a stale receipt.
    pub fn nack(&mut self, receipt: &[u8], action: NackAction, reason: Option<&[u8]>) -> bool {
        let Some(mut record) = self.take_inflight(receipt) else { return false };
        match action {
            NackAction::Retry { delay } => {
                if record.attempt >= self.set.max_attempts {
                    self.move_to_failed(record, MAX_ATTEMPTS_REASON);
                    return true;
                }
                if let Some(reason) = reason {
                    record.error = reason.to_vec();
                }
                let wait = delay.unwrap_or_else(|| self.set.backoff(record.attempt));
                if wait > 0 {
                    if self.set.ordered {
                        self.store.hset(Key::St, b"hold", record.offset.to_string().as_bytes());
                    }
                    self.store.zadd(Key::Dly, self.now + wait, &record.encode());
                    self.store.hincrby(Key::St, b"retried", 1);
                    self.log_delay(&record, self.now + wait, reason);
                } else {
                    self.make_ready_again(&record);
                    self.store.hincrby(Key::St, b"retried", 1);
                    self.log_outcome(b"retry", &record, reason);
                }
            }
            NackAction::Fail => self.move_to_failed(record, reason.unwrap_or(b"failed")),
            NackAction::Error => {
                record.error = reason.unwrap_or(b"error").to_vec();
                self.store.rpush(Key::Err, &record.encode());
                self.store.hincrby(Key::St, b"errored", 1);
                self.log_outcome(b"error", &record, Some(&record.error));
            }
        }
        true
    }

    fn move_to_failed(&mut self, mut record: Record, reason: &[u8]) {
        record.error = reason.to_vec();
        self.store.rpush(Key::Fai, &record.encode());
        self.store.hincrby(Key::St, b"dead", 1);
        self.log_outcome(b"fail", &record, Some(&record.error));
    }

    /// A delivered message going back to ready: the back of the line, or the front in an
    /// ordered queue, so that order holds.
    fn make_ready_again(&mut self, record: &Record) {
        if self.set.ordered {
            self.store.lpush(Key::Msg, &record.encode());
        } else {
            self.store.rpush(Key::Msg, &record.encode());
        }
    }

    /// RMQ.TOUCH: the new deadline, or None for a stale receipt.
    pub fn touch(&mut self, receipt: &[u8], lock: Option<u64>) -> Option<u64> {
        self.store.zscore(Key::Bak, receipt)?;
        let deadline = self.now + lock.unwrap_or(self.set.lock_ms);
        self.store.zadd(Key::Bak, deadline, receipt);
        Some(deadline)
    }

    /// Moves up to `limit` due delayed messages to ready.
    pub fn promote_due(&mut self, limit: usize) -> Moved {
        let due = self.store.zrange_upto(Key::Dly, self.now, limit);
        let more = due.len() == limit;
        if due.is_empty() {
            return Moved::default();
        }
        let hold = self.store.hget(Key::St, b"hold");
        for (member, _) in &due {
            self.store.zrem(Key::Dly, member);
            let Some(record) = self.decode_or_quarantine(member.clone()) else { continue };
            if hold.as_deref() == Some(record.offset.to_string().as_bytes()) {
                self.store.hdel(Key::St, b"hold");
            }
            // A retry (attempt > 0) is a delivered message coming back; a DELAY push is new.
            if record.attempt > 0 {
                self.make_ready_again(&record);
            } else {
                self.store.rpush(Key::Msg, member);
            }
        }
        Moved { promoted: due.len() as u64, reclaimed: 0, more }
    }

    /// Takes up to `limit` in-flight messages whose lock ran out: back to ready, or to failed
    /// when their attempts are used up.
    pub fn reclaim_expired(&mut self, limit: usize) -> Moved {
        let expired = self.store.zrange_upto(Key::Bak, self.now, limit);
        let more = expired.len() == limit;
        for (receipt, _) in &expired {
            let Some(record) = self.take_inflight(receipt) else { continue };
            if record.attempt >= self.set.max_attempts {
                self.move_to_failed(record, LOCK_EXPIRED_REASON);
            } else {
                self.make_ready_again(&record);
                self.log_outcome(b"reclaim", &record, None);
            }
        }
        Moved { promoted: 0, reclaimed: expired.len() as u64, more }
    }

    /// RMQ.RECOVER: `[expired, failed, errors]` taken from each source.
    pub fn recover(&mut self, what: Recover) -> [u64; 3] {
        let mut counts = [0u64; 3];
        if what.expired {
            loop {
                let m = self.reclaim_expired(FETCH_MOVE_LIMIT);
                counts[0] += m.reclaimed;
                if !m.more {
                    break;
                }
            }
        }
        for (i, key, wanted) in [(1, Key::Fai, what.failed), (2, Key::Err, what.errors)] {
            if !wanted {
                continue;
            }
            while let Some(bytes) = self.store.lpop(key) {
                counts[i] += 1;
                let Ok(mut record) = Record::decode(&bytes) else {
                    // Not a record: leave it where an operator will see it.
                    self.store.rpush(Key::Err, &bytes);
                    if key == Key::Err {
                        break;
                    }
                    continue;
                };
                record.attempt = 0;
                record.error.clear();
                self.store.rpush(Key::Msg, &record.encode());
                self.log_plain(b"recover", &record);
            }
        }
        counts
    }

    /// RMQ.STATS, in the order of the reply.
    ///
    /// `pushed` is the offset (every push takes one), and a message leaves the queue only by
    /// ACK or by DEL/PURGE (counted in `removed`), so `acked` is derived: the hot path writes
    /// no counter for either.
    pub fn stats(&mut self) -> [(&'static str, u64); 13] {
        let counter = |s: &mut S, f: &[u8]| s.hget(Key::St, f).and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(0u64);
        let oldest = match self.store.lindex(Key::Msg, 0).map(|b| Record::decode(&b)) {
            Some(Ok(r)) => self.now.saturating_sub(r.created),
            _ => 0,
        };
        let held = [
            self.store.llen(Key::Msg),
            self.store.zcard(Key::Dly),
            self.store.zcard(Key::Bak),
            self.store.llen(Key::Fai),
            self.store.llen(Key::Err),
        ];
        let offset = counter(self.store, b"offset");
        let removed = counter(self.store, b"removed");
        let acked = offset.saturating_sub(held.iter().sum::<u64>() + removed);
        [
            ("ready", held[0]),
            ("delayed", held[1]),
            ("inflight", held[2]),
            ("failed", held[3]),
            ("errors", held[4]),
            ("pushed", offset),
            ("acked", acked),
            ("retried", counter(self.store, b"retried")),
            ("dead", counter(self.store, b"dead")),
            ("errored", counter(self.store, b"errored")),
            ("dups", counter(self.store, b"dups")),
            ("offset", offset),
            ("oldest_ready_ms", oldest),
        ]
    }

    /// The guard's work on this queue, bounded by `limit` moves of each kind.
    pub fn guard(&mut self, limit: usize) -> Moved {
        let p = self.promote_due(limit);
        let r = self.reclaim_expired(limit);
        let trimmed = self.trim_dedup(limit);
        Moved { promoted: p.promoted, reclaimed: r.reclaimed, more: p.more || r.more || trimmed == limit }
    }

    /// Removes up to `limit` dedup entries that are a whole window old; how many it removed.
    fn trim_dedup(&mut self, limit: usize) -> usize {
        let Some(horizon) = self.now.checked_sub(self.set.dedup_window_ms) else { return 0 };
        let old = self.store.zrange_upto(Key::Dup, horizon, limit);
        for (id, _) in &old {
            self.store.zrem(Key::Dup, id);
        }
        old.len()
    }

    /// Appends an event to the message log when the queue's `log` setting is on: `offset
    /// event id time`, then the event's own fields (docs/commands.md, LOG).
    fn log(&mut self, event: &[u8], offset: u64, id: &[u8], extra: &[(&[u8], &[u8])]) {
        if !self.set.log {
            return;
        }
        let offset = offset.to_string();
        let time = self.now.to_string();
        let mut fields: Vec<(&[u8], &[u8])> =
            vec![(b"offset", offset.as_bytes()), (b"event", event), (b"id", id), (b"time", time.as_bytes())];
        fields.extend_from_slice(extra);
        self.store.xadd(Key::Log, self.set.log_maxlen, &fields);
    }

    /// An event about a message that carries no fields of its own.
    fn log_plain(&mut self, event: &[u8], r: &Record) {
        if self.set.log {
            self.log(event, r.offset, &r.message_id(), &[]);
        }
    }

    /// An event after a delivery: `attempt`, and `error` when there is a reason.
    fn log_outcome(&mut self, event: &[u8], r: &Record, reason: Option<&[u8]>) {
        if !self.set.log {
            return;
        }
        let attempt = r.attempt.to_string();
        let mut extra: Vec<(&[u8], &[u8])> = vec![(b"attempt", attempt.as_bytes())];
        if let Some(reason) = reason {
            extra.push((b"error", reason));
        }
        self.log(event, r.offset, &r.message_id(), &extra);
    }

    fn log_push(&mut self, r: &Record, due: Option<u64>) {
        if !self.set.log {
            return;
        }
        let headers = encode_headers(&r.headers);
        let due = due.map(|d| d.to_string());
        let mut extra: Vec<(&[u8], &[u8])> = vec![(b"body", &r.body), (b"tag", &r.tag), (b"key", &r.key), (b"headers", &headers)];
        if let Some(due) = &due {
            extra.push((b"due", due.as_bytes()));
        }
        self.log(b"push", r.offset, &r.message_id(), &extra);
    }

    /// A `delay` event: a retry waiting out its backoff until `due`.
    fn log_delay(&mut self, r: &Record, due: u64, reason: Option<&[u8]>) {
        if !self.set.log {
            return;
        }
        let (attempt, due) = (r.attempt.to_string(), due.to_string());
        let mut extra: Vec<(&[u8], &[u8])> = vec![(b"attempt", attempt.as_bytes()), (b"due", due.as_bytes())];
        if let Some(reason) = reason {
            extra.push((b"error", reason));
        }
        self.log(b"delay", r.offset, &r.message_id(), &extra);
    }

    /// A `fetch` event for a delivery just handed out.
    fn log_fetch(&mut self, d: &Delivery, consumer: &[u8]) {
        if !self.set.log {
            return;
        }
        let l = &d.layout;
        let (attempt, deadline) = (l.attempt.to_string(), d.deadline.to_string());
        let extra: [(&[u8], &[u8]); 3] = [(b"consumer", consumer), (b"attempt", attempt.as_bytes()), (b"deadline", deadline.as_bytes())];
        self.log(b"fetch", l.offset, &d.message_id(), &extra);
    }
}

/// Headers as the record holds them: a MessagePack flat array of strings.
pub fn encode_headers(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, (headers.len() * 2) as u32).unwrap();
    for (n, v) in headers {
        rmp::encode::write_str_len(&mut out, n.len() as u32).unwrap();
        out.extend_from_slice(n);
        rmp::encode::write_str_len(&mut out, v.len() as u32).unwrap();
        out.extend_from_slice(v);
    }
    out
}
