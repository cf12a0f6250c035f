//! Thin, safe-enough wrappers over the few raw Redis module calls the module uses.
//! Everything here runs on Redis's main thread with a live context.

use std::ffi::CStr;
use std::os::raw::{c_int, c_long};
use std::ptr;

use redis_module::raw;

pub type Ctx = *mut raw::RedisModuleCtx;

/// A RedisModuleString this code created and frees.
pub struct RStr {
    ctx: Ctx,
    pub ptr: *mut raw::RedisModuleString,
}

impl RStr {
    pub fn new(ctx: Ctx, bytes: &[u8]) -> RStr {
        let ptr = unsafe { raw::RedisModule_CreateString.unwrap()(ctx, bytes.as_ptr().cast(), bytes.len()) };
        RStr { ctx, ptr }
    }

    /// Takes ownership of a string Redis handed over (ListPop, HashGet, …).
    pub fn adopt(ctx: Ctx, ptr: *mut raw::RedisModuleString) -> Option<RStr> {
        (!ptr.is_null()).then(|| RStr { ctx, ptr })
    }

    pub fn bytes(&self) -> &[u8] {
        bytes_of(self.ptr)
    }
}

impl Drop for RStr {
    fn drop(&mut self) {
        unsafe { raw::RedisModule_FreeString.unwrap()(self.ctx, self.ptr) }
    }
}

/// The bytes of a RedisModuleString (borrowed for as long as the string lives).
pub fn bytes_of<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    let p = unsafe { raw::RedisModule_StringPtrLen.unwrap()(s, &mut len) };
    if p.is_null() || len == 0 {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(p.cast(), len) }
}

/// The arguments of a command as byte slices.
pub fn args<'a>(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Vec<&'a [u8]> {
    (0..argc as usize).map(|i| bytes_of(unsafe { *argv.add(i) })).collect()
}

/// An open key, closed on drop.
pub struct OpenKey {
    pub ptr: *mut raw::RedisModuleKey,
}

impl OpenKey {
    pub fn open(ctx: Ctx, name: &RStr, write: bool) -> OpenKey {
        let mode = raw::REDISMODULE_READ | if write { raw::REDISMODULE_WRITE } else { 0 };
        let ptr = unsafe { raw::RedisModule_OpenKey.unwrap()(ctx, name.ptr, mode as c_int) };
        OpenKey { ptr }
    }
}

impl Drop for OpenKey {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            unsafe { raw::RedisModule_CloseKey.unwrap()(self.ptr) }
        }
    }
}

pub fn ctx_flags(ctx: Ctx) -> u32 {
    unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx) as u32 }
}

pub fn now_ms() -> u64 {
    unsafe { raw::RedisModule_Milliseconds.unwrap()() as u64 }
}

pub fn log(ctx: Ctx, level: &CStr, msg: &str) {
    let msg = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
    unsafe { raw::RedisModule_Log.unwrap()(ctx, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) }
}

// ---- replies ----

pub fn reply_array(ctx: Ctx, n: usize) {
    unsafe { raw::RedisModule_ReplyWithArray.unwrap()(ctx, n as c_long) };
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

/// `msg` is the whole error line, `ERR …`.
pub fn reply_error(ctx: Ctx, msg: &str) {
    let c = std::ffi::CString::new(msg.replace(['\0', '\r', '\n'], " ")).unwrap_or_default();
    unsafe { raw::RedisModule_ReplyWithError.unwrap()(ctx, c.as_ptr()) };
}

pub const NULL_STR: *mut raw::RedisModuleString = ptr::null_mut();
