//! The Lua core inside the module: lua/rmq.lua (the Lua edition itself) runs through mlua for
//! the commands that are not on the hot path, so their logic is written once.
//!
//! The bridge gives the script what Redis's own Lua gives it: `redis.call` / `redis.pcall`
//! (through RM_Call with `!`, so every write replicates as the plain command it is, just as
//! effects replication does for functions), `redis.error_reply`, `redis.status_reply`,
//! `redis.log`, `cmsgpack`, and Redis's reply conversion rules. A Lua fault becomes
//! `ERR internal error` (logged), never a traceback.
//!
//! A command runs within two budgets, Lua instructions (`rmq.lua-instruction-budget`) and
//! time (`rmq.lua-time-budget-ms`), so nothing it does can hang Redis. Redis's own Lua cannot
//! undo a write, and neither can this one, so a command is stopped only where stopping leaves
//! nothing half done: before its first `redis.call`, or at a checkpoint, which the library
//! calls between two whole message moves (`redis.rmq_checkpoint`). Past the budget with writes
//! since the last checkpoint, it runs on to the next one; only a command that runs far past
//! it (four times, a bug) is stopped wherever it is.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use redis_module::raw;
use rmq_core::settings::NAMES;
use rmq_core::{Error, Result};

use crate::config;
use crate::ffi::{self, reply_array, reply_bulk, reply_int, reply_map, reply_null, Ctx, RStr};

const SOURCE: &str = include_str!("../lua/rmq.lua");
/// The instruction budget (`rmq.lua-instruction-budget`) is counted in steps of this many.
const HOOK_STEP: u32 = 1_000;

struct Core {
    lua: Lua,
    functions: HashMap<String, Function>,
}

thread_local! {
    // Redis runs commands on one thread: one Lua state, created at first use.
    static CORE: RefCell<Option<Core>> = const { RefCell::new(None) };
    static CURRENT: Cell<Ctx> = const { Cell::new(std::ptr::null_mut()) };
    static BUDGET: Cell<Budget> = const { Cell::new(Budget::NONE) };
}

/// What the running command has spent, and whether it may be stopped where it is.
#[derive(Clone, Copy)]
struct Budget {
    instructions: u64,
    started: Option<Instant>,
    /// A `redis.call` ran since the last checkpoint: stopping now could leave a move half done.
    in_move: bool,
}

impl Budget {
    const NONE: Budget = Budget { instructions: 0, started: None, in_move: false };

    /// How far past its budgets the command is: 0 within them, 1 past, 4 far past.
    fn overrun(&self) -> u64 {
        let by_count = self.instructions / config::lua_instruction_budget().max(1);
        let limit = Duration::from_millis(config::lua_time_budget_ms());
        let by_time = self.started.map_or(0, |t| (t.elapsed().as_nanos() / limit.as_nanos().max(1)) as u64);
        by_count.max(by_time)
    }
}

/// How far past a budget a command may run on to its next checkpoint (a bug otherwise).
const RUNAWAY: u64 = 4;

fn budget_mut(f: impl FnOnce(&mut Budget)) {
    BUDGET.with(|b| {
        let mut v = b.get();
        f(&mut v);
        b.set(v);
    });
}

fn stopped() -> mlua::Error {
    mlua::Error::runtime("rmq: command stopped at rmq.lua-instruction-budget or rmq.lua-time-budget-ms")
}

fn setup() -> mlua::Result<Core> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::default())?;
    crate::msgpack_lua::install(&lua)?;
    let registered: Table = lua.create_table()?;
    let redis = lua.create_table()?;
    {
        let registered = registered.clone();
        redis.set(
            "register_function",
            lua.create_function(move |_, (a, b): (Value, Option<Function>)| {
                let (name, f) = match (a, b) {
                    (Value::Table(def), _) => (def.get::<String>("function_name")?, def.get::<Function>("callback")?),
                    (Value::String(name), Some(f)) => (name.to_str()?.to_string(), f),
                    _ => return Err(mlua::Error::runtime("register_function: bad arguments")),
                };
                registered.set(name, f)
            })?,
        )?;
    }
    redis.set("__call", lua.create_function(redis_call)?)?;
    redis.set(
        "error_reply",
        lua.create_function(|lua, s: mlua::LuaString| {
            let t = lua.create_table()?;
            t.set("err", s)?;
            Ok(t)
        })?,
    )?;
    redis.set(
        "status_reply",
        lua.create_function(|lua, s: mlua::LuaString| {
            let t = lua.create_table()?;
            t.set("ok", s)?;
            Ok(t)
        })?,
    )?;
    redis.set(
        "log",
        lua.create_function(|_, (_level, msg): (Value, mlua::LuaString)| {
            ffi::log(CURRENT.with(|c| c.get()), c"warning", &msg.to_string_lossy());
            Ok(())
        })?,
    )?;
    for (i, name) in ["LOG_DEBUG", "LOG_VERBOSE", "LOG_NOTICE", "LOG_WARNING"].iter().enumerate() {
        redis.set(*name, i)?;
    }
    // Between two whole message moves: the place where a command past its budget stops.
    redis.set(
        "rmq_checkpoint",
        lua.create_function(|_, ()| {
            let b = BUDGET.with(|b| b.get());
            if b.overrun() >= 1 {
                return Err(stopped());
            }
            budget_mut(|b| b.in_move = false);
            Ok(())
        })?,
    )?;
    // The node's settings (CONFIG SET rmq.*), which the Lua edition replaces by SPEC defaults.
    redis.set(
        "rmq_node_defaults",
        lua.create_function(|lua, ()| {
            let node = config::node_settings();
            let t = lua.create_table()?;
            for name in NAMES {
                t.set(name, node.get(name) as f64)?;
            }
            t.set("max-fetch-count", config::max_fetch_count() as f64)?;
            Ok(t)
        })?,
    )?;
    lua.globals().set("redis", redis)?;
    // redis.call raises the error reply as Lua error value, as Redis does; pcall returns it.
    lua.load(
        r#"
        local raw = redis.__call
        redis.pcall = raw
        redis.call = function(...)
            local r = raw(...)
            if type(r) == 'table' and r.err then error(r, 2) end
            return r
        end
        "#,
    )
    .set_name("rmq-bridge")
    .exec()?;
    // The library's first line (`#!lua name=rmq`) is Redis's header, not Lua.
    let body = SOURCE.strip_prefix("#!").map_or(SOURCE.to_string(), |rest| format!("--{rest}"));
    lua.load(&body).set_name("rmq.lua").exec()?;
    let mut functions = HashMap::new();
    for pair in registered.pairs::<String, Function>() {
        let (name, f) = pair?;
        functions.insert(name, f);
    }
    lua.set_hook(HookTriggers::new().every_nth_instruction(HOOK_STEP), |_lua, _debug| {
        budget_mut(|b| b.instructions += HOOK_STEP as u64);
        let b = BUDGET.with(|b| b.get());
        let over = b.overrun();
        if (over >= 1 && !b.in_move) || over >= RUNAWAY {
            return Err(stopped());
        }
        Ok(VmState::Continue)
    })?;
    Ok(Core { lua, functions })
}

/// A Lua value as a command argument, as Redis's Lua converts it.
fn arg_bytes(v: &Value) -> mlua::Result<Vec<u8>> {
    Ok(match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Integer(i) => i.to_string().into_bytes(),
        Value::Number(n) if *n == n.trunc() && n.abs() < 1e17 => format!("{}", *n as i64).into_bytes(),
        Value::Number(n) => format!("{n}").into_bytes(),
        _ => return Err(mlua::Error::runtime("Lua redis lib command arguments must be strings or integers")),
    })
}

/// Whether a command the library calls changes data (a stop after it, before the move's
/// other writes, would leave the move half done).
fn writes(name: &[u8]) -> bool {
    const READS: [&[u8]; 19] = [
        b"TIME",
        b"LLEN",
        b"HLEN",
        b"ZCOUNT",
        b"XLEN",
        b"SCAN",
        b"LRANGE",
        b"LINDEX",
        b"ZCARD",
        b"ZRANGE",
        b"ZRANGEBYSCORE",
        b"ZSCORE",
        b"HGET",
        b"HGETALL",
        b"HMGET",
        b"EXISTS",
        b"XRANGE",
        b"XREVRANGE",
        b"TYPE",
    ];
    !READS.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// `redis.pcall`: runs a command through RM_Call and converts the reply for Lua.
fn redis_call(lua: &Lua, args: MultiValue) -> mlua::Result<Value> {
    let ctx = CURRENT.with(|c| c.get());
    if ctx.is_null() {
        return Err(mlua::Error::runtime("redis.call outside a command"));
    }
    let mut it = args.iter();
    let name = arg_bytes(it.next().ok_or_else(|| mlua::Error::runtime("Please specify at least one argument for this redis lib call"))?)?;
    if writes(&name) {
        budget_mut(|b| b.in_move = true);
    }
    let rest: Vec<RStr> = it.map(|v| arg_bytes(v).map(|b| RStr::new(ctx, &b))).collect::<mlua::Result<_>>()?;
    let mut ptrs: Vec<*mut raw::RedisModuleString> = rest.iter().map(|s| s.ptr).collect();
    let cname = std::ffi::CString::new(name).map_err(|_| mlua::Error::runtime("bad command name"))?;
    // SAFETY: "!v" with an array of live strings owned by `rest`; the reply is freed below.
    let reply = unsafe { raw::RedisModule_Call.unwrap()(ctx, cname.as_ptr(), c"!v".as_ptr(), ptrs.as_mut_ptr(), ptrs.len()) };
    if reply.is_null() {
        let t = lua.create_table()?;
        t.set("err", "ERR unknown command or wrong number of arguments, or a key outside this node")?;
        return Ok(Value::Table(t));
    }
    let v = convert_reply(lua, reply);
    // SAFETY: the reply RM_Call gave, converted and freed once.
    unsafe { raw::RedisModule_FreeCallReply.unwrap()(reply) };
    v
}

fn convert_reply(lua: &Lua, r: *mut raw::RedisModuleCallReply) -> mlua::Result<Value> {
    // SAFETY (this function): `r` is a live call reply or one of its elements.
    let t = unsafe { raw::RedisModule_CallReplyType.unwrap()(r) };
    let bytes = || {
        let mut len = 0usize;
        let p = unsafe { raw::RedisModule_CallReplyStringPtr.unwrap()(r, &mut len) };
        if p.is_null() {
            Vec::new()
        } else {
            unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec()
        }
    };
    Ok(match t as isize {
        x if x == raw::REDISMODULE_REPLY_STRING => Value::String(lua.create_string(bytes())?),
        x if x == raw::REDISMODULE_REPLY_INTEGER => Value::Number(unsafe { raw::RedisModule_CallReplyInteger.unwrap()(r) } as f64),
        x if x == raw::REDISMODULE_REPLY_ERROR => {
            let t = lua.create_table()?;
            t.set("err", lua.create_string(bytes())?)?;
            Value::Table(t)
        }
        x if x == raw::REDISMODULE_REPLY_ARRAY => {
            let n = unsafe { raw::RedisModule_CallReplyLength.unwrap()(r) };
            let t = lua.create_table_with_capacity(n, 0)?;
            for i in 0..n {
                let e = unsafe { raw::RedisModule_CallReplyArrayElement.unwrap()(r, i) };
                t.raw_set(i + 1, convert_reply(lua, e)?)?;
            }
            Value::Table(t)
        }
        _ => Value::Boolean(false),
    })
}

/// Writes a Lua value as the reply, by Redis's rules for scripts.
fn reply_value(ctx: Ctx, v: &Value) -> mlua::Result<()> {
    match v {
        Value::Nil | Value::Boolean(false) => reply_null(ctx),
        Value::Boolean(true) => reply_int(ctx, 1),
        Value::Integer(i) => reply_int(ctx, *i),
        Value::Number(n) => reply_int(ctx, *n as i64),
        Value::String(s) => reply_bulk(ctx, &s.as_bytes()),
        Value::Table(t) => {
            if let Some(err) = t.raw_get::<Option<mlua::LuaString>>("err")? {
                ffi::reply_error(ctx, &err.to_string_lossy());
            } else if let Some(ok) = t.raw_get::<Option<mlua::LuaString>>("ok")? {
                let c = std::ffi::CString::new(ok.as_bytes().to_vec()).unwrap_or_default();
                // SAFETY: a live command context; the status text is copied into the reply.
                unsafe { raw::RedisModule_ReplyWithSimpleString.unwrap()(ctx, c.as_ptr()) };
            } else if let Some(map) = t.raw_get::<Option<Table>>("map")? {
                // Counted first, then replied one pair at a time: holding every value at once
                // would exhaust mlua's reference stack on large replies.
                let n = map.pairs::<Value, Value>().count();
                reply_map(ctx, n);
                for pair in map.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    reply_value(ctx, &k)?;
                    reply_value(ctx, &v)?;
                }
            } else {
                // An array stops at the first nil, as in Redis.
                let mut n = 0;
                while !matches!(t.raw_get::<Value>(n + 1)?, Value::Nil) {
                    n += 1;
                }
                reply_array(ctx, n);
                for i in 1..=n {
                    reply_value(ctx, &t.raw_get::<Value>(i)?)?;
                }
            }
        }
        _ => reply_null(ctx),
    }
    Ok(())
}

/// Runs `rmq_<name>` of lua/rmq.lua with the command's key and arguments, and replies.
pub fn run(ctx: Ctx, function: &str, keys: &[&[u8]], args: &[&[u8]]) -> Result<()> {
    call(ctx, function, keys, args, |v| reply_value(ctx, v))
}

/// Runs `rmq_<name>` for its integer reply, from a context with no client to reply to (a
/// command done in slices); an error reply of the library comes back as [`Error::Reply`].
pub fn run_for_integer(ctx: Ctx, function: &str, keys: &[&[u8]], args: &[&[u8]]) -> Result<i64> {
    call(ctx, function, keys, args, |v| {
        Ok(match v {
            Value::Integer(i) => Ok(*i),
            Value::Number(n) => Ok(*n as i64),
            Value::Table(t) => match t.raw_get::<Option<mlua::LuaString>>("err")? {
                Some(err) => Err(Error::Reply(err.to_string_lossy())),
                None => Err(Error::Internal),
            },
            _ => Err(Error::Internal),
        })
    })?
}

/// Runs `rmq_<name>` and hands its value to `take`, within the Lua budgets.
fn call<T>(ctx: Ctx, function: &str, keys: &[&[u8]], args: &[&[u8]], take: impl FnOnce(&Value) -> mlua::Result<T>) -> Result<T> {
    // Clone the handles out of the RefCell before calling: the call may re-enter (RM_Call of
    // another RMQ command) and must not find the cell borrowed.
    let (lua, f) = CORE
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                match setup() {
                    Ok(core) => *slot = Some(core),
                    Err(e) => {
                        ffi::log(ctx, c"warning", &format!("rmq: the Lua core did not load: {e}"));
                        return None;
                    }
                }
            }
            let core = slot.as_ref()?;
            Some((core.lua.clone(), core.functions.get(function)?.clone()))
        })
        .ok_or(Error::Internal)?;
    let to_table = |items: &[&[u8]]| -> mlua::Result<Table> {
        let t = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, b) in items.iter().enumerate() {
            t.raw_set(i + 1, lua.create_string(b)?)?;
        }
        Ok(t)
    };
    let previous = CURRENT.with(|c| c.replace(ctx));
    let outer = BUDGET.with(|b| b.replace(Budget { started: Some(Instant::now()), ..Budget::NONE }));
    let result = (|| -> mlua::Result<Value> { f.call::<Value>((to_table(keys)?, to_table(args)?)) })();
    CURRENT.with(|c| c.set(previous));
    BUDGET.with(|b| b.set(outer));
    match result.and_then(|v| take(&v)) {
        Ok(v) => Ok(v),
        Err(e) if e.to_string().contains("rmq: command stopped") => {
            ffi::log(ctx, c"warning", &format!("rmq: {function} stopped at its budget"));
            Err(Error::OverBudget)
        }
        Err(e) => {
            ffi::log(ctx, c"warning", &format!("rmq: {function} failed in Lua: {e}"));
            Err(Error::Internal)
        }
    }
}
