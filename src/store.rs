//! [`Store`] on Redis's low-level key API.
//!
//! Every change is applied to the key and replicated as the plain Redis command that does the
//! same (`RPUSH`, `ZADD` with an absolute score, `HSET`, …), so replicas and the AOF never see
//! `RMQ.*` and never re-run queue logic. Consecutive changes of one kind to one key are sent
//! as one command (`LPOP key 3`, `ZADD key s1 m1 s2 m2`): replicating costs a command lookup
//! per command, and different keys' changes commute, so only each key's own order must hold.
//! Whatever makes a message ready signals the ready key, which wakes blocked FETCHes.

use std::ffi::CStr;
use std::os::raw::c_int;

use redis_module::raw;
use rmq_core::store::{Key, Store};

use crate::ffi::{Ctx, OpenKey, RStr, NULL_STR};

const KEYS: usize = Key::ALL.len();

pub struct RedisStore<'q> {
    ctx: Ctx,
    queue: &'q [u8],
    names: [Option<RStr>; KEYS],
    keys: [Option<OpenKey>; KEYS],
    ready_signal: bool,
    effects: Vec<Effect>,
    /// Index in `effects` of each key's latest effect.
    last_effect: [Option<usize>; KEYS],
}

/// A plain command to replicate, built up while a command runs.
struct Effect {
    key: Key,
    command: &'static CStr,
    args: Vec<RStr>,
    /// LPOP's count.
    count: u64,
}

/// An effect carries at most this many arguments before a new one starts.
const MAX_EFFECT_ARGS: usize = 1024;

fn slot(k: Key) -> usize {
    k as usize
}

impl<'q> RedisStore<'q> {
    pub fn new(ctx: Ctx, queue: &'q [u8]) -> Self {
        RedisStore {
            ctx,
            queue,
            names: Default::default(),
            keys: Default::default(),
            ready_signal: false,
            effects: Vec::new(),
            last_effect: Default::default(),
        }
    }

    /// Records a change to replicate, merged into the key's latest effect when it is the same
    /// command.
    fn effect(&mut self, k: Key, command: &'static CStr, args: impl IntoIterator<Item = RStr>) {
        if let Some(i) = self.last_effect[slot(k)] {
            let e = &mut self.effects[i];
            if e.command == command && e.args.len() < MAX_EFFECT_ARGS {
                e.args.extend(args);
                e.count += 1;
                return;
            }
        }
        self.effects.push(Effect { key: k, command, args: args.into_iter().collect(), count: 1 });
        self.last_effect[slot(k)] = Some(self.effects.len() - 1);
    }

    /// Sends the recorded changes to replicas and the AOF.
    fn replicate(&mut self) {
        let effects = std::mem::take(&mut self.effects);
        for e in effects {
            let mut argv = vec![self.name(e.key)];
            let count;
            if e.command == c"LPOP" {
                count = RStr::new(self.ctx, e.count.to_string().as_bytes());
                argv.push(count.ptr);
            }
            argv.extend(e.args.iter().map(|a| a.ptr));
            unsafe {
                raw::RedisModule_Replicate.unwrap()(self.ctx, e.command.as_ptr(), c"v".as_ptr(), argv.as_mut_ptr(), argv.len());
            }
        }
        self.last_effect = Default::default();
    }

    pub fn name(&mut self, k: Key) -> *mut raw::RedisModuleString {
        let ctx = self.ctx;
        let queue = self.queue;
        self.names[slot(k)].get_or_insert_with(|| RStr::new(ctx, &k.name(queue))).ptr
    }

    /// The key opened for writing (reads go through the same handle).
    fn key(&mut self, k: Key) -> *mut raw::RedisModuleKey {
        if self.keys[slot(k)].is_none() {
            self.name(k);
            let name = self.names[slot(k)].as_ref().unwrap();
            self.keys[slot(k)] = Some(OpenKey::open(self.ctx, name, true));
        }
        self.keys[slot(k)].as_ref().unwrap().ptr
    }

    /// Reads must not create; an empty key has type EMPTY.
    fn exists_key(&mut self, k: Key) -> Option<*mut raw::RedisModuleKey> {
        let p = self.key(k);
        let t = unsafe { raw::RedisModule_KeyType.unwrap()(p) };
        (t != raw::REDISMODULE_KEYTYPE_EMPTY as c_int).then_some(p)
    }

    fn len(&mut self, k: Key) -> u64 {
        match self.exists_key(k) {
            Some(p) => unsafe { raw::RedisModule_ValueLength.unwrap()(p) as u64 },
            None => 0,
        }
    }

    fn touched_ready(&mut self, k: Key) {
        if k == Key::Msg {
            self.ready_signal = true;
        }
    }

    fn list_push(&mut self, k: Key, v: &[u8], head: bool) {
        let ctx = self.ctx;
        let p = self.key(k);
        let s = RStr::new(ctx, v);
        let where_ = if head { raw::REDISMODULE_LIST_HEAD } else { raw::REDISMODULE_LIST_TAIL };
        unsafe { raw::RedisModule_ListPush.unwrap()(p, where_ as c_int, s.ptr) };
        self.effect(k, if head { c"LPUSH" } else { c"RPUSH" }, [s]);
        self.touched_ready(k);
    }

    /// A zset range walk over [-inf, max], up to `limit` elements.
    fn zrange(&mut self, k: Key, max: u64, limit: usize) -> Vec<(Vec<u8>, u64)> {
        let Some(p) = self.exists_key(k) else { return Vec::new() };
        let mut out = Vec::new();
        unsafe {
            if raw::RedisModule_ZsetFirstInScoreRange.unwrap()(p, f64::NEG_INFINITY, max as f64, 0, 0) != raw::REDISMODULE_OK as c_int {
                return out;
            }
            while out.len() < limit && raw::RedisModule_ZsetRangeEndReached.unwrap()(p) == 0 {
                let mut score = 0f64;
                let e = raw::RedisModule_ZsetRangeCurrentElement.unwrap()(p, &mut score);
                if let Some(e) = RStr::adopt(self.ctx, e) {
                    out.push((e.bytes().to_vec(), score as u64));
                }
                if raw::RedisModule_ZsetRangeNext.unwrap()(p) == 0 {
                    break;
                }
            }
            raw::RedisModule_ZsetRangeStop.unwrap()(p);
        }
        out
    }

    /// One field of an open hash (empty keys give None).
    fn hash_get(&self, p: *mut raw::RedisModuleKey, field: &RStr) -> Option<RStr> {
        let mut out: *mut raw::RedisModuleString = NULL_STR;
        unsafe {
            raw::RedisModule_HashGet.unwrap()(p, raw::REDISMODULE_HASH_NONE as c_int, field.ptr, &mut out, NULL_STR);
        }
        RStr::adopt(self.ctx, out)
    }

    /// Wakes FETCHes blocked on this queue if anything became ready.
    fn signal(&mut self) {
        if self.ready_signal {
            self.ready_signal = false;
            let name = self.name(Key::Msg);
            unsafe { raw::RedisModule_SignalKeyAsReady.unwrap()(self.ctx, name) };
        }
    }
}

impl Drop for RedisStore<'_> {
    fn drop(&mut self) {
        // Keys close before names are freed (field order would do it too; be explicit).
        for k in self.keys.iter_mut() {
            k.take();
        }
        self.replicate();
        self.signal();
    }
}

impl Store for RedisStore<'_> {
    fn exists(&mut self, k: Key) -> bool {
        self.exists_key(k).is_some()
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
        let p = self.exists_key(k)?;
        let e = unsafe { raw::RedisModule_ListPop.unwrap()(p, raw::REDISMODULE_LIST_HEAD as c_int) };
        let e = RStr::adopt(self.ctx, e)?;
        self.effect(k, c"LPOP", []);
        Some(e.bytes().to_vec())
    }

    fn lindex(&mut self, k: Key, index: u64) -> Option<Vec<u8>> {
        let p = self.exists_key(k)?;
        let e = unsafe { raw::RedisModule_ListGet.unwrap()(p, index as std::os::raw::c_long) };
        RStr::adopt(self.ctx, e).map(|e| e.bytes().to_vec())
    }

    fn zcard(&mut self, k: Key) -> u64 {
        self.len(k)
    }

    fn zadd(&mut self, k: Key, score: u64, member: &[u8]) {
        let ctx = self.ctx;
        let p = self.key(k);
        let m = RStr::new(ctx, member);
        let mut flags: c_int = 0;
        unsafe { raw::RedisModule_ZsetAdd.unwrap()(p, score as f64, m.ptr, &mut flags) };
        let score = RStr::new(ctx, itoa::Buffer::new().format(score).as_bytes());
        self.effect(k, c"ZADD", [score, m]);
    }

    fn zrem(&mut self, k: Key, member: &[u8]) -> bool {
        let Some(p) = self.exists_key(k) else { return false };
        let m = RStr::new(self.ctx, member);
        let mut deleted: c_int = 0;
        unsafe { raw::RedisModule_ZsetRem.unwrap()(p, m.ptr, &mut deleted) };
        if deleted != 0 {
            self.effect(k, c"ZREM", [m]);
        }
        deleted != 0
    }

    fn zscore(&mut self, k: Key, member: &[u8]) -> Option<u64> {
        let p = self.exists_key(k)?;
        let m = RStr::new(self.ctx, member);
        let mut score = 0f64;
        let ok = unsafe { raw::RedisModule_ZsetScore.unwrap()(p, m.ptr, &mut score) };
        (ok == raw::REDISMODULE_OK as c_int).then_some(score as u64)
    }

    fn zrange_upto(&mut self, k: Key, max: u64, limit: usize) -> Vec<(Vec<u8>, u64)> {
        self.zrange(k, max, limit)
    }

    fn hget(&mut self, k: Key, field: &[u8]) -> Option<Vec<u8>> {
        let p = self.exists_key(k)?;
        let f = RStr::new(self.ctx, field);
        self.hash_get(p, &f).map(|v| v.bytes().to_vec())
    }

    fn hset(&mut self, k: Key, field: &[u8], value: &[u8]) {
        let ctx = self.ctx;
        let p = self.key(k);
        let f = RStr::new(ctx, field);
        let v = RStr::new(ctx, value);
        unsafe { raw::RedisModule_HashSet.unwrap()(p, raw::REDISMODULE_HASH_NONE as c_int, f.ptr, v.ptr, NULL_STR) };
        self.effect(k, c"HSET", [f, v]);
    }

    fn hdel(&mut self, k: Key, field: &[u8]) -> bool {
        let Some(p) = self.exists_key(k) else { return false };
        let f = RStr::new(self.ctx, field);
        let n = unsafe {
            raw::RedisModule_HashSet.unwrap()(p, raw::REDISMODULE_HASH_NONE as c_int, f.ptr, raw::REDISMODULE_HASH_DELETE, NULL_STR)
        };
        if n > 0 {
            self.effect(k, c"HDEL", [f]);
        }
        n > 0
    }

    fn hincrby(&mut self, k: Key, field: &[u8], by: i64) -> i64 {
        let ctx = self.ctx;
        let p = self.key(k);
        let f = RStr::new(ctx, field);
        let old: i64 = self.hash_get(p, &f).and_then(|v| std::str::from_utf8(v.bytes()).ok()?.parse().ok()).unwrap_or(0);
        let new = old + by;
        let v = RStr::new(ctx, itoa::Buffer::new().format(new).as_bytes());
        unsafe { raw::RedisModule_HashSet.unwrap()(p, raw::REDISMODULE_HASH_NONE as c_int, f.ptr, v.ptr, NULL_STR) };
        // The absolute value, not the increment: a replica ends up with the primary's number.
        self.effect(k, c"HSET", [f, v]);
        new
    }

    fn xadd(&mut self, k: Key, maxlen: u64, fields: &[(&[u8], &[u8])]) {
        // Rare (only with `log 1`), so RM_Call: it turns `*` into the explicit id it gave,
        // and `!` replicates exactly that.
        let ctx = self.ctx;
        let mut args: Vec<RStr> = Vec::with_capacity(4 + 2 * fields.len());
        args.push(RStr::new(ctx, &k.name(self.queue)));
        args.push(RStr::new(ctx, b"MAXLEN"));
        args.push(RStr::new(ctx, maxlen.to_string().as_bytes()));
        args.push(RStr::new(ctx, b"*"));
        for (f, v) in fields {
            args.push(RStr::new(ctx, f));
            args.push(RStr::new(ctx, v));
        }
        let mut ptrs: Vec<*mut raw::RedisModuleString> = args.iter().map(|a| a.ptr).collect();
        // Our open handle on the stream must not be held across a call that writes it.
        self.keys[slot(k)].take();
        unsafe {
            let reply = raw::RedisModule_Call.unwrap()(ctx, c"XADD".as_ptr(), c"!v".as_ptr(), ptrs.as_mut_ptr(), ptrs.len());
            if !reply.is_null() {
                raw::RedisModule_FreeCallReply.unwrap()(reply);
            }
        }
    }
}
