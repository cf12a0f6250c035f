//! What the module learns from Redis without being called: keyspace notifications on the
//! queues' keys, server events (flush, SWAPDB, loading, role change), and a glance at every
//! command (a CLUSTER SETSLOT, a replica's PSYNC). They keep the in-memory views right: the
//! registry of queues, the guard's schedule, the settings cache, the cluster's moving slots,
//! and whether effects must be propagated.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

use redis_module::raw;
use rmq_core::store::{Key, MESSAGE_KEYS};

use crate::ffi::{self, Ctx};
use crate::safety::quietly;
use crate::{registry, schedule, settings_cache, store};

/// Events that take a key away.
fn is_deletion(event: &[u8]) -> bool {
    matches!(event, b"del" | b"expired" | b"evicted" | b"rename_from" | b"move_from")
}

extern "C" fn on_key_event(ctx: Ctx, _class: c_int, event: *const c_char, key: *mut raw::RedisModuleString) -> c_int {
    quietly(ctx, "keyspace notification", || {
        // SAFETY: Redis hands in a NUL-terminated event name and a live key name for the call.
        let (event, key) = unsafe { (CStr::from_ptr(event).to_bytes(), ffi::bytes_of(key)) };
        let Some((k, q)) = Key::parse(key) else { return };
        let db = ffi::selected_db(ctx);
        // Settings, or a key's type, may have changed by a write the module did not make.
        if k == Key::Cfg || !store::announcing() {
            settings_cache::forget(db, q);
        }
        // A lookup by id in slices cannot follow a change it is not told about.
        if !store::announcing() && crate::sliced::watching() && (MESSAGE_KEYS.contains(&k) || k == Key::Inf) {
            crate::sliced::disturbed(db, q);
        }
        if is_deletion(event) {
            registry::deleted(ctx, db, q);
            return;
        }
        registry::note(db, q);
        // The module's own commands schedule what they write exactly; any other change to
        // locks, due times, dedup entries or settings (a replicated or hand-made write, a
        // load, a RESTORE) has the guard look at the queue at its next tick.
        if !store::announcing() && matches!(k, Key::Bak | Key::Dly | Key::Dup | Key::Cfg) {
            schedule::at_most(db, q, ffi::now_ms());
        }
    });
    0
}

extern "C" fn on_server_event(ctx: Ctx, event: raw::RedisModuleEvent, sub: u64, data: *mut c_void) {
    quietly(ctx, "server event", || {
        settings_cache::clear();
        crate::cluster::stale();
        crate::sliced::disturb_all();
        match event.id {
            raw::REDISMODULE_EVENT_FLUSHDB => {
                // SAFETY: FLUSHDB events carry a RedisModuleFlushInfo.
                let db = unsafe { (*(data as *const raw::RedisModuleFlushInfo)).dbnum };
                registry::forget_db(db);
                schedule::forget_db(db);
            }
            raw::REDISMODULE_EVENT_SWAPDB => {
                // SAFETY: SWAPDB events carry a RedisModuleSwapDbInfo.
                let info = unsafe { *(data as *const raw::RedisModuleSwapDbInfo) };
                registry::swap_dbs(info.dbnum_first, info.dbnum_second);
                schedule::swap_dbs(info.dbnum_first, info.dbnum_second);
            }
            raw::REDISMODULE_EVENT_LOADING => match sub {
                // The dataset is being replaced; its keys announce themselves as they load.
                raw::REDISMODULE_SUBEVENT_LOADING_RDB_START
                | raw::REDISMODULE_SUBEVENT_LOADING_AOF_START
                | raw::REDISMODULE_SUBEVENT_LOADING_REPL_START => {
                    registry::forget_db(-1);
                    schedule::forget_db(-1);
                }
                _ => schedule::all_due(registry::all(), ffi::now_ms()),
            },
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED if sub == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER => {
                // A promoted replica's guard has every queue to look at.
                schedule::all_due(registry::all(), ffi::now_ms());
            }
            _ => {}
        }
    });
}

/// Sees every command before it runs (a filter): a CLUSTER SETSLOT may change the moving
/// slots; SYNC, PSYNC and REPLCONF mean a replica is there.
extern "C" fn on_command(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    // SAFETY: the filter context Redis hands in; arguments are read, never kept.
    let (name, sub) = unsafe {
        let get = raw::RedisModule_CommandFilterArgGet.unwrap();
        let n = raw::RedisModule_CommandFilterArgsCount.unwrap()(fctx);
        if n < 1 {
            return;
        }
        (ffi::bytes_of(get(fctx, 0)), if n > 1 { ffi::bytes_of(get(fctx, 1)) } else { &[][..] })
    };
    crate::propagation::on_command(name);
    if name.eq_ignore_ascii_case(b"cluster") && sub.eq_ignore_ascii_case(b"setslot") {
        crate::cluster::setslot_seen();
    }
}

pub fn subscribe(ctx: Ctx) {
    // SAFETY: the OnLoad context; the filter lives as long as the module.
    unsafe { raw::RedisModule_RegisterCommandFilter.unwrap()(ctx, Some(on_command), 0) };
    let classes = raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_STRING
        | raw::REDISMODULE_NOTIFY_LIST
        | raw::REDISMODULE_NOTIFY_HASH
        | raw::REDISMODULE_NOTIFY_ZSET
        | raw::REDISMODULE_NOTIFY_STREAM
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED
        | raw::REDISMODULE_NOTIFY_LOADED;
    // SAFETY: the OnLoad context; the callback lives as long as the module.
    unsafe { raw::RedisModule_SubscribeToKeyspaceEvents.unwrap()(ctx, classes, Some(on_key_event)) };
    for id in [
        raw::REDISMODULE_EVENT_FLUSHDB,
        raw::REDISMODULE_EVENT_SWAPDB,
        raw::REDISMODULE_EVENT_LOADING,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
    ] {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        // SAFETY: as above.
        let ok = unsafe { raw::RedisModule_SubscribeToServerEvent.unwrap()(ctx, event, Some(on_server_event)) };
        if ok != raw::REDISMODULE_OK as i32 {
            ffi::log(ctx, c"warning", &format!("rmq: could not subscribe to server event {id}"));
        }
    }
}
