//! The native commands: parse (rmq_core::args), run the queue logic (rmq_core::queue) on a
//! [`RedisStore`], and shape the reply. Replies follow docs/commands.md.

use redis_module::raw;
use rmq_core::args::{self, check_queue};
use rmq_core::queue::{Delivery, Queue};
use rmq_core::{Error, Result};

use crate::config;
use crate::ffi::{self, reply_array, reply_bulk, reply_int, reply_map, reply_null, Ctx};
use crate::registry;
use crate::settings_cache;
use crate::store::RedisStore;

/// The queue logic on `q`'s keys, with its settings, at the command's `now`.
fn queue_of<'s, 'q>(ctx: Ctx, q: &[u8], store: &'s mut RedisStore<'q>) -> Queue<'s, RedisStore<'q>> {
    let set = settings_cache::get(ctx, q, store);
    Queue::with_settings(store, set, ffi::now_ms())
}

/// Checks the arity and the queue name, in that order, and registers the queue for the guard.
fn queue<'a>(argv: &[&'a [u8]], min_args: usize, name: &'static str) -> Result<&'a [u8]> {
    if argv.len() < min_args {
        return Err(Error::WrongArity(name));
    }
    check_queue(argv[1])?;
    Ok(argv[1])
}

/// RMQ.PUSH q body [ID id] [TAG tag] [KEY key] [HEADER name value]… [DELAY ms | AT unix-ms]
/// Reply: the id (also for a duplicate within the dedup window); `ERR queue full`.
pub fn push(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(argv, 3, "rmq.push")?;
    let req = args::push(&argv[2..])?;
    registry::note(ctx, q);
    let mut store = RedisStore::new(ctx, q);
    let outcome = queue_of(ctx, q, &mut store).push(&req)?;
    reply_bulk(ctx, outcome.id());
    Ok(())
}

/// RMQ.FETCH q [COUNT n] [LOCK ms] [BLOCK ms] [CONSUMER name]
/// Reply: an array of message maps, or null; with BLOCK, waits on `msg:{q}`.
pub fn fetch(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(argv, 2, "rmq.fetch")?;
    let req = args::fetch(&argv[2..], config::max_fetch_count())?;
    registry::note(ctx, q);
    let got = fetch_now(ctx, q, req.count, req.lock, req.consumer);
    if !got.is_empty() {
        reply_deliveries(ctx, &got);
        return Ok(());
    }
    let in_script = ffi::ctx_flags(ctx) & (raw::REDISMODULE_CTX_FLAGS_MULTI | raw::REDISMODULE_CTX_FLAGS_LUA) != 0;
    match req.block {
        Some(ms) if !in_script => {
            crate::block::wait(ctx, q, ms, req.count, req.lock, req.consumer);
        }
        _ => reply_null(ctx),
    }
    Ok(())
}

pub fn fetch_now(ctx: Ctx, q: &[u8], count: u64, lock: Option<u64>, consumer: &[u8]) -> Vec<Delivery> {
    let mut store = RedisStore::new(ctx, q);
    queue_of(ctx, q, &mut store).fetch(count, lock, consumer)
}

pub fn reply_deliveries(ctx: Ctx, got: &[Delivery]) {
    reply_array(ctx, got.len());
    for d in got {
        let l = &d.layout;
        reply_map(ctx, 10);
        reply_bulk(ctx, b"id");
        reply_bulk(ctx, &d.message_id());
        reply_bulk(ctx, b"body");
        reply_bulk(ctx, d.field(&l.body));
        reply_bulk(ctx, b"receipt");
        reply_bulk(ctx, &d.receipt);
        reply_bulk(ctx, b"attempt");
        reply_int(ctx, l.attempt as i64);
        reply_bulk(ctx, b"tag");
        reply_bulk(ctx, d.field(&l.tag));
        reply_bulk(ctx, b"key");
        reply_bulk(ctx, d.field(&l.key));
        reply_bulk(ctx, b"headers");
        reply_map(ctx, l.headers.len());
        for (n, v) in &l.headers {
            reply_bulk(ctx, d.field(n));
            reply_bulk(ctx, d.field(v));
        }
        reply_bulk(ctx, b"created");
        reply_int(ctx, l.created as i64);
        reply_bulk(ctx, b"offset");
        reply_int(ctx, l.offset as i64);
        reply_bulk(ctx, b"deadline");
        reply_int(ctx, d.deadline as i64);
    }
}

/// RMQ.ACK q receipt [receipt …]
/// Reply: how many receipts were current (stale ones count 0).
pub fn ack(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(argv, 3, "rmq.ack")?;
    let receipts = args::ack(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let n = queue_of(ctx, q, &mut store).ack(&receipts);
    reply_int(ctx, n as i64);
    Ok(())
}

/// RMQ.NACK q receipt [RETRY [DELAY ms] | FAIL | ERROR] [REASON text]
/// Reply: 1, or 0 for a stale receipt.
pub fn nack(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(argv, 3, "rmq.nack")?;
    let req = args::nack(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let done = queue_of(ctx, q, &mut store).nack(req.receipt, req.action, req.reason);
    reply_int(ctx, done as i64);
    Ok(())
}

/// RMQ.TOUCH q receipt [LOCK ms]
/// Reply: the new deadline (unix ms), or 0 for a stale receipt.
pub fn touch(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(argv, 3, "rmq.touch")?;
    let req = args::touch(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let deadline = queue_of(ctx, q, &mut store).touch(req.receipt, req.lock);
    reply_int(ctx, deadline.unwrap_or(0) as i64);
    Ok(())
}

/// RMQ.RECOVER q [EXPIRED] [FAILED] [ERRORS]
/// Reply: `[expired, failed, errors]`, how many were taken from each.
pub fn recover(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(argv, 2, "rmq.recover")?;
    let what = args::recover(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let counts = queue_of(ctx, q, &mut store).recover(what);
    reply_array(ctx, 3);
    for c in counts {
        reply_int(ctx, c as i64);
    }
    Ok(())
}

/// RMQ.STATS q
/// Reply: a map of `ready delayed inflight failed errors pushed acked retried dead errored
/// dups offset oldest_ready_ms`.
pub fn stats(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(argv, 2, "rmq.stats")?;
    args::nothing(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let fields = queue_of(ctx, q, &mut store).stats();
    reply_map(ctx, fields.len());
    for (name, v) in fields {
        reply_bulk(ctx, name.as_bytes());
        reply_int(ctx, v as i64);
    }
    Ok(())
}

/// A command served by the Lua core: `rmq_<name>(keys = {q}, args)`, or no key for QUEUES.
/// Whatever it moved to ready wakes blocked FETCHes.
pub fn lua_command(ctx: Ctx, argv: &[&[u8]], function: &str, name: &'static str) -> Result<()> {
    if function == "rmq_queues" {
        return crate::lua::run(ctx, function, &[], &argv[1..]);
    }
    // What each needs after q, checked before the queue name (as lua/rmq.lua's MIN_ARGS).
    let min_args = match function {
        "rmq_get" | "rmq_del" | "rmq_requeue" | "rmq_purge" | "rmq_config" | "rmq_replay" => 1,
        _ => 0,
    };
    let q = queue(argv, 2 + min_args, name)?;
    registry::note(ctx, q);
    crate::lua::run(ctx, function, &[q], &argv[2..])?;
    // REQUEUE and REPLAY make messages ready; CONFIG may resume a paused queue.
    if matches!(function, "rmq_requeue" | "rmq_replay" | "rmq_config") {
        let key = ffi::RStr::new(ctx, &rmq_core::store::Key::Msg.name(q));
        unsafe { raw::RedisModule_SignalKeyAsReady.unwrap()(ctx, key.ptr) };
    }
    Ok(())
}
