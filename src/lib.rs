//! librmq: the RMQ.* Redis module — a reliable message queue inside Redis.
//!
//! This file is the table of contents: every command with its syntax, the module's settings,
//! and what starts at load. The logic lives in `rmq-core` (no FFI there); the glue is here:
//! - `commands`: native hot path (PUSH FETCH ACK NACK TOUCH) plus RECOVER and STATS; the
//!   other commands run lua/rmq.lua through `lua` (mlua), the Lua edition itself
//! - `block`: FETCH … BLOCK on the ready key
//! - `guard`: the timer that reclaims expired locks and promotes due messages
//! - `store`: the queue logic's `Store` on Redis keys, replicating effects as plain commands
//! - `registry`: which queues this node holds; `info`: INFO rmq; `config`: module settings
//! - `safety`: no panic crosses into Redis

mod block;
mod commands;
mod config;
mod ffi;
mod guard;
mod info;
mod lua;
mod msgpack_lua;
mod registry;
mod safety;
mod settings_cache;
mod store;

use std::os::raw::c_int;

use redis_module::configuration::ConfigurationFlags;
use redis_module::{raw, redis_module, Context, RedisString, Status};

use crate::config::*;
use crate::ffi::Ctx;

type Argv = *mut *mut raw::RedisModuleString;

macro_rules! entry {
    ($fn_name:ident, $name:literal, $handler:path) => {
        extern "C" fn $fn_name(ctx: Ctx, argv: Argv, argc: c_int) -> c_int {
            safety::command(ctx, argv, argc, $name, $handler)
        }
    };
}

// RMQ.PUSH q body [ID id] [TAG tag] [KEY key] [HEADER name value]… [DELAY ms | AT unix-ms]
entry!(rmq_push, "RMQ.PUSH", commands::push);
// RMQ.FETCH q [COUNT n] [LOCK ms] [BLOCK ms] [CONSUMER name]
entry!(rmq_fetch, "RMQ.FETCH", commands::fetch);
// RMQ.ACK q receipt [receipt …]
entry!(rmq_ack, "RMQ.ACK", commands::ack);
// RMQ.NACK q receipt [RETRY [DELAY ms] | FAIL | ERROR] [REASON text]
entry!(rmq_nack, "RMQ.NACK", commands::nack);
// RMQ.TOUCH q receipt [LOCK ms]
entry!(rmq_touch, "RMQ.TOUCH", commands::touch);
// RMQ.RECOVER q [EXPIRED] [FAILED] [ERRORS]
entry!(rmq_recover, "RMQ.RECOVER", commands::recover);
// RMQ.STATS q
entry!(rmq_stats, "RMQ.STATS", commands::stats);

/// A command served by lua/rmq.lua's `rmq_<name>` through the module's Lua core.
macro_rules! lua_entry {
    ($fn_name:ident, $name:literal, $function:literal, $cmd:literal) => {
        extern "C" fn $fn_name(ctx: Ctx, argv: Argv, argc: c_int) -> c_int {
            safety::command(ctx, argv, argc, $name, |ctx, args| commands::lua_command(ctx, args, $function, $cmd))
        }
    };
}

// RMQ.PEEK q [READY|DELAYED|INFLIGHT|FAILED|ERRORS] [START n] [COUNT n]
lua_entry!(rmq_peek, "RMQ.PEEK", "rmq_peek", "rmq.peek");
// RMQ.GET q id
lua_entry!(rmq_get, "RMQ.GET", "rmq_get", "rmq.get");
// RMQ.DEL q id [id …]
lua_entry!(rmq_del, "RMQ.DEL", "rmq_del", "rmq.del");
// RMQ.REQUEUE q id [id …]
lua_entry!(rmq_requeue, "RMQ.REQUEUE", "rmq_requeue", "rmq.requeue");
// RMQ.PURGE q READY|DELAYED|INFLIGHT|FAILED|ERRORS|ALL
lua_entry!(rmq_purge, "RMQ.PURGE", "rmq_purge", "rmq.purge");
// RMQ.CONFIG q GET [name] | RMQ.CONFIG q SET name value [name value …]
lua_entry!(rmq_config, "RMQ.CONFIG", "rmq_config", "rmq.config");
// RMQ.QUEUES
lua_entry!(rmq_queues, "RMQ.QUEUES", "rmq_queues", "rmq.queues");
// RMQ.LOG q [FROM offset] [COUNT n]
lua_entry!(rmq_log, "RMQ.LOG", "rmq_log", "rmq.log");
// RMQ.REPLAY q FROM offset [TO offset]
lua_entry!(rmq_replay, "RMQ.REPLAY", "rmq_replay", "rmq.replay");

type Handler = extern "C" fn(Ctx, Argv, c_int) -> c_int;

/// name, handler, flags, first key, last key, key step.
const COMMANDS: &[(&std::ffi::CStr, Handler, &std::ffi::CStr, c_int, c_int, c_int)] = &[
    (c"rmq.push", rmq_push, c"write deny-oom fast", 1, 1, 1),
    (c"rmq.fetch", rmq_fetch, c"write", 1, 1, 1),
    (c"rmq.ack", rmq_ack, c"write fast", 1, 1, 1),
    (c"rmq.nack", rmq_nack, c"write fast", 1, 1, 1),
    (c"rmq.touch", rmq_touch, c"write fast", 1, 1, 1),
    (c"rmq.recover", rmq_recover, c"write", 1, 1, 1),
    (c"rmq.stats", rmq_stats, c"readonly fast", 1, 1, 1),
    (c"rmq.peek", rmq_peek, c"readonly", 1, 1, 1),
    (c"rmq.get", rmq_get, c"readonly", 1, 1, 1),
    (c"rmq.del", rmq_del, c"write", 1, 1, 1),
    (c"rmq.requeue", rmq_requeue, c"write", 1, 1, 1),
    (c"rmq.purge", rmq_purge, c"write", 1, 1, 1),
    (c"rmq.config", rmq_config, c"write", 1, 1, 1),
    (c"rmq.queues", rmq_queues, c"readonly", 0, 0, 0),
    (c"rmq.log", rmq_log, c"readonly", 1, 1, 1),
    (c"rmq.replay", rmq_replay, c"write deny-oom", 1, 1, 1),
];

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    let raw_ctx = ctx.ctx;
    for (name, handler, flags, first, last, step) in COMMANDS {
        let ok = unsafe {
            raw::RedisModule_CreateCommand.unwrap()(raw_ctx, name.as_ptr(), Some(*handler), flags.as_ptr(), *first, *last, *step)
        };
        if ok != raw::REDISMODULE_OK as c_int {
            ctx.log_warning(&format!("rmq: could not register {}", name.to_string_lossy()));
            return Status::Err;
        }
    }
    registry::subscribe(raw_ctx);
    settings_cache::subscribe(raw_ctx);
    unsafe { raw::RedisModule_RegisterInfoFunc.unwrap()(raw_ctx, Some(info::info)) };
    guard::start(raw_ctx);
    Status::Ok
}

type OnChanged = Option<Box<dyn Fn(&redis_module::configuration::ConfigurationContext, &str, &'static std::sync::atomic::AtomicI64)>>;

/// A node setting changed: queues' cached settings are rebuilt from it.
fn on_setting_changed() -> OnChanged {
    Some(Box::new(|_, _, _| settings_cache::clear()))
}

/// The guard's timer is re-armed at once with the new interval.
fn on_guard_interval_changed() -> OnChanged {
    Some(Box::new(|_, _, _| guard::rearm()))
}

/// The largest value any duration setting takes (docs/commands.md: numbers ≤ 10^15).
const MAX: i64 = 1_000_000_000_000_000;

redis_module! {
    name: "rmq",
    version: 1,
    // The module's own short-lived buffers come from the system allocator: going through
    // zmalloc costs a malloc_usable_size per call, which was a third of a PUSH. What the module
    // stores in Redis (keys, values) is Redis's memory as always.
    allocator: (std::alloc::System, std::alloc::System),
    data_types: [],
    init: init,
    commands: [],
    configurations: [
        i64: [
            ["lock-ms", &LOCK_MS, 30_000, 1, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["guard-interval-ms", &GUARD_INTERVAL_MS, 3_000, 1, 86_400_000, ConfigurationFlags::DEFAULT, on_guard_interval_changed()],
            ["max-attempts", &MAX_ATTEMPTS, 5, 1, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["backoff-ms", &BACKOFF_MS, 1_000, 0, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["backoff-max-ms", &BACKOFF_MAX_MS, 3_600_000, 0, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["dedup-window-ms", &DEDUP_WINDOW_MS, 3_600_000, 0, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["max-fetch-count", &MAX_FETCH_COUNT, 1_000, 1, 1_000_000, ConfigurationFlags::DEFAULT, None],
            ["lua-instruction-budget", &LUA_INSTRUCTION_BUDGET, 500_000_000, 10_000, MAX, ConfigurationFlags::DEFAULT, None],
        ],
        string: [],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
