//! `INFO rmq`: queues, messages per state over all queues, and the guard's counters.
//! Redis shows the fields with the `rmq_` prefix.
//!
//! The totals per state are kept per queue and read again for the queues that changed, at
//! most [`REFRESH_PER_CALL`] per call (the guard reads more between its ticks), so INFO costs
//! the same with 200,000 queues as with 20. `stale_queues` says how many changed queues are
//! not counted anew yet.

use std::ffi::CString;
use std::os::raw::c_int;
use std::sync::atomic::Ordering;

use redis_module::raw;

use crate::safety::quietly;
use crate::{guard, registry, schedule, settings_cache};

/// Queues whose counts one INFO call reads again at most.
const REFRESH_PER_CALL: usize = 2_000;

fn field(ctx: *mut raw::RedisModuleInfoCtx, name: &str, v: u64) {
    let name = CString::new(name).unwrap();
    // SAFETY: the INFO context Redis handed in; the name is copied.
    unsafe { raw::RedisModule_InfoAddFieldLongLong.unwrap()(ctx, name.as_ptr(), v as i64) };
}

pub extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, for_crash_report: c_int) {
    let key_ctx = guard::module_ctx();
    quietly(key_ctx, "INFO", || {
        // SAFETY: as in `field`.
        unsafe { raw::RedisModule_InfoAddSection.unwrap()(ctx, c"".as_ptr()) };
        // A crash report must not touch the keyspace.
        if for_crash_report == 0 && !key_ctx.is_null() {
            registry::refresh(key_ctx, REFRESH_PER_CALL);
        }
        let (totals, stale) = registry::totals();
        field(ctx, "queues", registry::len() as u64);
        for (name, v) in ["ready", "delayed", "inflight", "failed", "errors"].iter().zip(totals) {
            field(ctx, name, v);
        }
        field(ctx, "stale_queues", stale as u64);
        field(ctx, "guard_runs", guard::RUNS.load(Ordering::Relaxed));
        field(ctx, "guard_reclaimed", guard::RECLAIMED.load(Ordering::Relaxed));
        field(ctx, "guard_promoted", guard::PROMOTED.load(Ordering::Relaxed));
        field(ctx, "guard_last_us", guard::LAST_US.load(Ordering::Relaxed));
        field(ctx, "guard_longest_us", guard::LONGEST_US.load(Ordering::Relaxed));
        field(ctx, "guard_scheduled", schedule::len() as u64);
        field(ctx, "sliced_running", crate::sliced::running() as u64);
        field(ctx, "sliced_total", crate::sliced::SLICED.load(Ordering::Relaxed));
        field(ctx, "settings_cached", settings_cache::len() as u64);
        field(ctx, "eviction_policy_ok", guard::EVICTION_POLICY_OK.load(Ordering::Relaxed) as u64);
    });
}
