//! [`Store`] on Redis's low-level key API.
//!
//! Every change is applied to the key and replicated as the plain Redis command that does the
//! same (`RPUSH`, `ZADD` with an absolute score, `HSET`, …), so replicas and the AOF never see
//! `RMQ.*` and never re-run queue logic. Consecutive changes of one kind to one key are sent
//! as one command (`LPOP key 3`, `ZADD key s1 m1 s2 m2`): replicating costs a command lookup
//! per command, and different keys' changes commute, so only each key's own order must hold.
//! Each replicated command is also announced as the keyspace notification Redis's own command
//! would send (`rpush`, `zadd`, `hdel`, … and `del` for a key the change emptied), for the
//! classes `notify-keyspace-events` turns on.
//!
//! The module signals modified keys itself (REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED):
//! exactly the keys a command changed count as modified for WATCH and client-side caching, so
//! a write command may open its keys for writing up front, and a read-only one opens them
//! for reading only.
//! Whatever makes a message ready signals the ready key, which wakes blocked FETCHes.

use std::cell::Cell;
use std::ffi::CStr;
use std::os::raw::{c_int, c_long, c_longlong};

use redis_module::raw;
use rmq_core::store::{InflightVisit, Key, Kind, Store, Walk};
use rmq_core::{Error, Result};

use crate::ffi::{self, Ctx, OpenKey, RStr, NULL_STR};

const KEYS: usize = Key::ALL.len();

thread_local! {
    /// True while a store announces its own changes: the module's keyspace-event handler
    /// then knows the change was made (and scheduled) by the module itself.
    static ANNOUNCING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the keyspace notification being handled comes from the module's own commands.
pub fn announcing() -> bool {
    ANNOUNCING.with(|a| a.get())
}

pub struct RedisStore<'q> {
    ctx: Ctx,
    queue: &'q [u8],
    names: [Option<RStr>; KEYS],
    keys: [Option<OpenKey>; KEYS],
    ready_signal: bool,
    effects: Vec<Effect>,
    /// Index in `effects` of each key's latest effect.
    last_effect: [Option<usize>; KEYS],
    /// The earliest time this command gave the guard work at: a lock deadline or due time it
    /// wrote, or the end of the dedup window of an id it recorded.
    earliest: Option<u64>,
    dedup_window: u64,
    /// Every key of the queue is known to hold its own type (see `settings_cache`).
    types_checked: bool,
    /// Keys open for writing from the start (a command that writes).
    writable: bool,
    /// Whether effects go to replicas and the AOF (asked once per command).
    propagate: Option<bool>,
}

/// A plain command to replicate, built up while a command runs.
struct Effect {
    key: Key,
    command: &'static CStr,
    args: Vec<RStr>,
    /// LPOP's count.
    count: u64,
}

/// Log entries with up to this many fields pass them to Redis from the stack.
const LOG_FIELDS_ON_STACK: usize = 12;

/// An effect carries at most this many arguments before a new one starts.
const MAX_EFFECT_ARGS: usize = 1024;

fn slot(k: Key) -> usize {
    k as usize
}

/// The keyspace event Redis's own command sends for a change, and its class; whether the
/// change removes something (and so may empty the key); whether consecutive changes merge.
fn event_of(command: &CStr) -> (&'static CStr, c_int, bool, bool) {
    match command.to_bytes() {
        b"RPUSH" => (c"rpush", raw::REDISMODULE_NOTIFY_LIST, false, true),
        b"LPUSH" => (c"lpush", raw::REDISMODULE_NOTIFY_LIST, false, true),
        b"LPOP" => (c"lpop", raw::REDISMODULE_NOTIFY_LIST, true, true),
        b"LREM" => (c"lrem", raw::REDISMODULE_NOTIFY_LIST, true, false),
        b"ZADD" => (c"zadd", raw::REDISMODULE_NOTIFY_ZSET, false, true),
        b"ZREM" => (c"zrem", raw::REDISMODULE_NOTIFY_ZSET, true, true),
        b"HSET" => (c"hset", raw::REDISMODULE_NOTIFY_HASH, false, true),
        b"XADD" => (c"xadd", raw::REDISMODULE_NOTIFY_STREAM, false, false),
        b"XTRIM" => (c"xtrim", raw::REDISMODULE_NOTIFY_STREAM, false, false),
        _ => (c"hdel", raw::REDISMODULE_NOTIFY_HASH, true, true),
    }
}

fn redis_type(kind: Kind) -> c_int {
    (match kind {
        Kind::List => raw::REDISMODULE_KEYTYPE_LIST,
        Kind::Zset => raw::REDISMODULE_KEYTYPE_ZSET,
        Kind::Hash => raw::REDISMODULE_KEYTYPE_HASH,
        Kind::Stream => raw::REDISMODULE_KEYTYPE_STREAM,
    }) as c_int
}

impl<'q> RedisStore<'q> {
    /// The keys of `queue`, for a command that only reads.
    pub fn reading(ctx: Ctx, queue: &'q [u8]) -> Self {
        let mut store = RedisStore::new(ctx, queue);
        store.writable = false;
        store
    }

    /// The keys of `queue`, for a command that writes.
    pub fn new(ctx: Ctx, queue: &'q [u8]) -> Self {
        RedisStore {
            ctx,
            queue,
            names: Default::default(),
            keys: Default::default(),
            ready_signal: false,
            effects: Vec::new(),
            last_effect: Default::default(),
            earliest: None,
            dedup_window: 0,
            types_checked: false,
            writable: true,
            propagate: None,
        }
    }

    /// The queue's keys are known to hold their own types: checks can be skipped.
    pub fn types_are_checked(&mut self) {
        self.types_checked = true;
    }

    /// The queue's dedup window, for the guard's schedule of dedup entries this store adds.
    pub fn set_dedup_window(&mut self, ms: u64) {
        self.dedup_window = ms;
    }

    /// When the guard has work: no later than `at`.
    fn guard_by(&mut self, at: u64) {
        self.earliest = Some(self.earliest.map_or(at, |e| e.min(at)));
    }

    /// Records a change to replicate, merged into the key's latest effect when it is the same
    /// command and that command takes several. The arguments are made only when the effect will
    /// be propagated: otherwise it serves the keyspace notifications and the modified-key
    /// signals alone, which need the key and the command.
    fn effect<A: IntoIterator<Item = RStr>>(&mut self, k: Key, command: &'static CStr, args: impl FnOnce() -> A) {
        let args: Vec<RStr> = if self.propagating() { args().into_iter().collect() } else { Vec::new() };
        let merges = event_of(command).3;
        if let Some(i) = self.last_effect[slot(k)] {
            let e = &mut self.effects[i];
            if merges && e.command == command && e.args.len() < MAX_EFFECT_ARGS {
                e.args.extend(args);
                e.count += 1;
                return;
            }
        }
        self.effects.push(Effect { key: k, command, args, count: 1 });
        self.last_effect[slot(k)] = Some(self.effects.len() - 1);
    }

    /// Sends the recorded changes to replicas and the AOF, and announces them.
    fn replicate(&mut self) {
        let effects = std::mem::take(&mut self.effects);
        self.last_effect = Default::default();
        if effects.is_empty() {
            return;
        }
        // Which keys the changes emptied (Redis deleted them), and whether a key of the queue is
        // known to be left: checked before the keys close.
        let mut emptied = [false; KEYS];
        for e in &effects {
            if event_of(e.command).2 {
                emptied[slot(e.key)] =
                    self.keys[slot(e.key)].as_ref().is_some_and(|k| k.key_type() == raw::REDISMODULE_KEYTYPE_EMPTY as c_int);
            }
        }
        let some_key_left = self.keys.iter().flatten().any(|k| k.key_type() != raw::REDISMODULE_KEYTYPE_EMPTY as c_int);
        for k in self.keys.iter_mut() {
            k.take();
        }
        let mut modified = [false; KEYS];
        for e in &effects {
            modified[slot(e.key)] = true;
        }
        for k in Key::ALL {
            if modified[slot(k)] {
                let name = self.name(k);
                // SAFETY: a live context and key name.
                unsafe { raw::RedisModule_SignalModifiedKey.unwrap()(self.ctx, name) };
            }
        }
        let propagate = self.propagating();
        for e in effects.iter().filter(|_| propagate) {
            let mut argv = vec![self.name(e.key)];
            let count;
            if e.command == c"LPOP" {
                count = RStr::new(self.ctx, itoa::Buffer::new().format(e.count).as_bytes());
                argv.push(count.ptr);
            }
            argv.extend(e.args.iter().map(|a| a.ptr));
            // SAFETY: "v" takes an array of `argv.len()` live strings (names and args owned here).
            unsafe {
                raw::RedisModule_Replicate.unwrap()(self.ctx, e.command.as_ptr(), c"v".as_ptr(), argv.as_mut_ptr(), argv.len());
            }
        }
        // Keyspace notifications, for the classes `notify-keyspace-events` turns on (a
        // notification costs a module context per subscriber: none is sent when nobody could
        // see it).
        let listening = ffi::notify_keyspace_events();
        ANNOUNCING.with(|a| a.set(true));
        for e in &effects {
            let (event, class, _, _) = event_of(e.command);
            if listening & class != 0 {
                self.name(e.key);
                ffi::notify(self.ctx, class, event, self.names[slot(e.key)].as_ref().unwrap());
            }
        }
        for k in Key::ALL {
            if emptied[slot(k)] && listening & raw::REDISMODULE_NOTIFY_GENERIC != 0 {
                self.name(k);
                ffi::notify(self.ctx, raw::REDISMODULE_NOTIFY_GENERIC, c"del", self.names[slot(k)].as_ref().unwrap());
            }
        }
        ANNOUNCING.with(|a| a.set(false));
        // The module's own view of its queues, told directly.
        let db = ffi::selected_db(self.ctx);
        if emptied.iter().any(|e| *e) && !some_key_left {
            crate::registry::deleted(self.ctx, db, self.queue);
        } else {
            crate::registry::note(db, self.queue);
        }
    }

    /// Whether this command's effects must be handed to replicas and the AOF.
    fn propagating(&mut self) -> bool {
        let ctx = self.ctx;
        *self.propagate.get_or_insert_with(|| crate::propagation::needed(ctx))
    }

    pub fn name(&mut self, k: Key) -> *mut raw::RedisModuleString {
        let ctx = self.ctx;
        let queue = self.queue;
        self.names[slot(k)].get_or_insert_with(|| crate::key_names::name(ctx, queue, k)).ptr
    }

    fn open(&mut self, k: Key, write: bool) -> *mut raw::RedisModuleKey {
        let open = self.keys[slot(k)].as_ref();
        if open.is_none_or(|o| write && !o.write) {
            self.keys[slot(k)] = None; // a read handle closes before the write handle opens
            self.name(k);
            let name = self.names[slot(k)].as_ref().unwrap();
            self.keys[slot(k)] = Some(OpenKey::open(self.ctx, name, write));
        }
        self.keys[slot(k)].as_ref().unwrap().ptr
    }

    /// The key, open for reading (and for writing, in a command that writes).
    fn read(&mut self, k: Key) -> *mut raw::RedisModuleKey {
        self.open(k, self.writable)
    }

    /// The key, open for writing (reads go through the same handle).
    fn write(&mut self, k: Key) -> *mut raw::RedisModuleKey {
        self.open(k, true)
    }

    /// The key when it exists (open for reading); reads never create.
    fn existing(&mut self, k: Key) -> Option<*mut raw::RedisModuleKey> {
        let p = self.read(k);
        (self.keys[slot(k)].as_ref().unwrap().key_type() != raw::REDISMODULE_KEYTYPE_EMPTY as c_int).then_some(p)
    }

    /// The key open for writing, when it exists.
    fn existing_for_write(&mut self, k: Key) -> Option<*mut raw::RedisModuleKey> {
        self.existing(k)?;
        Some(self.write(k))
    }

    fn len(&mut self, k: Key) -> u64 {
        match self.existing(k) {
            // SAFETY: an open handle of an existing key.
            Some(p) => unsafe { raw::RedisModule_ValueLength.unwrap()(p) as u64 },
            None => 0,
        }
    }

    fn list_push(&mut self, k: Key, v: &[u8], head: bool) {
        let ctx = self.ctx;
        let p = self.write(k);
        let s = RStr::new(ctx, v);
        let where_ = if head { raw::REDISMODULE_LIST_HEAD } else { raw::REDISMODULE_LIST_TAIL };
        // SAFETY: a handle open for writing on a key checked to be a list (or empty).
        unsafe { raw::RedisModule_ListPush.unwrap()(p, where_ as c_int, s.ptr) };
        if crate::sliced::watching() {
            // SAFETY: the same handle.
            let len = unsafe { raw::RedisModule_ValueLength.unwrap()(p) } as u64;
            crate::sliced::list_pushed(ffi::selected_db(ctx), self.queue, k, head, len, v);
        }
        self.effect(k, if head { c"LPUSH" } else { c"RPUSH" }, || [s]);
        if k == Key::Msg {
            self.ready_signal = true;
        }
    }

    /// Visits the elements of a list from index `from`, with their index, until `visit` stops.
    pub fn list_walk_from(&mut self, k: Key, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> Walk) {
        let Some(p) = self.existing(k) else { return };
        // SAFETY: a list handle; Redis keeps an iterator in it, so reading the indexes in
        // order costs O(1) each (the first one seeks).
        let n = unsafe { raw::RedisModule_ValueLength.unwrap()(p) } as u64;
        for i in from..n {
            // SAFETY: as above; index in range, the string is ours to free.
            let e = unsafe { raw::RedisModule_ListGet.unwrap()(p, i as c_long) };
            let Some(e) = RStr::adopt(self.ctx, e) else { break };
            if visit(i, e.bytes()) == Walk::Stop {
                break;
            }
        }
    }

    /// Walks a zset's members over scores [-inf, max], lowest first, until `visit` stops.
    fn zwalk(&mut self, k: Key, max: f64, visit: &mut dyn FnMut(&mut Self, &[u8], u64) -> Walk) {
        let Some(p) = self.existing(k) else { return };
        // SAFETY: range iteration on an open zset handle, stopped before returning; the
        // element strings are adopted (and freed) one by one. `visit` may use other keys'
        // handles, never this one (see `inflight_walk`).
        unsafe {
            if raw::RedisModule_ZsetFirstInScoreRange.unwrap()(p, f64::NEG_INFINITY, max, 0, 0) != raw::REDISMODULE_OK as c_int {
                return;
            }
            while raw::RedisModule_ZsetRangeEndReached.unwrap()(p) == 0 {
                let mut score = 0f64;
                let e = raw::RedisModule_ZsetRangeCurrentElement.unwrap()(p, &mut score);
                if let Some(e) = RStr::adopt(self.ctx, e) {
                    if visit(self, e.bytes(), score as u64) == Walk::Stop {
                        break;
                    }
                }
                if raw::RedisModule_ZsetRangeNext.unwrap()(p) == 0 {
                    break;
                }
            }
            raw::RedisModule_ZsetRangeStop.unwrap()(p);
        }
    }

    /// One field of an open hash (empty keys give None).
    fn hash_get(&self, p: *mut raw::RedisModuleKey, field: &RStr) -> Option<RStr> {
        let mut out: *mut raw::RedisModuleString = NULL_STR;
        // SAFETY: an open hash handle; one field in, one string out (ours to free).
        unsafe {
            raw::RedisModule_HashGet.unwrap()(p, raw::REDISMODULE_HASH_NONE as c_int, field.ptr, &mut out, NULL_STR);
        }
        RStr::adopt(self.ctx, out)
    }

    /// Wakes FETCHes blocked on this queue if anything became ready.
    fn signal(&mut self) {
        if self.ready_signal {
            self.ready_signal = false;
            self.name(Key::Msg);
            ffi::signal_ready(self.ctx, self.names[slot(Key::Msg)].as_ref().unwrap());
        }
    }
}

impl Drop for RedisStore<'_> {
    fn drop(&mut self) {
        self.replicate();
        // Keys close before names are freed.
        for k in self.keys.iter_mut() {
            k.take();
        }
        self.signal();
        if let Some(at) = self.earliest {
            crate::schedule::at_most(ffi::selected_db(self.ctx), self.queue, at);
        }
    }
}

impl Store for RedisStore<'_> {
    fn check(&mut self, _keys: &[Key]) -> Result<()> {
        // Every key at once, remembered until something else writes the queue: the hot path
        // then opens only the keys it uses.
        if self.types_checked {
            return Ok(());
        }
        for k in Key::ALL {
            self.read(k);
            let t = self.keys[slot(k)].as_ref().unwrap().key_type();
            if t != raw::REDISMODULE_KEYTYPE_EMPTY as c_int && t != redis_type(k.kind()) {
                return Err(Error::WrongType);
            }
        }
        self.types_checked = true;
        crate::settings_cache::types_checked(ffi::selected_db(self.ctx), self.queue);
        Ok(())
    }

    fn exists(&mut self, k: Key) -> bool {
        self.existing(k).is_some()
    }

    fn llen(&mut self, k: Key) -> u64 {
        self.len(k)
    }

    fn rpush(&mut self, k: Key, v: &[u8]) {
        self.list_push(k, v, false)
    }

    fn lpush(&mut self, k: Key, v: &[u8]) {
        self.list_push(k, v, true)
    }

    fn lpop(&mut self, k: Key) -> Option<Vec<u8>> {
        self.lpop_with(k, <[u8]>::to_vec)
    }

    fn lpop_with<R>(&mut self, k: Key, take: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let p = self.existing_for_write(k)?;
        // SAFETY: a list handle open for writing; the popped string is ours to free.
        let e = unsafe { raw::RedisModule_ListPop.unwrap()(p, raw::REDISMODULE_LIST_HEAD as c_int) };
        let e = RStr::adopt(self.ctx, e)?;
        if crate::sliced::watching() {
            crate::sliced::list_removed(ffi::selected_db(self.ctx), self.queue, k, 0);
        }
        self.effect(k, c"LPOP", || []);
        Some(take(e.bytes()))
    }

    fn lindex(&mut self, k: Key, index: u64) -> Option<Vec<u8>> {
        let p = self.existing(k)?;
        // SAFETY: a list handle; out of range gives null.
        let e = unsafe { raw::RedisModule_ListGet.unwrap()(p, index as c_long) };
        RStr::adopt(self.ctx, e).map(|e| e.bytes().to_vec())
    }

    fn list_walk(&mut self, k: Key, visit: &mut dyn FnMut(u64, &[u8]) -> Walk) {
        self.list_walk_from(k, 0, visit);
    }

    fn lremove(&mut self, k: Key, index: u64, value: &[u8]) {
        // A fresh handle: Redis 7.0's list iterator cached in a handle can land one element off
        // when a delete seeks back towards the head after an earlier one.
        self.keys[slot(k)] = None;
        let Some(p) = self.existing_for_write(k) else { return };
        // SAFETY: a list handle open for writing; the index was found in this command.
        let ok = unsafe { raw::RedisModule_ListDelete.unwrap()(p, index as c_long) };
        if ok == raw::REDISMODULE_OK as c_int {
            if crate::sliced::watching() {
                crate::sliced::list_removed(ffi::selected_db(self.ctx), self.queue, k, index);
            }
            // Elements are whole records with unique offsets: the first equal one is this one.
            let ctx = self.ctx;
            self.effect(k, c"LREM", || [RStr::new(ctx, b"1"), RStr::new(ctx, value)]);
        }
    }

    fn zcard(&mut self, k: Key) -> u64 {
        self.len(k)
    }

    fn zadd(&mut self, k: Key, score: u64, member: &[u8]) {
        let ctx = self.ctx;
        let p = self.write(k);
        let m = RStr::new(ctx, member);
        let mut flags: c_int = 0;
        // SAFETY: a handle open for writing on a key checked to be a zset (or empty).
        unsafe { raw::RedisModule_ZsetAdd.unwrap()(p, score as f64, m.ptr, &mut flags) };
        if k == Key::Dly && crate::sliced::watching() {
            crate::sliced::delayed_added(ffi::selected_db(ctx), self.queue, member);
        }
        match k {
            Key::Bak | Key::Dly => self.guard_by(score),
            Key::Dup => self.guard_by(score.saturating_add(self.dedup_window)),
            _ => {}
        }
        self.effect(k, c"ZADD", || [RStr::new(ctx, itoa::Buffer::new().format(score).as_bytes()), m]);
    }

    fn zrem(&mut self, k: Key, member: &[u8]) -> bool {
        let Some(p) = self.existing_for_write(k) else { return false };
        let m = RStr::new(self.ctx, member);
        let mut deleted: c_int = 0;
        // SAFETY: a zset handle open for writing.
        unsafe { raw::RedisModule_ZsetRem.unwrap()(p, m.ptr, &mut deleted) };
        if deleted != 0 {
            self.effect(k, c"ZREM", || [m]);
        }
        deleted != 0
    }

    fn zscore(&mut self, k: Key, member: &[u8]) -> Option<u64> {
        let p = self.existing(k)?;
        let m = RStr::new(self.ctx, member);
        let mut score = 0f64;
        // SAFETY: a zset handle; the score is written on success only.
        let ok = unsafe { raw::RedisModule_ZsetScore.unwrap()(p, m.ptr, &mut score) };
        (ok == raw::REDISMODULE_OK as c_int).then_some(score as u64)
    }

    fn zrange_upto(&mut self, k: Key, max: u64, limit: usize) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.zwalk(k, max as f64, &mut |_, m, score| {
            out.push((m.to_vec(), score));
            if out.len() == limit {
                Walk::Stop
            } else {
                Walk::Next
            }
        });
        out
    }

    fn zset_walk(&mut self, k: Key, visit: &mut dyn FnMut(&[u8], u64) -> Walk) {
        self.zwalk(k, f64::INFINITY, &mut |_, m, score| visit(m, score));
    }

    fn inflight_walk(&mut self, visit: &mut InflightVisit) {
        let Some(inf) = self.existing(Key::Inf) else { return };
        self.zwalk(Key::Bak, f64::INFINITY, &mut |me, receipt, deadline| {
            let field = RStr::new(me.ctx, receipt);
            match me.hash_get(inf, &field) {
                Some(record) => visit(receipt, deadline, record.bytes()),
                None => Walk::Next,
            }
        });
    }

    fn hget(&mut self, k: Key, field: &[u8]) -> Option<Vec<u8>> {
        let p = self.existing(k)?;
        let f = RStr::new(self.ctx, field);
        self.hash_get(p, &f).map(|v| v.bytes().to_vec())
    }

    fn hset(&mut self, k: Key, field: &[u8], value: &[u8]) {
        let ctx = self.ctx;
        let p = self.write(k);
        let f = RStr::new(ctx, field);
        let v = RStr::new(ctx, value);
        // SAFETY: a handle open for writing on a key checked to be a hash (or empty).
        unsafe { raw::RedisModule_HashSet.unwrap()(p, raw::REDISMODULE_HASH_NONE as c_int, f.ptr, v.ptr, NULL_STR) };
        if k == Key::Inf && crate::sliced::watching() {
            crate::sliced::inflight_added(ffi::selected_db(ctx), self.queue, field, value);
        }
        self.effect(k, c"HSET", || [f, v]);
    }

    fn hdel(&mut self, k: Key, field: &[u8]) -> bool {
        let Some(p) = self.existing_for_write(k) else { return false };
        let f = RStr::new(self.ctx, field);
        // SAFETY: a hash handle open for writing; DELETE removes the field.
        let n = unsafe {
            raw::RedisModule_HashSet.unwrap()(p, raw::REDISMODULE_HASH_NONE as c_int, f.ptr, raw::REDISMODULE_HASH_DELETE, NULL_STR)
        };
        if n > 0 {
            self.effect(k, c"HDEL", || [f]);
        }
        n > 0
    }

    fn hincrby(&mut self, k: Key, field: &[u8], by: i64) -> Result<i64> {
        let ctx = self.ctx;
        let p = self.write(k);
        let f = RStr::new(ctx, field);
        let old: i64 = match self.hash_get(p, &f) {
            Some(v) => std::str::from_utf8(v.bytes()).ok().and_then(|v| v.parse().ok()).ok_or(Error::NotAnInteger)?,
            None => 0,
        };
        let new = old + by;
        let v = RStr::new(ctx, itoa::Buffer::new().format(new).as_bytes());
        // SAFETY: as in `hset`.
        unsafe { raw::RedisModule_HashSet.unwrap()(p, raw::REDISMODULE_HASH_NONE as c_int, f.ptr, v.ptr, NULL_STR) };
        // The absolute value, not the increment: a replica ends up with the primary's number.
        self.effect(k, c"HSET", || [f, v]);
        Ok(new)
    }

    fn xadd(&mut self, k: Key, maxlen: u64, fields: &[(&'static [u8], &[u8])]) {
        let ctx = self.ctx;
        let p = self.write(k);
        // The arguments of the replicated XADD: its id first (known once the entry is added),
        // then the fields; the vector is the effect's, so it is made once, at its full size.
        let mut args: Vec<RStr> = Vec::with_capacity(1 + 2 * fields.len());
        ffi::with_shared(|shared| args.extend(fields.iter().flat_map(|(f, v)| [shared.name(ctx, f), shared.value(ctx, v)])));
        let mut argv = [std::ptr::null_mut(); 2 * LOG_FIELDS_ON_STACK];
        let mut argv_heap = Vec::new();
        let argv: &mut [*mut raw::RedisModuleString] = if args.len() <= argv.len() {
            &mut argv[..args.len()]
        } else {
            argv_heap.resize(args.len(), std::ptr::null_mut());
            &mut argv_heap
        };
        for (slot, a) in argv.iter_mut().zip(&args) {
            *slot = a.ptr;
        }
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        // SAFETY: a handle open for writing on a key checked to be a stream (or empty); `argv`
        // holds 2 × fields.len() live strings.
        let added = unsafe {
            raw::RedisModule_StreamAdd.unwrap()(
                p,
                raw::REDISMODULE_STREAM_ADD_AUTOID as c_int,
                &mut id,
                argv.as_mut_ptr(),
                fields.len() as i64,
            )
        };
        if added != raw::REDISMODULE_OK as c_int {
            // Only when the stream's last id is the largest there is: XADD * fails the same way.
            return;
        }
        // Exact trimming, as `XADD … MAXLEN n` does; only asked for when the log is over its
        // length (a trim that finds nothing to do still costs a walk into the stream).
        // SAFETY: the same handle.
        let length = unsafe { raw::RedisModule_ValueLength.unwrap()(p) } as u64;
        let trimmed = if length > maxlen {
            // SAFETY: the same handle.
            unsafe { raw::RedisModule_StreamTrimByLength.unwrap()(p, 0, maxlen.min(i64::MAX as u64) as c_longlong) }
        } else {
            0
        };
        if self.propagating() {
            // Replicas and the AOF get the id this entry was given, never `*`.
            let (mut ms, mut seq) = (itoa::Buffer::new(), itoa::Buffer::new());
            let (ms, seq) = (ms.format(id.ms).as_bytes(), seq.format(id.seq).as_bytes());
            let mut id_text = [0u8; 41];
            let len = ms.len() + 1 + seq.len();
            id_text[..ms.len()].copy_from_slice(ms);
            id_text[ms.len()] = b'-';
            id_text[ms.len() + 1..len].copy_from_slice(seq);
            args.insert(0, RStr::new(ctx, &id_text[..len]));
        }
        self.effect(k, c"XADD", || args);
        if trimmed > 0 {
            self.effect(k, c"XTRIM", || [RStr::new(ctx, b"MAXLEN"), RStr::new(ctx, itoa::Buffer::new().format(maxlen).as_bytes())]);
        }
    }

    fn random(&mut self, out: &mut [u8]) {
        ffi::random_bytes(out);
    }

    fn wake(&mut self) {
        self.ready_signal = true;
    }
}
