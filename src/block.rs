//! FETCH … BLOCK: the client waits on the queue's ready key, like BLPOP. Whatever makes a
//! message ready (PUSH, NACK RETRY, RECOVER, the guard) signals that key; Redis then calls
//! [`on_ready`], which tries the FETCH again and keeps waiting if another consumer was faster.

use std::os::raw::{c_int, c_void};

use redis_module::raw;
use rmq_core::args::Fetch;
use rmq_core::store::Key;

use crate::commands::{fetch_now, reply_deliveries};
use crate::ffi::{self, reply_null, Ctx, RStr};
use crate::safety::guarded;

pub fn wait(ctx: Ctx, q: &[u8], timeout_ms: u64, req: &Fetch) {
    let data = Box::new(Blocked { count: req.count, lock: req.lock, consumer: req.consumer.to_vec(), compact: req.compact });
    let key = RStr::new(ctx, &Key::Msg.name(q));
    let mut keys = [key.ptr];
    // SAFETY: a command context; the private data is a Box handed to Redis, which gives it
    // back to `free_blocked` exactly once.
    unsafe {
        raw::RedisModule_BlockClientOnKeys.unwrap()(
            ctx,
            Some(on_ready),
            Some(on_timeout),
            Some(free_blocked),
            timeout_ms as i64,
            keys.as_mut_ptr(),
            1,
            Box::into_raw(data) as *mut c_void,
        );
    }
}

/// The ready key was signalled: fetch now, or return ERR to go on waiting.
extern "C" fn on_ready(ctx: Ctx, argv: *mut *mut raw::RedisModuleString, argc: c_int) -> c_int {
    let served = guarded(ctx, "FETCH (unblocked)", || {
        // SAFETY: the blocked command's own argv, live for this callback.
        let args = unsafe { ffi::args(argv, argc) };
        let Some(q) = args.get(1) else { return Ok(false) };
        if crate::cluster::moving(ctx, q) {
            return Ok(false); // keep waiting: Redis redirects the client once the slot has moved
        }
        let Some((got, compact)) = with_blocked(ctx, |b| (fetch_now(ctx, q, b.count, b.lock, &b.consumer), b.compact)) else {
            return Ok(false);
        };
        let got = got?;
        if got.is_empty() {
            return Ok(false);
        }
        reply_deliveries(ctx, &got, compact);
        Ok(true)
    });
    match served {
        Some(false) => raw::REDISMODULE_ERR as c_int,
        _ => raw::REDISMODULE_OK as c_int,
    }
}

/// BLOCK ran out: a null reply, as BLPOP gives.
extern "C" fn on_timeout(ctx: Ctx, _argv: *mut *mut raw::RedisModuleString, _argc: c_int) -> c_int {
    reply_null(ctx);
    raw::REDISMODULE_OK as c_int
}

/// The private data of a blocked FETCH.
struct Blocked {
    count: u64,
    lock: Option<u64>,
    consumer: Vec<u8>,
    compact: bool,
}

/// Runs `f` on the blocked FETCH's private data, which lives until `free_blocked`.
fn with_blocked<T>(ctx: Ctx, f: impl FnOnce(&Blocked) -> T) -> Option<T> {
    // SAFETY: inside the reply callback the private data is the Box given in `wait`, not yet
    // freed; the reference does not leave this function.
    let b = unsafe { (raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx) as *const Blocked).as_ref() }?;
    Some(f(b))
}

extern "C" fn free_blocked(_ctx: Ctx, p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: the Box leaked in `wait`, handed back once.
        let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(p as *mut Blocked) }));
    }
}
