//! Commands whose work grows with the queue, on a big queue: GET, DEL and REQUEUE (which read
//! every state), RECOVER (which moves every failed and errored message), PURGE with the log
//! on (which logs every message it deletes) and REPLAY of a long range (which copies every
//! logged push in it). The client is
//! blocked and the work is done a slice at a time from a timer, about 1 ms per tick, so Redis
//! serves other clients in between. A small queue, a command inside MULTI or a script (which
//! cannot block), and a GET on a replica are done at once, as before.
//!
//! A lookup by id answers as if it had read the queue at one instant (rmq_core::lookup): the
//! queue's own commands tell running lookups what they change ([`watching`] and the functions
//! after it, called by the store); any other write to the queue's keys (seen as a keyspace
//! notification the module did not send) or a flush restarts them. RECOVER moves each
//! message whole in one step; other commands may run between two steps, as they may between
//! two RECOVERs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis_module::raw;
use rmq_core::args::Recover;
use rmq_core::lookup::{list_state, Lookup};
use rmq_core::queue::{Found, Purging, Recovering, State};
use rmq_core::store::{Key, Store};
use rmq_core::{Error, Result};

use crate::commands::{queue_of, reply_found};
use crate::ffi::{self, reply_array, reply_int, reply_null, Ctx, OpenKey, RStr};
use crate::safety::guarded;
use crate::store::RedisStore;

/// A queue with more messages than this (in the states the command works on) is done in
/// slices; fewer are done at once (a lookup reads one in about 75 ns, RECOVER moves one in
/// about 0.7 µs: a few milliseconds at most).
pub const AT_ONCE_LIMIT: u64 = 10_000;
/// Work per timer tick, over all running commands, stops once this much time is spent.
const TICK_BUDGET: Duration = Duration::from_millis(1);
/// Elements read between two looks at the clock.
const SLICE: usize = 256;
/// Messages RECOVER moves, or PURGE deletes, between two looks at the clock.
const RECOVER_SLICE: usize = 64;
/// Offsets REPLAY copies per call of the Lua core (about 30 µs a copy, and 1–2 ms to find
/// where the range starts in the log).
const REPLAY_CHUNK: u64 = 64;
/// A REPLAY of at most this many offsets is done at once.
pub const REPLAY_AT_ONCE: u64 = 128;
/// A lookup disturbed more often than this by writes that were not rmq's gives up (TRYAGAIN).
const MAX_RESTARTS: u32 = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get,
    Delete,
    Requeue,
}

impl Kind {
    fn states(self) -> &'static [State] {
        match self {
            Kind::Get | Kind::Delete => &State::ALL,
            Kind::Requeue => &State::REQUEUABLE,
        }
    }
}

struct Job {
    db: i32,
    queue: Vec<u8>,
    client: *mut raw::RedisModuleBlockedClient,
    work: Work,
}

enum Work {
    Lookup(LookupJob),
    Recover(Recovering),
    Purge(Purging),
    Replay(Replaying),
}

/// A REPLAY in progress: the logged pushes of offsets `next..=to` are still to be copied.
struct Replaying {
    next: u64,
    to: u64,
    count: u64,
}

struct LookupJob {
    kind: Kind,
    lookup: Lookup,
    /// The queue was changed by something that does not tell lookups: read it again.
    disturbed: bool,
    restarts: u32,
    /// The SCAN cursor of the delayed zset or the in-flight hash being read.
    cursor: Option<ScanCursor>,
}

/// What the blocked client is told.
enum Outcome {
    Found(Option<Box<Found>>),
    Count(u64),
    Counts([u64; 3]),
    Failed(Error),
}

/// Commands done in slices since the module loaded (INFO `rmq_sliced_total`).
pub static SLICED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static JOBS: RefCell<VecDeque<Job>> = const { RefCell::new(VecDeque::new()) };
    /// Whether any command runs in slices: the store's hot path looks at this flag only.
    static RUNNING: Cell<bool> = const { Cell::new(false) };
    static TIMER_ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the command must be done at once: a small queue (counting the messages in `keys`),
/// a client that cannot block, or a replica.
pub fn at_once(ctx: Ctx, q: &[u8], keys: &[Key]) -> bool {
    if !may_block(ctx) {
        return true;
    }
    let mut store = RedisStore::reading(ctx, q);
    let size: u64 = keys.iter().map(|k| store.llen(*k)).sum();
    size <= AT_ONCE_LIMIT
}

/// Whether the calling client may be blocked: not inside MULTI or a script, not a replica.
pub fn may_block(ctx: Ctx) -> bool {
    let flags = ffi::ctx_flags(ctx);
    let cannot_block = raw::REDISMODULE_CTX_FLAGS_MULTI
        | raw::REDISMODULE_CTX_FLAGS_LUA
        | raw::REDISMODULE_CTX_FLAGS_REPLICATED
        | raw::REDISMODULE_CTX_FLAGS_LOADING
        | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING;
    // A replica applies its primary's writes as plain commands, which a lookup cannot follow
    // (it would start again at each one): there the queue is read at once, as before.
    let replica = flags & raw::REDISMODULE_CTX_FLAGS_MASTER == 0;
    flags & cannot_block == 0 && !replica
}

/// Blocks the client and starts reading `q` in slices. The keys' types were checked.
pub fn start_lookup(ctx: Ctx, q: &[u8], ids: &[&[u8]], kind: Kind) {
    let lookup = Lookup::new(ids, kind.states());
    start(ctx, q, Work::Lookup(LookupJob { kind, lookup, disturbed: false, restarts: 0, cursor: None }));
}

/// Blocks the client and starts a PURGE (with the log on) of `q` in slices.
pub fn start_purge(ctx: Ctx, q: &[u8], purging: Purging) {
    start(ctx, q, Work::Purge(purging));
}

/// Blocks the client and starts a REPLAY of the logged pushes of offsets `from..=to`.
pub fn start_replay(ctx: Ctx, q: &[u8], from: u64, to: u64) {
    start(ctx, q, Work::Replay(Replaying { next: from, to, count: 0 }));
}

/// Blocks the client and starts a RECOVER of `q` in slices.
pub fn start_recover(ctx: Ctx, q: &[u8], what: Recover) {
    start(ctx, q, Work::Recover(Recovering::new(what)));
}

fn start(ctx: Ctx, q: &[u8], work: Work) {
    // SAFETY: a command context; no callbacks on timeout (there is none) and the reply
    // callback gets the outcome handed to RedisModule_UnblockClient.
    let client = unsafe { raw::RedisModule_BlockClient.unwrap()(ctx, Some(on_reply), None, Some(free_outcome), 0) };
    let job = Job { db: ffi::selected_db(ctx), queue: q.to_vec(), client, work };
    JOBS.with(|j| j.borrow_mut().push_back(job));
    SLICED.fetch_add(1, Ordering::Relaxed);
    RUNNING.with(|r| r.set(true));
    arm();
}

fn arm() {
    if TIMER_ARMED.with(|a| a.replace(true)) {
        return;
    }
    let ctx = crate::guard::module_ctx();
    // SAFETY: a context that outlives the timer; `tick` runs on the main thread.
    unsafe { raw::RedisModule_CreateTimer.unwrap()(ctx, 1, Some(tick), std::ptr::null_mut()) };
}

extern "C" fn tick(ctx: Ctx, _data: *mut c_void) {
    TIMER_ARMED.with(|a| a.set(false));
    let started = Instant::now();
    while started.elapsed() < TICK_BUDGET {
        // The job leaves the list while it works: what it writes tells the other lookups,
        // not itself.
        let Some(mut job) = JOBS.with(|j| j.borrow_mut().pop_front()) else { break };
        ffi::select_db(ctx, job.db);
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(ctx, &mut job, started))) {
            Ok(outcome) => outcome,
            Err(_) => {
                ffi::log(ctx, c"warning", "rmq: internal error in a command done in slices");
                Some(Outcome::Failed(Error::Internal))
            }
        };
        match outcome {
            Some(outcome) => unblock(job, outcome),
            None => JOBS.with(|j| j.borrow_mut().push_back(job)),
        }
    }
    let left = JOBS.with(|j| !j.borrow().is_empty());
    RUNNING.with(|r| r.set(left));
    if left {
        arm();
    }
}

fn unblock(job: Job, outcome: Outcome) {
    let outcome = Box::into_raw(Box::new(outcome));
    // SAFETY: the client blocked in `start`, unblocked once; the Box comes back in
    // `on_reply` (read) and `free_outcome` (freed).
    unsafe { raw::RedisModule_UnblockClient.unwrap()(job.client, outcome as *mut c_void) };
}

/// Does a slice of the job's work; the outcome once it is complete.
fn step(ctx: Ctx, job: &mut Job, started: Instant) -> Option<Outcome> {
    if crate::cluster::moving(ctx, &job.queue) {
        return Some(Outcome::Failed(Error::SlotMoving));
    }
    let writes = !matches!(&job.work, Work::Lookup(l) if l.kind == Kind::Get);
    if writes && ffi::ctx_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_MASTER == 0 {
        return Some(Outcome::Failed(Error::ReadOnlyReplica));
    }
    match &mut job.work {
        Work::Lookup(l) => lookup_step(ctx, &job.queue, l, started),
        Work::Recover(r) => recover_step(ctx, &job.queue, r, started),
        Work::Purge(p) => purge_step(ctx, &job.queue, p, started),
        Work::Replay(r) => replay_step(ctx, &job.queue, r, started),
    }
}

fn lookup_step(ctx: Ctx, q: &[u8], job: &mut LookupJob, started: Instant) -> Option<Outcome> {
    if job.disturbed {
        job.disturbed = false;
        job.restarts += 1;
        if job.restarts > MAX_RESTARTS {
            return Some(Outcome::Failed(Error::LookupDisturbed));
        }
        job.lookup.restart();
        job.cursor = None;
    }
    while started.elapsed() < TICK_BUDGET {
        let Some(state) = job.lookup.current() else { return Some(finish(ctx, q, job)) };
        let done = match state {
            State::Ready | State::Failed | State::Errors => read_list(ctx, q, job, state),
            State::Delayed => scan(ctx, q, job, Key::Dly),
            State::Inflight => scan(ctx, q, job, Key::Inf),
        };
        if done {
            job.lookup.next_state();
            job.cursor = None;
        }
    }
    None
}

fn recover_step(ctx: Ctx, q: &[u8], r: &mut Recovering, started: Instant) -> Option<Outcome> {
    let done = moves(ctx, q, started, |queue| queue.recover_some(r, RECOVER_SLICE));
    done.map(|outcome| outcome.unwrap_or(Outcome::Counts(r.counts)))
}

fn purge_step(ctx: Ctx, q: &[u8], p: &mut Purging, started: Instant) -> Option<Outcome> {
    let done = moves(ctx, q, started, |queue| queue.purge_some(p, RECOVER_SLICE));
    done.map(|outcome| outcome.unwrap_or(Outcome::Count(p.count)))
}

/// Runs `slice` (true once the work is complete) until the tick's budget is spent: None while
/// work is left, Some(None) when complete, Some(Some(failure)) on an error.
fn moves(
    ctx: Ctx,
    q: &[u8],
    started: Instant,
    mut slice: impl FnMut(&mut rmq_core::queue::Queue<RedisStore>) -> Result<bool>,
) -> Option<Option<Outcome>> {
    while started.elapsed() < TICK_BUDGET {
        // A store per slice: its changes replicate, and wake consumers, as the slice ends.
        let mut store = RedisStore::new(ctx, q);
        match slice(&mut queue_of(ctx, q, &mut store)) {
            Ok(true) => return Some(None),
            Ok(false) => {}
            Err(e) => return Some(Some(Outcome::Failed(e))),
        }
    }
    None
}

/// Copies the logged pushes of [`REPLAY_CHUNK`] offsets at a time, through the Lua core's
/// REPLAY (which finds where an offset starts in the log in a few short reads).
fn replay_step(ctx: Ctx, q: &[u8], r: &mut Replaying, started: Instant) -> Option<Outcome> {
    while started.elapsed() < TICK_BUDGET {
        let to = r.next.saturating_add(REPLAY_CHUNK - 1).min(r.to);
        let (from_text, to_text) = (r.next.to_string(), to.to_string());
        let args: [&[u8]; 4] = [b"FROM", from_text.as_bytes(), b"TO", to_text.as_bytes()];
        match crate::lua::run_for_integer(ctx, "rmq_replay", &[q], &args) {
            Ok(n) => r.count += n.max(0) as u64,
            Err(e) => return Some(Outcome::Failed(e)),
        }
        // The copies are ready: wake FETCHes waiting on the queue.
        ffi::signal_ready(ctx, &RStr::new(ctx, &Key::Msg.name(q)));
        r.next = to + 1;
        if r.next > r.to {
            return Some(Outcome::Count(r.count));
        }
    }
    None
}

/// Reads up to [`SLICE`] elements of a list from the cursor; true at its end.
fn read_list(ctx: Ctx, q: &[u8], job: &mut LookupJob, state: State) -> bool {
    let key = state.key();
    let mut store = RedisStore::reading(ctx, q);
    let from = job.lookup.cursor();
    let mut read = 0;
    let lookup = &mut job.lookup;
    store.list_walk_from(key, from, &mut |index, bytes| {
        lookup.visit_list(index, bytes);
        read += 1;
        if read == SLICE {
            rmq_core::store::Walk::Stop
        } else {
            rmq_core::store::Walk::Next
        }
    });
    read < SLICE
}

/// A SCAN cursor of one key.
struct ScanCursor(*mut raw::RedisModuleScanCursor);

impl Drop for ScanCursor {
    fn drop(&mut self) {
        // SAFETY: a cursor made by ScanCursorCreate, destroyed once.
        unsafe { raw::RedisModule_ScanCursorDestroy.unwrap()(self.0) };
    }
}

/// Reads some of the delayed zset or the in-flight hash; true when the scan is complete.
fn scan(ctx: Ctx, q: &[u8], job: &mut LookupJob, k: Key) -> bool {
    let name = RStr::new(ctx, &k.name(q));
    let key = OpenKey::open(ctx, &name, false);
    if key.key_type() == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
        return true;
    }
    // SAFETY: no arguments; the cursor is destroyed by its Drop.
    let cursor = job.cursor.get_or_insert_with(|| ScanCursor(unsafe { raw::RedisModule_ScanCursorCreate.unwrap()() }));
    let mut visit = Visit { lookup: &mut job.lookup, key: k, seen: 0 };
    while visit.seen < SLICE {
        // SAFETY: an open handle of a zset or hash (types checked), a live cursor, and
        // `visit`, which outlives the call; the callback does not touch the key.
        let more =
            unsafe { raw::RedisModule_ScanKey.unwrap()(key.ptr, cursor.0, Some(on_element), &mut visit as *mut Visit as *mut c_void) };
        if more == 0 {
            return true;
        }
    }
    false
}

struct Visit<'a> {
    lookup: &'a mut Lookup,
    key: Key,
    seen: usize,
}

extern "C" fn on_element(
    _key: *mut raw::RedisModuleKey,
    field: *mut raw::RedisModuleString,
    value: *mut raw::RedisModuleString,
    data: *mut c_void,
) {
    // SAFETY: `data` is the Visit handed to ScanKey, live for the call; field and value are
    // live for the callback (value is the score for a zset).
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        let visit = &mut *(data as *mut Visit);
        visit.seen += 1;
        let field = ffi::bytes_of(field);
        match visit.key {
            Key::Dly => visit.lookup.visit_delayed(field),
            _ if !value.is_null() => visit.lookup.visit_inflight(field, ffi::bytes_of(value)),
            _ => {}
        }
    }));
}

/// Every state is read: the found messages, checked again and acted on, in this one step.
fn finish(ctx: Ctx, q: &[u8], job: &mut LookupJob) -> Outcome {
    let lookup = std::mem::replace(&mut job.lookup, Lookup::new(&[], &[]));
    let result: Result<Outcome> = (|| {
        let mut store = if job.kind == Kind::Get { RedisStore::reading(ctx, q) } else { RedisStore::new(ctx, q) };
        store.check(&Key::ALL)?;
        let found = lookup.finish(&mut store, job.kind == Kind::Get);
        Ok(match job.kind {
            Kind::Get => Outcome::Found(found.into_iter().next().map(Box::new)),
            Kind::Delete => Outcome::Count(queue_of(ctx, q, &mut store).delete_found(found)?),
            Kind::Requeue => Outcome::Count(queue_of(ctx, q, &mut store).requeue_found(found)?),
        })
    })();
    result.unwrap_or_else(Outcome::Failed)
}

extern "C" fn on_reply(ctx: Ctx, _argv: *mut *mut raw::RedisModuleString, _argc: c_int) -> c_int {
    guarded(ctx, "lookup (reply)", || {
        // SAFETY: the outcome handed to UnblockClient, freed only after this callback.
        let outcome = unsafe { (raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx) as *const Outcome).as_ref() };
        match outcome {
            Some(Outcome::Found(Some(f))) => reply_found(ctx, f),
            Some(Outcome::Found(None)) => reply_null(ctx),
            Some(Outcome::Count(n)) => reply_int(ctx, *n as i64),
            Some(Outcome::Counts(counts)) => {
                reply_array(ctx, counts.len());
                for c in counts {
                    reply_int(ctx, *c as i64);
                }
            }
            Some(Outcome::Failed(e)) => return Err(e.clone()),
            None => return Err(Error::Internal),
        }
        Ok(())
    });
    raw::REDISMODULE_OK as c_int
}

extern "C" fn free_outcome(_ctx: Ctx, p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: the Box leaked in `unblock`, handed back once.
        let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(p as *mut Outcome) }));
    }
}

/// How many commands are being done in slices now (INFO `rmq_sliced_running`).
pub fn running() -> usize {
    JOBS.with(|j| j.borrow().len())
}

/// Whether any lookup runs (then the store tells it what changes).
pub fn watching() -> bool {
    RUNNING.with(|r| r.get())
}

/// Runs `f` on every lookup of queue `q` in database `db`.
fn each(db: i32, q: &[u8], mut f: impl FnMut(&mut LookupJob)) {
    JOBS.with(|j| {
        for job in j.borrow_mut().iter_mut().filter(|job| job.db == db && job.queue == q) {
            if let Work::Lookup(l) = &mut job.work {
                f(l);
            }
        }
    });
}

/// A command of `q` removed the element at `index` of list `k`.
pub fn list_removed(db: i32, q: &[u8], k: Key, index: u64) {
    let Some(state) = list_state(k) else { return };
    each(db, q, |job| job.lookup.list_removed(state, index));
}

/// A command of `q` pushed `bytes` to list `k` (front or back), which now holds `len`.
pub fn list_pushed(db: i32, q: &[u8], k: Key, front: bool, len: u64, bytes: &[u8]) {
    let Some(state) = list_state(k) else { return };
    each(db, q, |job| {
        if front {
            job.lookup.list_pushed_front(state);
        }
        job.lookup.landed_in_list(state, if front { 0 } else { len.saturating_sub(1) }, bytes);
    });
}

/// A command of `q` added a delayed record.
pub fn delayed_added(db: i32, q: &[u8], bytes: &[u8]) {
    each(db, q, |job| job.lookup.visit_delayed(bytes));
}

/// A command of `q` put a record in flight under `receipt`.
pub fn inflight_added(db: i32, q: &[u8], receipt: &[u8], bytes: &[u8]) {
    each(db, q, |job| job.lookup.visit_inflight(receipt, bytes));
}

/// A write the module did not make touched a key of `q`.
pub fn disturbed(db: i32, q: &[u8]) {
    each(db, q, |job| job.disturbed = true);
}

/// A flush, SWAPDB or load: every lookup reads its queue again.
pub fn disturb_all() {
    JOBS.with(|j| {
        for job in j.borrow_mut().iter_mut() {
            if let Work::Lookup(l) = &mut job.work {
                l.disturbed = true;
            }
        }
    });
}
