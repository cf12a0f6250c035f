//! Thin wrappers over the few raw Redis module calls the module uses.
//!
//! Everything here runs on Redis's main thread with a live context. Each `unsafe` block says
//! why it is sound; the raw API's rule throughout is that a context, key or string handed in
//! by Redis stays valid for the callback it was handed to.

use std::ffi::CStr;
use std::os::raw::{c_int, c_long};
use std::ptr;

use redis_module::raw;

pub type Ctx = *mut raw::RedisModuleCtx;

/// A RedisModuleString this code created (or adopted) and frees.
pub struct RStr {
    ctx: Ctx,
    pub ptr: *mut raw::RedisModuleString,
}

impl RStr {
    pub fn new(ctx: Ctx, bytes: &[u8]) -> RStr {
        // SAFETY: RM_CreateString copies `bytes` (pointer and length of a live slice).
        let ptr = unsafe { raw::RedisModule_CreateString.unwrap()(ctx, bytes.as_ptr().cast(), bytes.len()) };
        RStr { ctx, ptr }
    }

    /// Takes ownership of a string Redis handed over (ListPop, HashGet, …).
    pub fn adopt(ctx: Ctx, ptr: *mut raw::RedisModuleString) -> Option<RStr> {
        (!ptr.is_null()).then(|| RStr { ctx, ptr })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the string is ours until drop, so its bytes live as long as `self`.
        unsafe { bytes_of(self.ptr) }
    }
}

/// Strings the module uses again and again (the log's field names, its common values): each
/// made once and shared by reference count, instead of an allocation and a copy at every use.
/// Reached through [`with_shared`], once for all the fields of a log entry.
pub struct Shared {
    names: Vec<(&'static [u8], usize)>,
    /// The common values, by [`common_value`]'s index; null until first used.
    values: [*mut raw::RedisModuleString; COMMON_VALUES],
}

/// Names kept; any further one is made afresh each time.
const MAX_NAMES: usize = 64;

/// Which of the values [`Shared::value`] shares `bytes` is (the log's event names, the empty
/// string, an empty MessagePack array for no headers, a first attempt), if any: a `match` on
/// the bytes, which compiles to a switch on the length and one comparison.
fn common_value(bytes: &[u8]) -> Option<usize> {
    Some(match bytes {
        b"" => 0,
        rmq_core::queue::EMPTY_HEADERS => 1,
        b"push" => 2,
        b"fetch" => 3,
        b"ack" => 4,
        b"retry" => 5,
        b"delay" => 6,
        b"fail" => 7,
        b"error" => 8,
        b"reclaim" => 9,
        b"recover" => 10,
        b"delete" => 11,
        b"purge" => 12,
        b"requeue" => 13,
        b"1" => 14,
        _ => return None,
    })
}

const COMMON_VALUES: usize = 15;

impl Shared {
    pub fn name(&mut self, ctx: Ctx, bytes: &'static [u8]) -> RStr {
        let names = &mut self.names;
        // The same literal is (nearly always) at the same address: that is checked first.
        let found = names.iter().find(|(n, _)| std::ptr::eq(*n, bytes)).or_else(|| names.iter().find(|(n, _)| *n == bytes));
        let shared = match found {
            Some(&(_, p)) => p as *mut raw::RedisModuleString,
            None if names.len() < MAX_NAMES => {
                // SAFETY: a null context: the string is the module's, never freed by Redis.
                let p = unsafe { raw::RedisModule_CreateString.unwrap()(std::ptr::null_mut(), bytes.as_ptr().cast(), bytes.len()) };
                names.push((bytes, p as usize));
                p
            }
            None => return RStr::new(ctx, bytes),
        };
        // SAFETY: a live string the module keeps; the reference taken here is the one this
        // RStr's drop gives back (RM_FreeString decrements the count).
        unsafe { raw::RedisModule_RetainString.unwrap()(ctx, shared) };
        RStr { ctx, ptr: shared }
    }

    pub fn value(&mut self, ctx: Ctx, bytes: &[u8]) -> RStr {
        let Some(i) = common_value(bytes) else { return RStr::new(ctx, bytes) };
        let shared = &mut self.values[i];
        if shared.is_null() {
            // SAFETY: a null context: the string is the module's, never freed by Redis.
            *shared = unsafe { raw::RedisModule_CreateString.unwrap()(std::ptr::null_mut(), bytes.as_ptr().cast(), bytes.len()) };
        }
        // SAFETY: as in `name`.
        unsafe { raw::RedisModule_RetainString.unwrap()(ctx, *shared) };
        RStr { ctx, ptr: *shared }
    }
}

/// Runs `f` with the module's shared strings (Redis runs the module on one thread).
pub fn with_shared<R>(f: impl FnOnce(&mut Shared) -> R) -> R {
    thread_local! {
        static SHARED: std::cell::RefCell<Shared> =
            const { std::cell::RefCell::new(Shared { names: Vec::new(), values: [std::ptr::null_mut(); COMMON_VALUES] }) };
    }
    SHARED.with(|s| f(&mut s.borrow_mut()))
}

impl Drop for RStr {
    fn drop(&mut self) {
        // SAFETY: created or adopted by this value, freed exactly once.
        unsafe { raw::RedisModule_FreeString.unwrap()(self.ctx, self.ptr) }
    }
}

/// The bytes of a RedisModuleString.
///
/// # Safety
/// `s` must be a live string, and the slice must not be used after the string is freed or
/// changed: the caller picks `'a` no longer than that (a callback's duration for strings Redis
/// hands in, the owner's borrow for [`RStr`]).
pub unsafe fn bytes_of<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    // SAFETY: `s` is live (the caller's promise); RM_StringPtrLen only reads it.
    let p = unsafe { raw::RedisModule_StringPtrLen.unwrap()(s, &mut len) };
    if p.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: Redis gives a pointer to `len` bytes owned by the string, alive as promised.
    unsafe { std::slice::from_raw_parts(p.cast(), len) }
}

/// The arguments of a command as byte slices.
///
/// # Safety
/// `argv` must hold `argc` live strings, and the slices must not outlive the command call that
/// received them.
pub unsafe fn args<'a>(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Vec<&'a [u8]> {
    // SAFETY: in bounds (i < argc) and each string is live for the call (the caller's promise).
    (0..argc.max(0) as usize).map(|i| unsafe { bytes_of(*argv.add(i)) }).collect()
}

/// An open key, closed on drop. Opened for reading only unless it is to be written: closing a
/// key opened for writing tells Redis it was modified (WATCH, client-side caching).
pub struct OpenKey {
    pub ptr: *mut raw::RedisModuleKey,
    pub write: bool,
}

impl OpenKey {
    pub fn open(ctx: Ctx, name: &RStr, write: bool) -> OpenKey {
        let mode = raw::REDISMODULE_READ | if write { raw::REDISMODULE_WRITE } else { 0 };
        // SAFETY: a live context and name; the handle is closed on drop.
        let ptr = unsafe { raw::RedisModule_OpenKey.unwrap()(ctx, name.ptr, mode as c_int) };
        OpenKey { ptr, write }
    }

    /// The Redis type of the key (`REDISMODULE_KEYTYPE_*`; EMPTY when it does not exist).
    pub fn key_type(&self) -> c_int {
        // SAFETY: an open handle.
        unsafe { raw::RedisModule_KeyType.unwrap()(self.ptr) }
    }
}

impl Drop for OpenKey {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: opened by this value, closed exactly once.
            unsafe { raw::RedisModule_CloseKey.unwrap()(self.ptr) }
        }
    }
}

pub fn ctx_flags(ctx: Ctx) -> u32 {
    // SAFETY: a live context.
    unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx) as u32 }
}

/// The database the context has selected.
pub fn selected_db(ctx: Ctx) -> i32 {
    // SAFETY: a live context.
    unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx) }
}

pub fn select_db(ctx: Ctx, db: i32) {
    // SAFETY: a live context; an unknown db is refused by Redis, not undefined.
    unsafe { raw::RedisModule_SelectDb.unwrap()(ctx, db) };
}

pub fn now_ms() -> u64 {
    // SAFETY: no arguments; reads the server's cached clock.
    unsafe { raw::RedisModule_Milliseconds.unwrap()() as u64 }
}

/// Bytes for receipt nonces: SplitMix64 seeded once from Redis's random source (a SHA-256
/// per call, too dear for every delivery). Receipts need to differ, not to be unguessable, and
/// a fresh seed at every start keeps a promoted replica or a restarted server from repeating
/// the sequence of another history.
pub fn random_bytes(out: &mut [u8]) {
    thread_local! {
        static STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    STATE.with(|state| {
        if state.get() == 0 {
            let mut seed = [0u8; 8];
            // SAFETY: writes exactly 8 bytes into `seed`.
            unsafe { raw::RedisModule_GetRandomBytes.unwrap()(seed.as_mut_ptr(), seed.len()) };
            state.set(u64::from_le_bytes(seed) | 1);
        }
        for chunk in out.chunks_mut(8) {
            let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(s);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    });
}

pub fn log(ctx: Ctx, level: &CStr, msg: &str) {
    let msg = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: "%s" with one NUL-terminated string; a null ctx logs as the module's.
    unsafe { raw::RedisModule_Log.unwrap()(ctx, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) }
}

/// The classes of keyspace notifications the server publishes (`notify-keyspace-events`),
/// 0 when it publishes none.
pub fn notify_keyspace_events() -> c_int {
    // SAFETY: no arguments; reads the server's setting.
    let flags = unsafe { raw::RedisModule_GetNotifyKeyspaceEvents.unwrap()() };
    if flags & (raw::REDISMODULE_NOTIFY_KEYSPACE | raw::REDISMODULE_NOTIFY_KEYEVENT) == 0 {
        return 0;
    }
    flags
}

/// Sends a keyspace notification, as Redis's own commands do for the same change.
pub fn notify(ctx: Ctx, kind: c_int, event: &CStr, key: &RStr) {
    // SAFETY: a live context and key name; Redis copies what it keeps.
    unsafe { raw::RedisModule_NotifyKeyspaceEvent.unwrap()(ctx, kind, event.as_ptr(), key.ptr) };
}

/// Wakes the clients blocked on `key` (FETCH … BLOCK waits on the ready key).
pub fn signal_ready(ctx: Ctx, key: &RStr) {
    // SAFETY: a live context and key name.
    unsafe { raw::RedisModule_SignalKeyAsReady.unwrap()(ctx, key.ptr) };
}

// ---- replies ----
// SAFETY (every reply function below): a live command context; the bytes are copied into the
// reply.

pub fn reply_array(ctx: Ctx, n: usize) {
    unsafe { raw::RedisModule_ReplyWithArray.unwrap()(ctx, n as c_long) };
}

/// An array whose length is given after its elements ([`reply_set_array_length`]).
pub fn reply_array_postponed(ctx: Ctx) {
    unsafe { raw::RedisModule_ReplyWithArray.unwrap()(ctx, raw::REDISMODULE_POSTPONED_LEN as c_long) };
}

pub fn reply_set_array_length(ctx: Ctx, n: usize) {
    unsafe { raw::RedisModule_ReplySetArrayLength.unwrap()(ctx, n as c_long) };
}

/// A map in RESP3, a flat array of 2n in RESP2.
pub fn reply_map(ctx: Ctx, n: usize) {
    unsafe {
        match raw::RedisModule_ReplyWithMap {
            Some(f) => f(ctx, n as c_long),
            None => raw::RedisModule_ReplyWithArray.unwrap()(ctx, (2 * n) as c_long),
        }
    };
}

pub fn reply_bulk(ctx: Ctx, b: &[u8]) {
    unsafe { raw::RedisModule_ReplyWithStringBuffer.unwrap()(ctx, b.as_ptr().cast(), b.len()) };
}

pub fn reply_int(ctx: Ctx, n: i64) {
    unsafe { raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, n) };
}

pub fn reply_null(ctx: Ctx) {
    unsafe { raw::RedisModule_ReplyWithNull.unwrap()(ctx) };
}

/// `msg` is the whole error line, `ERR …` (or another code: `WRONGTYPE …`, `TRYAGAIN …`).
pub fn reply_error(ctx: Ctx, msg: &str) {
    let c = std::ffi::CString::new(msg.replace(['\0', '\r', '\n'], " ")).unwrap_or_default();
    unsafe { raw::RedisModule_ReplyWithError.unwrap()(ctx, c.as_ptr()) };
}

pub const NULL_STR: *mut raw::RedisModuleString = ptr::null_mut();
