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

use std::borrow::Cow;

use crate::args::{NackAction, Push, Recover, When};
use crate::error::{Error, Result};
use crate::lookup::Wanted;
use crate::record::{self, Layout, Record, NONCE_LEN};
use crate::settings::{Settings, NAMES};
use crate::store::{Key, Store, Walk};

/// How many due or expired messages one FETCH moves before handing out its own.
pub const FETCH_MOVE_LIMIT: usize = 1000;
/// How many expired dedup entries one PUSH with ID removes.
pub const DEDUP_TRIM_LIMIT: usize = 16;

/// How many undecodable records one FETCH quarantines at most beyond its COUNT, so that a
/// list of garbage cannot make one call unbounded.
pub const QUARANTINE_LIMIT: u64 = 1000;

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

    pub fn message_id(&self) -> Cow<'_, [u8]> {
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

/// The states a message can be in, in the order GET and DEL look at them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    Delayed,
    Inflight,
    Failed,
    Errors,
}

impl State {
    pub const ALL: [State; 5] = [State::Ready, State::Delayed, State::Inflight, State::Failed, State::Errors];
    /// The states REQUEUE takes messages from.
    pub const REQUEUABLE: [State; 3] = [State::Delayed, State::Failed, State::Errors];

    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Delayed => "delayed",
            State::Inflight => "inflight",
            State::Failed => "failed",
            State::Errors => "errors",
        }
    }

    /// The key that holds the state's records (in flight: the records, by receipt).
    pub fn key(self) -> Key {
        match self {
            State::Ready => Key::Msg,
            State::Delayed => Key::Dly,
            State::Inflight => Key::Inf,
            State::Failed => Key::Fai,
            State::Errors => Key::Err,
        }
    }
}

/// A RECOVER in progress: which part it is in, and what it took so far.
#[derive(Debug, Clone)]
pub struct Recovering {
    what: Recover,
    /// 0: expired, 1: failed, 2: errors, 3: done.
    part: usize,
    /// Messages still to take from the current list (its length when the part began).
    left: Option<u64>,
    /// `[expired, failed, errors]` so far.
    pub counts: [u64; 3],
}

impl Recovering {
    pub fn new(what: Recover) -> Self {
        Recovering { what, part: 0, left: None, counts: [0; 3] }
    }

    fn next_part(&mut self) {
        self.part += 1;
        self.left = None;
    }
}

/// A PURGE with the log on, in progress (without the log the state's keys are simply unlinked).
#[derive(Debug, Clone)]
pub struct Purging {
    states: Vec<State>,
    /// Index in `states` of the state being purged.
    at: usize,
    /// Messages still to take from it (its size when its turn came).
    left: Option<u64>,
    /// Messages deleted so far.
    pub count: u64,
}

impl Purging {
    /// One state, or all of them (None) in the order ready, delayed, inflight, failed, errors.
    pub fn new(which: Option<State>) -> Self {
        let states = which.map_or_else(|| State::ALL.to_vec(), |s| vec![s]);
        Purging { states, at: 0, left: None, count: 0 }
    }
}

/// A message found by id.
#[derive(Debug, Clone)]
pub struct Found {
    pub state: State,
    pub record: Record,
    /// Its due time (delayed) or lock deadline (in flight); 0 otherwise.
    pub at: u64,
    /// The record as stored.
    bytes: Vec<u8>,
    place: Place,
}

impl Found {
    pub(crate) fn new(state: State, record: Record, at: u64, bytes: Vec<u8>, place: Place) -> Self {
        Found { state, record, at, bytes, place }
    }

    /// The record as stored.
    pub fn stored(&self) -> &[u8] {
        &self.bytes
    }
}

/// Where a found message is held.
#[derive(Debug, Clone)]
pub(crate) enum Place {
    /// Its index in the state's list.
    Index(u64),
    /// A member of `dly:{q}` (the record itself).
    Member,
    /// In flight under this receipt.
    Receipt(Vec<u8>),
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
        let mut keys = vec![Key::St, if req.when == When::Now { Key::Msg } else { Key::Dly }];
        if req.when != When::Now {
            keys.push(Key::Msg); // an AT in the past is ready at once
        }
        if dedup.is_some() {
            keys.push(Key::Dup);
        }
        if self.set.maxlen > 0 {
            keys.extend([Key::Msg, Key::Dly, Key::Bak]);
        }
        if self.set.log {
            keys.push(Key::Log);
        }
        self.store.check(&keys)?;
        if let Some(id) = dedup {
            self.trim_dedup(DEDUP_TRIM_LIMIT);
            if let Some(seen) = self.store.zscore(Key::Dup, id) {
                // Pushed less than a window ago (or "later", if the clock went back).
                if self.now < seen.saturating_add(self.set.dedup_window_ms) {
                    self.bump(b"dups", 1);
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
        let offset = self.store.hincrby(Key::St, b"offset", 1)? as u64;
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
        Ok(PushOutcome::Stored(record.message_id().into_owned()))
    }

    /// The keys FETCH (and the guard) may touch: promotion, reclaim, delivery, quarantine.
    fn moving_keys(&self) -> Vec<Key> {
        let mut keys = vec![Key::Dly, Key::Msg, Key::Bak, Key::Inf, Key::Fai, Key::Err, Key::St];
        if self.set.log {
            keys.push(Key::Log);
        }
        keys
    }

    /// RMQ.FETCH: promote, reclaim, then hand out up to `count`. Undecodable records met on
    /// the way go to errors and do not count against `count`.
    pub fn fetch(&mut self, count: u64, lock: Option<u64>, consumer: &[u8]) -> Result<Vec<Delivery>> {
        if self.set.paused {
            return Ok(Vec::new());
        }
        let keys = self.moving_keys();
        self.store.check(&keys)?;
        self.promote_due(FETCH_MOVE_LIMIT);
        self.reclaim_expired(FETCH_MOVE_LIMIT);
        let mut n = count;
        if self.set.ordered {
            if self.store.zcard(Key::Bak) > 0 || self.store.hget(Key::St, b"hold").is_some() {
                return Ok(Vec::new());
            }
            n = 1;
        }
        let deadline = self.now + lock.unwrap_or(self.set.lock_ms);
        let mut out = Vec::with_capacity(n.min(64) as usize);
        let mut quarantined = 0;
        while (out.len() as u64) < n && quarantined <= QUARANTINE_LIMIT {
            // Only attempt, deliveries and consumer change: the body is not decoded, and the
            // record is read where it was popped (a corrupt one is copied out to be kept).
            let Some(popped) = self.store.lpop_with(Key::Msg, |b| record::redeliver(b, consumer).map_err(|_| b.to_vec())) else {
                break;
            };
            let (bytes, layout) = match popped {
                Ok(next) => next,
                Err(bytes) => {
                    self.quarantine(bytes);
                    quarantined += 1;
                    continue;
                }
            };
            let receipt = self.new_receipt(layout.offset, layout.deliveries);
            self.store.hset(Key::Inf, &receipt, &bytes);
            self.store.zadd(Key::Bak, deadline, &receipt);
            let d = Delivery { bytes, layout, receipt, deadline };
            self.log_fetch(&d, consumer);
            out.push(d);
        }
        Ok(out)
    }

    fn new_receipt(&mut self, offset: u64, deliveries: u64) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.store.random(&mut nonce);
        record::receipt(offset, deliveries, &nonce)
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

    /// Takes the current delivery of `receipt` out of flight: its record as stored.
    fn take_inflight_bytes(&mut self, receipt: &[u8]) -> Option<Vec<u8>> {
        if !self.store.zrem(Key::Bak, receipt) {
            return None;
        }
        let bytes = self.store.hget(Key::Inf, receipt);
        self.store.hdel(Key::Inf, receipt);
        bytes
    }

    /// Takes the current delivery of `receipt` out of flight.
    fn take_inflight(&mut self, receipt: &[u8]) -> Option<Record> {
        let bytes = self.take_inflight_bytes(receipt)?;
        let mut record = self.decode_or_quarantine(bytes)?;
        record.consumer.clear();
        Some(record)
    }

    /// RMQ.ACK: how many receipts were current.
    pub fn ack(&mut self, receipts: &[&[u8]]) -> Result<u64> {
        let keys: &[Key] = if self.set.log { &[Key::Bak, Key::Inf, Key::Err, Key::Log] } else { &[Key::Bak, Key::Inf] };
        self.store.check(keys)?;
        let mut acked = 0;
        for r in receipts {
            // Without a log the record is never read: deleting it is enough (the hot path).
            if !self.set.log {
                if self.store.zrem(Key::Bak, r) {
                    self.store.hdel(Key::Inf, r);
                    acked += 1;
                }
            } else if let Some(bytes) = self.take_inflight_bytes(r) {
                // The log needs the message's offset and id only: the record is read in place,
                // not decoded (its body is never copied). As with a decoded record, a corrupt
                // one is no ack and is kept in the error queue.
                match Layout::of(&bytes) {
                    Ok(l) => {
                        self.log(b"ack", l.offset, &l.message_id(&bytes), &[]);
                        acked += 1;
                    }
                    Err(_) => self.quarantine(bytes),
                }
            }
        }
        if acked > 0 {
            self.wake_ordered();
        }
        Ok(acked)
    }

    /// Adds to a counter. A counter someone overwrote with something not a number starts
    /// again from `by`: counters are statistics, and the move they count is already made.
    fn bump(&mut self, name: &[u8], by: i64) {
        if self.store.hincrby(Key::St, name, by).is_err() {
            self.store.hset(Key::St, name, by.to_string().as_bytes());
        }
    }

    /// In an ordered queue, the message in flight going away lets the next one out.
    fn wake_ordered(&mut self) {
        if self.set.ordered {
            self.store.wake();
        }
    }

    /// RMQ.NACK: false for a stale receipt.
    pub fn nack(&mut self, receipt: &[u8], action: NackAction, reason: Option<&[u8]>) -> Result<bool> {
        let keys = self.moving_keys();
        self.store.check(&keys)?;
        let Some(record) = self.take_inflight(receipt) else { return Ok(false) };
        self.nack_record(record, action, reason);
        // A retry to the front wakes waiters through ready; FAIL, ERROR and a held retry leave
        // nothing in flight, which lets an ordered queue's next message out.
        self.wake_ordered();
        Ok(true)
    }

    fn nack_record(&mut self, mut record: Record, action: NackAction, reason: Option<&[u8]>) {
        match action {
            NackAction::Retry { delay } => {
                if record.attempt >= self.set.max_attempts {
                    self.move_to_failed(record, MAX_ATTEMPTS_REASON);
                    return;
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
                    self.bump(b"retried", 1);
                    self.log_delay(&record, self.now + wait, reason);
                } else {
                    self.make_ready_again(&record);
                    self.bump(b"retried", 1);
                    self.log_outcome(b"retry", &record, reason);
                }
            }
            NackAction::Fail => self.move_to_failed(record, reason.unwrap_or(b"failed")),
            NackAction::Error => {
                record.error = reason.unwrap_or(b"error").to_vec();
                self.store.rpush(Key::Err, &record.encode());
                self.bump(b"errored", 1);
                self.log_outcome(b"error", &record, Some(&record.error));
            }
        }
    }

    fn move_to_failed(&mut self, mut record: Record, reason: &[u8]) {
        record.error = reason.to_vec();
        self.store.rpush(Key::Fai, &record.encode());
        self.bump(b"dead", 1);
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
    pub fn touch(&mut self, receipt: &[u8], lock: Option<u64>) -> Result<Option<u64>> {
        self.store.check(&[Key::Bak])?;
        if self.store.zscore(Key::Bak, receipt).is_none() {
            return Ok(None);
        }
        let deadline = self.now + lock.unwrap_or(self.set.lock_ms);
        self.store.zadd(Key::Bak, deadline, receipt);
        Ok(Some(deadline))
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
    pub fn recover(&mut self, what: Recover) -> Result<[u64; 3]> {
        let mut r = Recovering::new(what);
        while !self.recover_some(&mut r, usize::MAX)? {}
        Ok(r.counts)
    }

    /// Moves up to about `limit` messages of a RECOVER (each one whole), in its order:
    /// expired, failed, errors. True when the RECOVER is complete. Each list is taken up to
    /// its length when its part began, so a RECOVER done in several steps ends even while
    /// consumers fail more messages; done in one step, that is the whole list.
    pub fn recover_some(&mut self, r: &mut Recovering, limit: usize) -> Result<bool> {
        let keys = self.moving_keys();
        self.store.check(&keys)?;
        let mut moved = 0;
        while moved < limit && r.part < 3 {
            if r.part == 0 {
                if r.what.expired {
                    let m = self.reclaim_expired(FETCH_MOVE_LIMIT.min(limit - moved));
                    r.counts[0] += m.reclaimed;
                    moved += m.reclaimed as usize;
                    if m.reclaimed > 0 {
                        self.wake_ordered();
                    }
                    if m.more {
                        continue;
                    }
                }
                r.next_part();
                continue;
            }
            let (key, wanted) = if r.part == 1 { (Key::Fai, r.what.failed) } else { (Key::Err, r.what.errors) };
            let left = match (wanted, r.left) {
                (false, _) => 0,
                (true, Some(left)) => left,
                (true, None) => self.store.llen(key),
            };
            let Some(bytes) = (left > 0).then(|| self.store.lpop(key)).flatten() else {
                r.next_part();
                continue;
            };
            r.left = Some(left - 1);
            r.counts[r.part] += 1;
            moved += 1;
            let Ok(mut record) = Record::decode(&bytes) else {
                // Not a record: leave it where an operator will see it; in errors itself
                // that ends the pass, so it is not met again.
                self.store.rpush(Key::Err, &bytes);
                if key == Key::Err {
                    r.next_part();
                }
                continue;
            };
            record.attempt = 0;
            record.error.clear();
            self.store.rpush(Key::Msg, &record.encode());
            self.log_plain(b"recover", &record);
        }
        Ok(r.part >= 3)
    }

    /// Deletes up to about `limit` messages of a PURGE with the log on, each logged `purge`;
    /// true when the PURGE is complete. Each state is taken up to its size when its turn came,
    /// so a PURGE done in several steps ends even while producers push; done in one step,
    /// that is the whole state.
    pub fn purge_some(&mut self, p: &mut Purging, limit: usize) -> Result<bool> {
        self.store.check(&[Key::Msg, Key::Dly, Key::Bak, Key::Inf, Key::Fai, Key::Err, Key::St, Key::Log])?;
        let hold = self.store.hget(Key::St, b"hold");
        let mut done = 0;
        loop {
            let Some(&state) = p.states.get(p.at) else { return Ok(true) };
            // The state's size is taken when its turn comes (a call with limit 0 takes the
            // first one's: what the command found when it began).
            let left = *p.left.get_or_insert_with(|| match state {
                State::Delayed => self.store.zcard(Key::Dly),
                State::Inflight => self.store.zcard(Key::Bak),
                _ => self.store.llen(state.key()),
            });
            if done >= limit {
                return Ok(false);
            }
            let take = left.min((limit - done) as u64) as usize;
            if take == 0 {
                p.at += 1;
                p.left = None;
                continue;
            }
            // What this page takes: the stored records (a receipt without one is dropped and
            // not counted, as it holds no message).
            let mut page: Vec<Vec<u8>> = Vec::with_capacity(take);
            let mut popped = 0;
            match state {
                State::Delayed | State::Inflight => {
                    let zset = if state == State::Delayed { Key::Dly } else { Key::Bak };
                    for (member, _) in self.store.zrange_upto(zset, u64::MAX, take) {
                        popped += 1;
                        self.store.zrem(zset, &member);
                        if state == State::Delayed {
                            page.push(member);
                        } else if let Some(bytes) = self.store.hget(Key::Inf, &member) {
                            self.store.hdel(Key::Inf, &member);
                            page.push(bytes);
                        }
                    }
                }
                _ => {
                    while popped < take {
                        let Some(bytes) = self.store.lpop(state.key()) else { break };
                        popped += 1;
                        page.push(bytes);
                    }
                }
            }
            p.left = Some(if popped == 0 { 0 } else { left - popped as u64 });
            done += popped.max(1);
            for bytes in &page {
                let Ok(record) = Record::decode(bytes) else { continue };
                self.log_plain(b"purge", &record);
                if state == State::Delayed && hold.as_deref() == Some(record.offset.to_string().as_bytes()) {
                    self.store.hdel(Key::St, b"hold");
                }
            }
            if !page.is_empty() {
                self.bump(b"removed", page.len() as i64);
                p.count += page.len() as u64;
                if matches!(state, State::Delayed | State::Inflight) {
                    self.wake_ordered();
                }
            }
        }
    }

    /// Finds the messages whose id is in `ids`, in the given states, in each state's order
    /// (ready: the line; delayed: by due; in flight: by deadline; failed, errors: oldest
    /// first); the first one only with `first_only`. Undecodable records are passed over.
    /// O(n) of the states' messages, natively: no record is decoded unless its id matches.
    pub fn find(&mut self, ids: &[&[u8]], states: &[State], first_only: bool) -> Vec<Found> {
        let wanted = Wanted::new(ids);
        let mut found = Vec::new();
        for &state in states {
            let mut hits: Vec<(Place, Vec<u8>, u64)> = Vec::new();
            let wanted = |bytes: &[u8]| wanted.matches(bytes);
            match state {
                State::Ready | State::Failed | State::Errors => {
                    self.store.list_walk(state.key(), &mut |index, bytes| {
                        if wanted(bytes) {
                            hits.push((Place::Index(index), bytes.to_vec(), 0));
                            if first_only {
                                return Walk::Stop;
                            }
                        }
                        Walk::Next
                    });
                }
                State::Delayed => {
                    self.store.zset_walk(Key::Dly, &mut |member, due| {
                        if wanted(member) {
                            hits.push((Place::Member, member.to_vec(), due));
                            if first_only {
                                return Walk::Stop;
                            }
                        }
                        Walk::Next
                    });
                }
                State::Inflight => {
                    self.store.inflight_walk(&mut |receipt, deadline, bytes| {
                        if wanted(bytes) {
                            hits.push((Place::Receipt(receipt.to_vec()), bytes.to_vec(), deadline));
                            if first_only {
                                return Walk::Stop;
                            }
                        }
                        Walk::Next
                    });
                }
            }
            for (place, bytes, at) in hits {
                if let Ok(record) = Record::decode(&bytes) {
                    found.push(Found { state, record, at, bytes, place });
                    if first_only {
                        return found;
                    }
                }
            }
        }
        found
    }

    /// RMQ.GET: the first message with that id, in the states' order.
    pub fn get(&mut self, id: &[u8]) -> Result<Option<Found>> {
        self.store.check(&[Key::Msg, Key::Dly, Key::Bak, Key::Inf, Key::Fai, Key::Err])?;
        Ok(self.find(&[id], &State::ALL, true).pop())
    }

    /// RMQ.DEL: removes every message with one of these ids, from every state.
    pub fn delete(&mut self, ids: &[&[u8]]) -> Result<u64> {
        let keys = self.moving_keys();
        self.store.check(&keys)?;
        let found = self.find(ids, &State::ALL, false);
        self.delete_found(found)
    }

    /// DEL of messages found in this command (by [`Queue::find`] or a [`crate::lookup::Lookup`]
    /// finished now), in the states' order.
    pub fn delete_found(&mut self, found: Vec<Found>) -> Result<u64> {
        let hold = self.store.hget(Key::St, b"hold");
        let mut freed_the_line = false;
        for f in found.iter().rev() {
            match &f.place {
                Place::Index(i) => self.store.lremove(f.state.key(), *i, &f.bytes),
                Place::Member => {
                    self.store.zrem(Key::Dly, &f.bytes);
                    if hold.as_deref() == Some(f.record.offset.to_string().as_bytes()) {
                        self.store.hdel(Key::St, b"hold");
                        freed_the_line = true;
                    }
                }
                Place::Receipt(r) => {
                    self.store.zrem(Key::Bak, r);
                    self.store.hdel(Key::Inf, r);
                    freed_the_line = true;
                }
            }
        }
        for f in &found {
            self.log_plain(b"delete", &f.record);
        }
        if !found.is_empty() {
            self.bump(b"removed", found.len() as i64);
        }
        if freed_the_line {
            self.wake_ordered();
        }
        Ok(found.len() as u64)
    }

    /// RMQ.REQUEUE: delayed, failed and errored messages with these ids back to ready, each
    /// state in its order. Failed and errored ones start again at attempt 0 with no error; a
    /// delayed retry of an ordered queue goes to the front, as its promotion would.
    pub fn requeue(&mut self, ids: &[&[u8]]) -> Result<u64> {
        let keys = self.moving_keys();
        self.store.check(&keys)?;
        let found = self.find(ids, &State::REQUEUABLE, false);
        self.requeue_found(found)
    }

    /// REQUEUE of messages found in this command, in the states' order.
    pub fn requeue_found(&mut self, found: Vec<Found>) -> Result<u64> {
        let hold = self.store.hget(Key::St, b"hold");
        // Removed from the back of each list first, so the indexes found stay right.
        for f in found.iter().rev() {
            match &f.place {
                Place::Index(i) => self.store.lremove(f.state.key(), *i, &f.bytes),
                _ => {
                    self.store.zrem(Key::Dly, &f.bytes);
                    if hold.as_deref() == Some(f.record.offset.to_string().as_bytes()) {
                        self.store.hdel(Key::St, b"hold");
                    }
                }
            }
        }
        for f in found.iter() {
            let mut record = f.record.clone();
            if f.state == State::Delayed {
                let front = record.attempt > 0 && self.set.ordered;
                if front {
                    self.store.lpush(Key::Msg, &record.encode());
                } else {
                    self.store.rpush(Key::Msg, &record.encode());
                }
            } else {
                record.attempt = 0;
                record.error.clear();
                self.store.rpush(Key::Msg, &record.encode());
            }
            self.log_plain(b"requeue", &record);
        }
        Ok(found.len() as u64)
    }

    /// RMQ.STATS, in the order of the reply.
    ///
    /// `pushed` is the offset (every push takes one), and a message leaves the queue only by
    /// ACK or by DEL/PURGE (counted in `removed`), so `acked` is derived: the hot path writes
    /// no counter for either.
    pub fn stats(&mut self) -> Result<[(&'static str, u64); 15]> {
        self.store.check(&[Key::Msg, Key::Dly, Key::Bak, Key::Fai, Key::Err, Key::St])?;
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
        Ok([
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
            ("removed", removed),
            ("paused", self.set.paused as u64),
        ])
    }

    /// The guard's work on this queue, bounded by `limit` moves of each kind. A queue with a
    /// key of the wrong type is left alone (its commands answer WRONGTYPE).
    pub fn guard(&mut self, limit: usize) -> Result<Moved> {
        let mut keys = self.moving_keys();
        keys.push(Key::Dup);
        self.store.check(&keys)?;
        let p = self.promote_due(limit);
        let r = self.reclaim_expired(limit);
        let trimmed = self.trim_dedup(limit);
        if r.reclaimed > 0 {
            self.wake_ordered();
        }
        Ok(Moved { promoted: p.promoted, reclaimed: r.reclaimed, more: p.more || r.more || trimmed == limit })
    }

    /// When the guard next has work on this queue: the first lock deadline, the first due
    /// time, or the first dedup entry's end of window; None when there is nothing to wait for.
    pub fn next_due(&mut self) -> Option<u64> {
        let first = |s: &mut S, k: Key| s.zrange_upto(k, u64::MAX, 1).first().map(|(_, score)| *score);
        let dup = first(self.store, Key::Dup).map(|at| at.saturating_add(self.set.dedup_window_ms));
        [first(self.store, Key::Bak), first(self.store, Key::Dly), dup].into_iter().flatten().min()
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
    /// event id time`, then the event's own fields (docs/commands.md, LOG). Built on the stack:
    /// an entry is written for every step of every message, and allocations were a good part
    /// of what the log cost.
    fn log(&mut self, event: &'static [u8], offset: u64, id: &[u8], extra: &[(&'static [u8], &[u8])]) {
        if !self.set.log {
            return;
        }
        let (mut offset_text, mut time_text) = (itoa::Buffer::new(), itoa::Buffer::new());
        let mut fields: [(&'static [u8], &[u8]); LOG_FIELDS_MAX] = [(b"", b""); LOG_FIELDS_MAX];
        fields[..4].copy_from_slice(&[
            (b"offset", offset_text.format(offset).as_bytes()),
            (b"event", event),
            (b"id", id),
            (b"time", time_text.format(self.now).as_bytes()),
        ]);
        let n = 4 + extra.len();
        fields[4..n].copy_from_slice(extra);
        self.store.xadd(Key::Log, self.set.log_maxlen, &fields[..n]);
    }

    /// An event about a message that carries no fields of its own.
    fn log_plain(&mut self, event: &'static [u8], r: &Record) {
        if self.set.log {
            self.log(event, r.offset, &r.message_id(), &[]);
        }
    }

    /// An event after a delivery: `attempt`, and `error` when there is a reason.
    fn log_outcome(&mut self, event: &'static [u8], r: &Record, reason: Option<&[u8]>) {
        if !self.set.log {
            return;
        }
        let mut attempt = itoa::Buffer::new();
        let attempt = (&b"attempt"[..], attempt.format(r.attempt).as_bytes());
        match reason {
            Some(reason) => self.log(event, r.offset, &r.message_id(), &[attempt, (b"error", reason)]),
            None => self.log(event, r.offset, &r.message_id(), &[attempt]),
        }
    }

    fn log_push(&mut self, r: &Record, due: Option<u64>) {
        if !self.set.log {
            return;
        }
        let headers: Cow<[u8]> = if r.headers.is_empty() { Cow::Borrowed(EMPTY_HEADERS) } else { Cow::Owned(encode_headers(&r.headers)) };
        let mut due_text = itoa::Buffer::new();
        let mut fields: [(&'static [u8], &[u8]); 5] =
            [(b"body", &r.body), (b"tag", &r.tag), (b"key", &r.key), (b"headers", &headers), (b"due", b"")];
        let n = match due {
            Some(due) => {
                fields[4].1 = due_text.format(due).as_bytes();
                5
            }
            None => 4,
        };
        self.log(b"push", r.offset, &r.message_id(), &fields[..n]);
    }

    /// A `delay` event: a retry waiting out its backoff until `due`.
    fn log_delay(&mut self, r: &Record, due: u64, reason: Option<&[u8]>) {
        if !self.set.log {
            return;
        }
        let (mut attempt, mut due_text) = (itoa::Buffer::new(), itoa::Buffer::new());
        let fields: [(&'static [u8], &[u8]); 3] = [
            (b"attempt", attempt.format(r.attempt).as_bytes()),
            (b"due", due_text.format(due).as_bytes()),
            (b"error", reason.unwrap_or(b"")),
        ];
        let n = if reason.is_some() { 3 } else { 2 };
        self.log(b"delay", r.offset, &r.message_id(), &fields[..n]);
    }

    /// A `fetch` event for a delivery just handed out.
    fn log_fetch(&mut self, d: &Delivery, consumer: &[u8]) {
        if !self.set.log {
            return;
        }
        let l = &d.layout;
        let (mut attempt, mut deadline) = (itoa::Buffer::new(), itoa::Buffer::new());
        let extra: [(&'static [u8], &[u8]); 3] = [
            (b"consumer", consumer),
            (b"attempt", attempt.format(l.attempt).as_bytes()),
            (b"deadline", deadline.format(d.deadline).as_bytes()),
        ];
        self.log(b"fetch", l.offset, &d.message_id(), &extra);
    }
}

/// The most fields a log entry has: the four every entry has, and a push's five.
const LOG_FIELDS_MAX: usize = 9;

/// No headers, as the record and the log hold them: an empty MessagePack array.
pub const EMPTY_HEADERS: &[u8] = b"\x90";

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
