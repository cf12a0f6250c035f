//! librmq: the RMQ.* Redis module — a reliable message queue inside Redis.
//!
//! This file is the table of contents: every command with its syntax, flags and key use, the
//! module's settings, and what starts at load. The logic lives in `rmq-core` (no FFI there);
//! the glue is here:
//! - `commands`: the native commands (PUSH FETCH ACK NACK TOUCH RECOVER STATS GET DEL REQUEUE
//!   QUEUES); PEEK PURGE CONFIG LOG REPLAY run lua/rmq.lua through `lua` (mlua), the Lua
//!   edition itself
//! - `block`: FETCH … BLOCK on the ready key
//! - `guard` and `schedule`: the timer that reclaims expired locks and promotes due messages,
//!   and when each queue next has such work
//! - `store`: the queue logic's `Store` on Redis keys, replicating effects as plain commands
//! - `registry`: which queues this node holds; `events`: keyspace and server events;
//!   `info`: INFO rmq; `config`: module settings; `settings_cache`: per-queue settings
//! - `acl`: ACL checks beyond key specs; `command_info`: COMMAND INFO / DOCS
//! - `cluster`: refuses commands (TRYAGAIN) while a queue's slot moves between nodes
//! - `propagation`: whether effects must be built for replicas and the AOF at all
//! - `safety`: no panic crosses into Redis

mod acl;
mod block;
mod cluster;
mod command_info;
mod commands;
mod config;
mod events;
mod ffi;
mod guard;
mod info;
mod key_names;
mod lua;
mod msgpack_lua;
mod propagation;
mod registry;
mod safety;
mod schedule;
mod settings_cache;
mod sliced;
mod store;

use std::ffi::CStr;
use std::os::raw::c_int;

use redis_module::configuration::ConfigurationFlags;
use redis_module::{raw, redis_module, Context, RedisString, Status};

use crate::command_info::{block as group, integer, one_of, queue, string, token, unix_time, Access, Doc};
use crate::config::*;
use crate::ffi::Ctx;

type Argv = *mut *mut raw::RedisModuleString;
type Handler = extern "C" fn(Ctx, Argv, c_int) -> c_int;

macro_rules! entry {
    ($fn_name:ident, $name:literal, $handler:path) => {
        extern "C" fn $fn_name(ctx: Ctx, argv: Argv, argc: c_int) -> c_int {
            safety::command(ctx, argv, argc, $name, $handler)
        }
    };
}

/// A command served by lua/rmq.lua's `rmq_<name>` through the module's Lua core.
macro_rules! lua_entry {
    ($fn_name:ident, $name:literal, $function:literal) => {
        extern "C" fn $fn_name(ctx: Ctx, argv: Argv, argc: c_int) -> c_int {
            safety::command(ctx, argv, argc, $name, |ctx, args| commands::lua_command(ctx, args, $function, $name))
        }
    };
}

entry!(rmq_push, "rmq.push", commands::push);
entry!(rmq_fetch, "rmq.fetch", commands::fetch);
entry!(rmq_ack, "rmq.ack", commands::ack);
entry!(rmq_nack, "rmq.nack", commands::nack);
entry!(rmq_touch, "rmq.touch", commands::touch);
entry!(rmq_recover, "rmq.recover", commands::recover);
entry!(rmq_stats, "rmq.stats", commands::stats);
entry!(rmq_get, "rmq.get", commands::get);
entry!(rmq_del, "rmq.del", commands::del);
entry!(rmq_requeue, "rmq.requeue", commands::requeue);
entry!(rmq_queues, "rmq.queues", commands::queues);
lua_entry!(rmq_peek, "rmq.peek", "rmq_peek");
entry!(rmq_purge, "rmq.purge", commands::purge);
lua_entry!(rmq_config, "rmq.config", "rmq_config");
lua_entry!(rmq_log, "rmq.log", "rmq_log");
entry!(rmq_replay, "rmq.replay", commands::replay);

/// Every command: name, handler, Redis flags, and its documentation. Arity is -1 for all:
/// the commands check their own arity, before the queue name, with the same error text as
/// Redis and as the Lua edition, and at the same moment (inside MULTI: at EXEC, as FCALL).
fn commands() -> Vec<(&'static CStr, Handler, &'static CStr, Doc)> {
    let state = || one_of("state", ["READY", "DELAYED", "INFLIGHT", "FAILED", "ERRORS"].into_iter().map(token).collect());
    vec![
        (
            // RMQ.PUSH q body [ID id] [TAG tag] [KEY key] [HEADER name value]… [DELAY ms | AT unix-ms]
            c"rmq.push",
            rmq_push,
            c"write deny-oom fast",
            Doc {
                summary:
                    "Stores a message, ready at once or delayed; a producer id already seen within the dedup window is not stored twice",
                complexity: "O(1), O(log n) with DELAY, AT or ID",
                access: Access::Insert,
                args: vec![
                    queue(),
                    string("body"),
                    string("id").after("ID").optional(),
                    string("tag").after("TAG").optional(),
                    string("key").after("KEY").optional(),
                    group("header", vec![string("name"), string("value")]).after("HEADER").optional().multiple_token(),
                    one_of("when", vec![integer("ms").after("DELAY"), unix_time("unix-ms").after("AT")]).optional(),
                ],
            },
        ),
        (
            // RMQ.FETCH q [COUNT n] [LOCK ms] [BLOCK ms] [CONSUMER name]
            c"rmq.fetch",
            rmq_fetch,
            c"write blocking",
            Doc {
                summary: "Hands out ready messages, each locked until a deadline, with a receipt for ACK, NACK and TOUCH",
                complexity: "O(COUNT log n), plus the due and expired messages it moves first (at most 1000 of each)",
                access: Access::Update,
                args: vec![
                    queue(),
                    integer("count").after("COUNT").optional(),
                    integer("ms").after("LOCK").optional(),
                    integer("ms").after("BLOCK").optional(),
                    string("name").after("CONSUMER").optional(),
                ],
            },
        ),
        (
            // RMQ.ACK q receipt [receipt …]
            c"rmq.ack",
            rmq_ack,
            c"write fast",
            Doc {
                summary: "Deletes delivered messages for good; stale receipts count 0",
                complexity: "O(log n) per receipt",
                access: Access::Delete,
                args: vec![queue(), string("receipt").multiple()],
            },
        ),
        (
            // RMQ.NACK q receipt [RETRY [DELAY ms] | FAIL | ERROR] [REASON text]
            c"rmq.nack",
            rmq_nack,
            c"write fast",
            Doc {
                summary: "Gives a delivered message back: retried with backoff, to failed, or to errors",
                complexity: "O(log n)",
                access: Access::Update,
                args: vec![
                    queue(),
                    string("receipt"),
                    one_of(
                        "outcome",
                        vec![group("retry", vec![token("RETRY"), integer("ms").after("DELAY").optional()]), token("FAIL"), token("ERROR")],
                    )
                    .optional(),
                    string("text").after("REASON").optional(),
                ],
            },
        ),
        (
            // RMQ.TOUCH q receipt [LOCK ms]
            c"rmq.touch",
            rmq_touch,
            c"write fast",
            Doc {
                summary: "Extends a delivered message's lock",
                complexity: "O(log n)",
                access: Access::Update,
                args: vec![queue(), string("receipt"), integer("ms").after("LOCK").optional()],
            },
        ),
        (
            // RMQ.RECOVER q [EXPIRED] [FAILED] [ERRORS]
            c"rmq.recover",
            rmq_recover,
            c"write blocking",
            Doc {
                summary: "Puts expired in-flight, failed and errored messages back to ready",
                complexity: "O(n) of the messages moved; above 10,000 to look at, in slices of 1 ms between which Redis serves other clients",
                access: Access::Update,
                args: vec![queue(), token("EXPIRED").optional(), token("FAILED").optional(), token("ERRORS").optional()],
            },
        ),
        (
            // RMQ.STATS q
            c"rmq.stats",
            rmq_stats,
            c"readonly fast",
            Doc {
                summary: "Counts of a queue: messages per state, and what happened to them",
                complexity: "O(1)",
                access: Access::Read,
                args: vec![queue()],
            },
        ),
        (
            // RMQ.PEEK q [READY|DELAYED|INFLIGHT|FAILED|ERRORS] [START n] [COUNT n]
            c"rmq.peek",
            rmq_peek,
            c"readonly",
            Doc {
                summary: "Shows messages of one state without changing anything",
                complexity: "O(START + COUNT) for lists, O(log n + COUNT) for sorted sets",
                access: Access::Read,
                args: vec![queue(), state().optional(), integer("n").after("START").optional(), integer("n").after("COUNT").optional()],
            },
        ),
        (
            // RMQ.GET q id
            c"rmq.get",
            rmq_get,
            c"readonly blocking",
            Doc {
                summary: "Finds a message by id in any state",
                complexity: "O(n) of the queue's messages, a native scan; above 10,000 messages, in slices of 1 ms between which Redis serves other clients",
                access: Access::Read,
                args: vec![queue(), string("id")],
            },
        ),
        (
            // RMQ.DEL q id [id …]
            c"rmq.del",
            rmq_del,
            c"write blocking",
            Doc {
                summary: "Deletes messages by id from any state",
                complexity: "O(n) of the queue's messages, a native scan; above 10,000 messages, in slices of 1 ms between which Redis serves other clients",
                access: Access::Delete,
                args: vec![queue(), string("id").multiple()],
            },
        ),
        (
            // RMQ.REQUEUE q id [id …]
            c"rmq.requeue",
            rmq_requeue,
            c"write blocking",
            Doc {
                summary: "Moves delayed, failed or errored messages back to ready by id",
                complexity: "O(n) of the queue's messages, a native scan; above 10,000 messages, in slices of 1 ms between which Redis serves other clients",
                access: Access::Update,
                args: vec![queue(), string("id").multiple()],
            },
        ),
        (
            // RMQ.PURGE q READY|DELAYED|INFLIGHT|FAILED|ERRORS|ALL
            c"rmq.purge",
            rmq_purge,
            c"write blocking",
            Doc {
                summary: "Deletes every message of one state, or of all",
                complexity: "O(n) of the messages deleted",
                access: Access::Delete,
                args: vec![
                    queue(),
                    one_of("state", ["READY", "DELAYED", "INFLIGHT", "FAILED", "ERRORS", "ALL"].into_iter().map(token).collect()),
                ],
            },
        ),
        (
            // RMQ.CONFIG q GET [name] · RMQ.CONFIG q SET name value [name value …]
            // Declared read-only so that GET works for read-only users and on replicas; SET
            // checks write permission and the node's role itself (acl::check_config).
            c"rmq.config",
            rmq_config,
            c"may-replicate",
            Doc {
                summary: "Reads or sets a queue's settings",
                complexity: "O(1)",
                access: Access::Read,
                args: vec![
                    queue(),
                    one_of(
                        "action",
                        vec![
                            group("get", vec![token("GET"), string("name").optional()]),
                            group("set", vec![token("SET"), group("setting", vec![string("name"), string("value")]).multiple()]),
                        ],
                    ),
                ],
            },
        ),
        (
            // RMQ.QUEUES
            c"rmq.queues",
            rmq_queues,
            c"readonly",
            Doc {
                summary: "Lists the queues this node holds that the caller may read",
                complexity: "O(N log N) of the node's queues",
                access: Access::None,
                args: Vec::new(),
            },
        ),
        (
            // RMQ.LOG q [FROM offset] [COUNT n]
            c"rmq.log",
            rmq_log,
            c"readonly",
            Doc {
                summary: "Reads the queue's message log",
                complexity: "O(N) of the log",
                access: Access::Read,
                args: vec![queue(), integer("offset").after("FROM").optional(), integer("n").after("COUNT").optional()],
            },
        ),
        (
            // RMQ.REPLAY q FROM offset [TO offset]
            c"rmq.replay",
            rmq_replay,
            c"write deny-oom blocking",
            Doc {
                summary: "Pushes copies of logged messages again",
                complexity: "O(log N) short reads of the log to find FROM, then the entries up to TO; a long range in slices of 1 ms between which Redis serves other clients",
                access: Access::Insert,
                args: vec![queue(), integer("offset").after("FROM"), integer("offset").after("TO").optional()],
            },
        ),
    ]
}

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    let raw_ctx = ctx.ctx;
    // The store signals the keys it changed itself (store.rs), so that keys opened for
    // writing but left as they were do not count as modified for WATCH.
    // SAFETY: the OnLoad context.
    unsafe { raw::RedisModule_SetModuleOptions.unwrap()(raw_ctx, raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as i32) };
    for (name, handler, flags, doc) in commands() {
        // SAFETY: the OnLoad context; names and flags are static C strings. Key positions
        // come from the key specs set right after (0, 0, 0 here, as Redis asks then).
        let ok = unsafe { raw::RedisModule_CreateCommand.unwrap()(raw_ctx, name.as_ptr(), Some(handler), flags.as_ptr(), 0, 0, 0) };
        // SAFETY: the command was just created under this name.
        let command = unsafe { raw::RedisModule_GetCommand.unwrap()(raw_ctx, name.as_ptr()) };
        if ok != raw::REDISMODULE_OK as c_int || command.is_null() || !command_info::set(command, &doc) {
            ctx.log_warning(&format!("rmq: could not register {}", name.to_string_lossy()));
            return Status::Err;
        }
    }
    events::subscribe(raw_ctx);
    propagation::start(raw_ctx);
    // SAFETY: the OnLoad context; the callback lives as long as the module.
    unsafe { raw::RedisModule_RegisterInfoFunc.unwrap()(raw_ctx, Some(info::info)) };
    guard::start(raw_ctx);
    Status::Ok
}

type OnChanged = Option<Box<dyn Fn(&redis_module::configuration::ConfigurationContext, &str, &'static std::sync::atomic::AtomicI64)>>;

/// A node setting changed: queues' cached settings are rebuilt from it, and the guard looks
/// at every queue again (a new dedup window changes when it has work).
fn on_setting_changed() -> OnChanged {
    Some(Box::new(|_, _, _| {
        settings_cache::clear();
        schedule::all_due(registry::all(), ffi::now_ms());
    }))
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
            ["lock-ms", &LOCK_MS, DEFAULT_LOCK_MS, 1, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["guard-interval-ms", &GUARD_INTERVAL_MS, DEFAULT_GUARD_INTERVAL_MS, 1, 86_400_000, ConfigurationFlags::DEFAULT, on_guard_interval_changed()],
            ["max-attempts", &MAX_ATTEMPTS, DEFAULT_MAX_ATTEMPTS, 1, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["backoff-ms", &BACKOFF_MS, DEFAULT_BACKOFF_MS, 0, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["backoff-max-ms", &BACKOFF_MAX_MS, DEFAULT_BACKOFF_MAX_MS, 0, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["dedup-window-ms", &DEDUP_WINDOW_MS, DEFAULT_DEDUP_WINDOW_MS, 0, MAX, ConfigurationFlags::DEFAULT, on_setting_changed()],
            ["max-fetch-count", &MAX_FETCH_COUNT, DEFAULT_MAX_FETCH_COUNT, 1, 1_000_000, ConfigurationFlags::DEFAULT, None],
            ["lua-instruction-budget", &LUA_INSTRUCTION_BUDGET, DEFAULT_LUA_INSTRUCTION_BUDGET, 10_000, MAX, ConfigurationFlags::DEFAULT, None],
            ["lua-time-budget-ms", &LUA_TIME_BUDGET_MS, DEFAULT_LUA_TIME_BUDGET_MS, 1, 3_600_000, ConfigurationFlags::DEFAULT, None],
        ],
        string: [],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
