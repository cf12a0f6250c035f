//! `INFO rmq`: queues, messages per state over all queues, and the guard's counters.
//! Redis shows the fields with the `rmq_` prefix.

use std::ffi::CString;
use std::os::raw::c_int;
use std::sync::atomic::Ordering;

use redis_module::raw;
use rmq_core::store::{Key, Store};

use crate::guard;
use crate::registry;
use crate::safety::quietly;
use crate::store::RedisStore;

fn field(ctx: *mut raw::RedisModuleInfoCtx, name: &str, v: u64) {
    let name = CString::new(name).unwrap();
    unsafe { raw::RedisModule_InfoAddFieldLongLong.unwrap()(ctx, name.as_ptr(), v as i64) };
}

pub extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, for_crash_report: c_int) {
    let key_ctx = guard::module_ctx();
    quietly(key_ctx, "INFO", || {
        unsafe { raw::RedisModule_InfoAddSection.unwrap()(ctx, c"".as_ptr()) };
        let mut totals = [0u64; 5];
        // A crash report must not touch the keyspace.
        if for_crash_report == 0 && !key_ctx.is_null() {
            for (db, q) in registry::snapshot_from(None) {
                unsafe { raw::RedisModule_SelectDb.unwrap()(key_ctx, db) };
                let mut s = RedisStore::new(key_ctx, &q);
                totals[0] += s.llen(Key::Msg);
                totals[1] += s.zcard(Key::Dly);
                totals[2] += s.zcard(Key::Bak);
                totals[3] += s.llen(Key::Fai);
                totals[4] += s.llen(Key::Err);
            }
        }
        field(ctx, "queues", registry::len() as u64);
        for (name, v) in ["ready", "delayed", "inflight", "failed", "errors"].iter().zip(totals) {
            field(ctx, name, v);
        }
        field(ctx, "guard_runs", guard::RUNS.load(Ordering::Relaxed));
        field(ctx, "guard_reclaimed", guard::RECLAIMED.load(Ordering::Relaxed));
        field(ctx, "guard_promoted", guard::PROMOTED.load(Ordering::Relaxed));
        field(ctx, "guard_last_us", guard::LAST_US.load(Ordering::Relaxed));
        field(ctx, "eviction_policy_ok", guard::EVICTION_POLICY_OK.load(Ordering::Relaxed) as u64);
    });
}
