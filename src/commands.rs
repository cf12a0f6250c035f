//! The native commands: parse (rmq_core::args), run the queue logic (rmq_core::queue) on a
//! [`RedisStore`], and shape the reply. Replies follow docs/commands.md.

use rmq_core::args::{self, check_queue};
use rmq_core::queue::{Delivery, Found, Purging, Queue, State};
use rmq_core::record::Record;
use rmq_core::store::{Key, Store};
use rmq_core::{Error, Result};

use crate::ffi::{self, reply_array, reply_bulk, reply_int, reply_map, reply_null, Ctx, RStr};
use crate::store::RedisStore;
use crate::{acl, cluster, config, registry, settings_cache, sliced};

/// The queue logic on `q`'s keys, with its settings, at the command's `now`.
pub(crate) fn queue_of<'s, 'q>(ctx: Ctx, q: &[u8], store: &'s mut RedisStore<'q>) -> Queue<'s, RedisStore<'q>> {
    let set = settings_cache::get(ctx, q, store);
    store.set_dedup_window(set.dedup_window_ms);
    Queue::with_settings(store, set, ffi::now_ms())
}

/// Checks the arity and the queue name, in that order, and that the queue's slot is not
/// moving between cluster nodes.
fn queue<'a>(ctx: Ctx, argv: &[&'a [u8]], min_args: usize, name: &'static str) -> Result<&'a [u8]> {
    if argv.len() < min_args {
        return Err(Error::WrongArity(name));
    }
    check_queue(argv[1])?;
    cluster::check_stable(ctx, argv[1])?;
    Ok(argv[1])
}

/// RMQ.PUSH q body [ID id] [TAG tag] [KEY key] [HEADER name value]… [DELAY ms | AT unix-ms]
/// Reply: the id (also for a duplicate within the dedup window); `ERR queue full`.
pub fn push(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.push")?;
    let req = args::push(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let outcome = queue_of(ctx, q, &mut store).push(&req)?;
    reply_bulk(ctx, outcome.id());
    Ok(())
}

/// RMQ.FETCH q [COUNT n] [LOCK ms] [BLOCK ms] [CONSUMER name] [COMPACT]
/// Reply: an array of message maps (arrays with COMPACT), or null; with BLOCK, waits on
/// `msg:{q}`.
pub fn fetch(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 2, "rmq.fetch")?;
    let req = args::fetch(&argv[2..], config::max_fetch_count())?;
    let got = fetch_now(ctx, q, req.count, req.lock, req.consumer)?;
    if !got.is_empty() {
        reply_deliveries(ctx, &got, req.compact);
        return Ok(());
    }
    let in_script =
        ffi::ctx_flags(ctx) & (redis_module::raw::REDISMODULE_CTX_FLAGS_MULTI | redis_module::raw::REDISMODULE_CTX_FLAGS_LUA) != 0;
    match req.block {
        Some(ms) if !in_script => crate::block::wait(ctx, q, ms, &req),
        _ => reply_null(ctx),
    }
    Ok(())
}

pub fn fetch_now(ctx: Ctx, q: &[u8], count: u64, lock: Option<u64>, consumer: &[u8]) -> Result<Vec<Delivery>> {
    let mut store = RedisStore::new(ctx, q);
    queue_of(ctx, q, &mut store).fetch(count, lock, consumer)
}

pub fn reply_deliveries(ctx: Ctx, got: &[Delivery], compact: bool) {
    reply_array(ctx, got.len());
    for d in got {
        let l = &d.layout;
        // COMPACT: the values alone, in the map's order (half the reply calls: the field names
        // were a third of FETCH's cost).
        let name = |n: &[u8]| {
            if !compact {
                reply_bulk(ctx, n)
            }
        };
        if compact {
            reply_array(ctx, 10);
        } else {
            reply_map(ctx, 10);
        }
        name(b"id");
        reply_bulk(ctx, &d.message_id());
        name(b"body");
        reply_bulk(ctx, d.field(&l.body));
        name(b"receipt");
        reply_bulk(ctx, &d.receipt);
        name(b"attempt");
        reply_int(ctx, l.attempt as i64);
        name(b"tag");
        reply_bulk(ctx, d.field(&l.tag));
        name(b"key");
        reply_bulk(ctx, d.field(&l.key));
        name(b"headers");
        if compact {
            reply_array(ctx, 2 * l.headers.len());
        } else {
            reply_map(ctx, l.headers.len());
        }
        for (n, v) in &l.headers {
            reply_bulk(ctx, d.field(n));
            reply_bulk(ctx, d.field(v));
        }
        name(b"created");
        reply_int(ctx, l.created as i64);
        name(b"offset");
        reply_int(ctx, l.offset as i64);
        name(b"deadline");
        reply_int(ctx, d.deadline as i64);
    }
}

/// RMQ.ACK q receipt [receipt …]
/// Reply: how many receipts were current (stale ones count 0).
pub fn ack(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.ack")?;
    let receipts = args::ack(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let n = queue_of(ctx, q, &mut store).ack(&receipts)?;
    reply_int(ctx, n as i64);
    Ok(())
}

/// RMQ.NACK q receipt [RETRY [DELAY ms] | FAIL | ERROR] [REASON text]
/// Reply: 1, or 0 for a stale receipt.
pub fn nack(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.nack")?;
    let req = args::nack(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let done = queue_of(ctx, q, &mut store).nack(req.receipt, req.action, req.reason)?;
    reply_int(ctx, done as i64);
    Ok(())
}

/// RMQ.TOUCH q receipt [LOCK ms]
/// Reply: the new deadline (unix ms), or 0 for a stale receipt.
pub fn touch(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.touch")?;
    let req = args::touch(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    let deadline = queue_of(ctx, q, &mut store).touch(req.receipt, req.lock)?;
    reply_int(ctx, deadline.unwrap_or(0) as i64);
    Ok(())
}

/// RMQ.RECOVER q [EXPIRED] [FAILED] [ERRORS]
/// Reply: `[expired, failed, errors]`, how many were taken from each.
pub fn recover(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 2, "rmq.recover")?;
    let what = args::recover(&argv[2..])?;
    // Many messages to move: in slices, the client blocked meanwhile (see `sliced`).
    if !sliced::at_once(ctx, q, &[Key::Bak, Key::Fai, Key::Err]) {
        RedisStore::reading(ctx, q).check(&Key::ALL)?;
        sliced::start_recover(ctx, q, what);
        return Ok(());
    }
    let mut store = RedisStore::new(ctx, q);
    let counts = queue_of(ctx, q, &mut store).recover(what)?;
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
    let q = queue(ctx, argv, 2, "rmq.stats")?;
    args::nothing(&argv[2..])?;
    let mut store = RedisStore::reading(ctx, q);
    let fields = queue_of(ctx, q, &mut store).stats()?;
    reply_map(ctx, fields.len());
    for (name, v) in fields {
        reply_bulk(ctx, name.as_bytes());
        reply_int(ctx, v as i64);
    }
    Ok(())
}

/// RMQ.GET q id
/// Reply: the first message with that id (ready, delayed, inflight, failed, errors), as a
/// map with its state, or null.
pub fn get(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.get")?;
    let id = args::get(&argv[2..])?;
    if in_slices(ctx, q, &[id], sliced::Kind::Get)? {
        return Ok(());
    }
    let mut store = RedisStore::reading(ctx, q);
    match queue_of(ctx, q, &mut store).get(id)? {
        Some(found) => reply_found(ctx, &found),
        None => reply_null(ctx),
    }
    Ok(())
}

/// A big queue is read in slices (the client blocks meanwhile; see `sliced`): true when the
/// lookup started, after the keys' types were checked.
fn in_slices(ctx: Ctx, q: &[u8], ids: &[&[u8]], kind: sliced::Kind) -> Result<bool> {
    if sliced::at_once(ctx, q, &State::ALL.map(State::key)) {
        return Ok(false);
    }
    RedisStore::reading(ctx, q).check(&Key::ALL)?;
    sliced::start_lookup(ctx, q, ids, kind);
    Ok(true)
}

/// A message found by id, as PEEK and GET show it: the message, its state, and the state's
/// own fields (`due` and the last `error` when delayed, `deadline` and `consumer` in flight,
/// `error` when failed or errored).
pub(crate) fn reply_found(ctx: Ctx, f: &Found) {
    let r: &Record = &f.record;
    let extra = match f.state {
        State::Ready => 0,
        State::Delayed | State::Inflight => 2,
        State::Failed | State::Errors => 1,
    };
    reply_map(ctx, 9 + extra);
    reply_bulk(ctx, b"id");
    reply_bulk(ctx, &r.message_id());
    reply_bulk(ctx, b"body");
    reply_bulk(ctx, &r.body);
    reply_bulk(ctx, b"state");
    reply_bulk(ctx, f.state.name().as_bytes());
    reply_bulk(ctx, b"attempt");
    reply_int(ctx, r.attempt as i64);
    reply_bulk(ctx, b"tag");
    reply_bulk(ctx, &r.tag);
    reply_bulk(ctx, b"key");
    reply_bulk(ctx, &r.key);
    reply_bulk(ctx, b"headers");
    reply_map(ctx, r.headers.len());
    for (n, v) in &r.headers {
        reply_bulk(ctx, n);
        reply_bulk(ctx, v);
    }
    reply_bulk(ctx, b"created");
    reply_int(ctx, r.created as i64);
    reply_bulk(ctx, b"offset");
    reply_int(ctx, r.offset as i64);
    match f.state {
        State::Ready => {}
        State::Delayed => {
            reply_bulk(ctx, b"due");
            reply_int(ctx, f.at as i64);
            reply_bulk(ctx, b"error");
            reply_bulk(ctx, &r.error);
        }
        State::Inflight => {
            reply_bulk(ctx, b"deadline");
            reply_int(ctx, f.at as i64);
            reply_bulk(ctx, b"consumer");
            reply_bulk(ctx, &r.consumer);
        }
        State::Failed | State::Errors => {
            reply_bulk(ctx, b"error");
            reply_bulk(ctx, &r.error);
        }
    }
}

/// RMQ.DEL q id [id …]
/// Reply: how many messages were deleted, from any state.
pub fn del(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.del")?;
    let ids = args::ids(&argv[2..], "rmq.del")?;
    if in_slices(ctx, q, &ids, sliced::Kind::Delete)? {
        return Ok(());
    }
    let mut store = RedisStore::new(ctx, q);
    let n = queue_of(ctx, q, &mut store).delete(&ids)?;
    reply_int(ctx, n as i64);
    Ok(())
}

/// RMQ.REQUEUE q id [id …]
/// Reply: how many delayed, failed or errored messages went back to ready.
pub fn requeue(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.requeue")?;
    let ids = args::ids(&argv[2..], "rmq.requeue")?;
    if in_slices(ctx, q, &ids, sliced::Kind::Requeue)? {
        return Ok(());
    }
    let mut store = RedisStore::new(ctx, q);
    let n = queue_of(ctx, q, &mut store).requeue(&ids)?;
    reply_int(ctx, n as i64);
    Ok(())
}

/// RMQ.PURGE q READY|DELAYED|INFLIGHT|FAILED|ERRORS|ALL
/// Reply: how many messages were deleted. Without the log the state's keys are unlinked (the
/// Lua core, O(1)); with it each message is logged, natively, and a big state in slices.
pub fn purge(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.purge")?;
    let which = args::purge(&argv[2..])?;
    let mut store = RedisStore::new(ctx, q);
    if !settings_cache::get(ctx, q, &mut store).log {
        drop(store);
        return lua_command(ctx, argv, "rmq_purge", "rmq.purge");
    }
    let keys: Vec<Key> = match which {
        None => State::ALL.map(State::key).to_vec(),
        Some(state) => vec![state.key()],
    };
    let mut purging = Purging::new(which);
    let mut queue = queue_of(ctx, q, &mut store);
    if !sliced::at_once(ctx, q, &keys) {
        // The first state's size now: messages pushed once PURGE began stay.
        queue.purge_some(&mut purging, 0)?;
        drop(store);
        sliced::start_purge(ctx, q, purging);
        return Ok(());
    }
    while !queue.purge_some(&mut purging, usize::MAX)? {}
    reply_int(ctx, purging.count as i64);
    Ok(())
}

/// RMQ.REPLAY q FROM offset [TO offset]
/// Reply: how many copies. A range of more than `sliced::REPLAY_AT_ONCE` offsets on a queue
/// without `maxlen` is copied in slices; anything else (refusals included) at once by the
/// Lua core.
pub fn replay(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    let q = queue(ctx, argv, 3, "rmq.replay")?;
    if let Some((from, to)) = replay_range(&argv[2..]) {
        if sliced::may_block(ctx) {
            let mut store = RedisStore::reading(ctx, q);
            let set = settings_cache::get(ctx, q, &mut store);
            // Only what was logged before REPLAY began: copies take later offsets.
            let last: u64 = store.hget(Key::St, b"offset").and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(0);
            let to = to.min(last);
            if set.maxlen == 0 && to >= from && to - from >= sliced::REPLAY_AT_ONCE {
                store.check(&Key::ALL)?;
                drop(store);
                sliced::start_replay(ctx, q, from.max(1), to);
                return Ok(());
            }
        }
    }
    lua_command(ctx, argv, "rmq_replay", "rmq.replay")
}

/// `FROM n [TO m]` in plain form (each once, numbers in decimal digits), or None: the Lua core
/// then parses the arguments and gives the refusals.
fn replay_range(args: &[&[u8]]) -> Option<(u64, u64)> {
    let (mut from, mut to) = (None, None);
    let number = |v: &[u8]| -> Option<u64> {
        (!v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit)).then(|| std::str::from_utf8(v).ok()?.parse().ok())?
    };
    for pair in args.chunks(2) {
        let [kw, value] = pair else { return None };
        let slot = match kw.to_ascii_uppercase().as_slice() {
            b"FROM" => &mut from,
            b"TO" => &mut to,
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(number(value)?);
    }
    Some((from?, to.unwrap_or(u64::MAX)))
}

/// RMQ.QUEUES
/// Reply: the queues this node holds (any of their keys exists), sorted, restricted to the
/// queues whose name the caller's ACL user may read.
pub fn queues(ctx: Ctx, argv: &[&[u8]]) -> Result<()> {
    args::nothing(&argv[1..])?;
    let db = ffi::selected_db(ctx);
    let user = acl::CurrentUser::of(ctx);
    let every_key = user.may_read_every_key(ctx);
    ffi::reply_array_postponed(ctx);
    let mut n = 0;
    registry::each_name(db, |q| {
        if check_queue(q).is_ok() && (every_key || user.may_read(ctx, q)) {
            reply_bulk(ctx, q);
            n += 1;
        }
    });
    ffi::reply_set_array_length(ctx, n);
    Ok(())
}

/// A command served by the Lua core: `rmq_<name>(keys = {q}, args)`.
/// Whatever it moved to ready (or a paused queue it resumed) wakes blocked FETCHes.
pub fn lua_command(ctx: Ctx, argv: &[&[u8]], function: &str, name: &'static str) -> Result<()> {
    // What each needs after q, checked before the queue name (as lua/rmq.lua's MIN_ARGS).
    let min_args = match function {
        "rmq_purge" | "rmq_config" | "rmq_replay" => 1,
        _ => 0,
    };
    let q = queue(ctx, argv, 2 + min_args, name)?;
    if function == "rmq_config" {
        crate::acl::check_config(ctx, q, &argv[2..])?;
    }
    crate::lua::run(ctx, function, &[q], &argv[2..])?;
    if matches!(function, "rmq_replay" | "rmq_config" | "rmq_purge") {
        // PURGE of an ordered queue's in-flight or held message lets the next one out.
        let key = RStr::new(ctx, &Key::Msg.name(q));
        ffi::signal_ready(ctx, &key);
    }
    Ok(())
}
