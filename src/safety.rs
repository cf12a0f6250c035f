//! No panic crosses into Redis: every entry point (commands, reply and timeout callbacks, the
//! timer, notifications, INFO) runs its body through [`guarded`] or [`command`].

use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::raw;
use rmq_core::{Error, Result};

use crate::ffi::{self, reply_error, Ctx};

/// Runs `f` for a client: an error becomes its error reply, a panic is logged and answered
/// with `ERR internal error`; both give `None`.
pub fn guarded<T>(ctx: Ctx, what: &str, f: impl FnOnce() -> Result<T>) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            reply_error(ctx, &e.to_string());
            None
        }
        Err(panic) => {
            let text =
                panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            ffi::log(ctx, c"warning", &format!("rmq: internal error in {what}: {text}"));
            reply_error(ctx, &Error::Internal.to_string());
            None
        }
    }
}

/// The body of a command entry point: args as bytes, errors as error replies.
pub fn command(ctx: Ctx, argv: *mut *mut raw::RedisModuleString, argc: c_int, name: &str, f: fn(Ctx, &[&[u8]]) -> Result<()>) -> c_int {
    // SAFETY: the command's own argv; the slices live only as long as `f` runs.
    guarded(ctx, name, || f(ctx, &unsafe { ffi::args(argv, argc) }));
    raw::REDISMODULE_OK as c_int
}

/// For callbacks that give no reply (timer, notifications): a panic is only logged.
pub fn quietly(ctx: Ctx, what: &str, f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        let text = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
        ffi::log(ctx, c"warning", &format!("rmq: internal error in {what}: {}", text.unwrap_or_default()));
    }
}
