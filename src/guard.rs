//! The guard: a timer inside Redis that, with no client alive, brings back in-flight messages
//! whose lock ran out, promotes due delayed messages (waking blocked FETCHes) and trims the
//! dedup windows. Primary only. It visits only the queues the schedule says are due, earliest
//! first, so an idle server costs it one lookup whatever the number of queues. Its work per
//! tick is bounded by a time budget; when work is left, the next tick comes 1 ms later, so
//! Redis serves other clients in between, and the queues not reached are the first next time.

use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis_module::{raw, Context, RedisValue};
use rmq_core::queue::Queue;

use crate::config;
use crate::ffi::{self, Ctx};
use crate::safety::quietly;
use crate::store::RedisStore;
use crate::{cluster, registry, schedule, settings_cache};

/// Work per tick stops once this much time is spent (checked between batches).
const TICK_BUDGET: Duration = Duration::from_millis(1);
/// Messages moved per batch (of each kind) between two budget checks.
const BATCH: usize = 32;
/// The pause before carrying on when a tick ran out of budget.
const CARRY_ON_MS: i64 = 1;
/// Queues whose INFO counts a tick reads again when it has time left.
const REFRESH_PER_TICK: usize = 256;

pub static RUNS: AtomicU64 = AtomicU64::new(0);
pub static RECLAIMED: AtomicU64 = AtomicU64::new(0);
pub static PROMOTED: AtomicU64 = AtomicU64::new(0);
pub static LAST_US: AtomicU64 = AtomicU64::new(0);
/// The longest tick since the module loaded: what a client could have waited at worst.
pub static LONGEST_US: AtomicU64 = AtomicU64::new(0);
pub static EVICTION_POLICY_OK: AtomicBool = AtomicBool::new(true);

/// A context that outlives OnLoad, for arming the timer from config callbacks.
static MODULE_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());
static TIMER: Mutex<Option<raw::RedisModuleTimerID>> = Mutex::new(None);
/// Whether the last tick ran out of budget with work left.
static CARRYING_ON: AtomicBool = AtomicBool::new(false);

/// The long-lived module context (null before the module has loaded).
pub fn module_ctx() -> Ctx {
    MODULE_CTX.load(Ordering::Relaxed)
}

pub fn start(ctx: Ctx) {
    // SAFETY: the OnLoad context; the detached context lives as long as the module.
    let detached = unsafe { raw::RedisModule_GetDetachedThreadSafeContext.unwrap()(ctx) };
    MODULE_CTX.store(detached, Ordering::Relaxed);
    check_eviction_policy(ctx);
    arm(config::guard_interval_ms() as i64);
}

fn arm(ms: i64) {
    let ctx = MODULE_CTX.load(Ordering::Relaxed);
    if ctx.is_null() {
        return;
    }
    // SAFETY: a context that outlives the timer; `tick` runs on the main thread.
    let id = unsafe { raw::RedisModule_CreateTimer.unwrap()(ctx, ms, Some(tick), std::ptr::null_mut()) };
    *TIMER.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
}

/// `CONFIG SET rmq.guard-interval-ms` takes effect at once.
pub fn rearm() {
    let ctx = MODULE_CTX.load(Ordering::Relaxed);
    if ctx.is_null() {
        return; // still loading: start() arms with the loaded value
    }
    if let Some(id) = TIMER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: a timer this module created; a fired one is refused, not undefined.
        unsafe { raw::RedisModule_StopTimer.unwrap()(ctx, id, std::ptr::null_mut()) };
    }
    arm(config::guard_interval_ms() as i64);
}

extern "C" fn tick(ctx: Ctx, _data: *mut c_void) {
    let mut next = config::guard_interval_ms() as i64;
    quietly(ctx, "guard", || {
        let flags = ffi::ctx_flags(ctx);
        let primary = flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0;
        let loading = flags & raw::REDISMODULE_CTX_FLAGS_LOADING != 0;
        if !primary || loading {
            return;
        }
        if !CARRYING_ON.load(Ordering::Relaxed) {
            check_eviction_policy(ctx);
            cluster::stale();
        }
        let left = run(ctx);
        CARRYING_ON.store(left, Ordering::Relaxed);
        if left {
            next = CARRY_ON_MS;
        }
    });
    arm(next);
}

/// One tick over the queues that are due; true when the budget ran out with work left.
fn run(ctx: Ctx) -> bool {
    let started = Instant::now();
    let now = ffi::now_ms();
    let over = || started.elapsed() >= TICK_BUDGET;
    while !over() {
        let Some((db, q)) = schedule::take_due(now) else { break };
        ffi::select_db(ctx, db);
        if cluster::moving(ctx, &q) {
            // Part of the queue may already be on the other node: later.
            schedule::at_most(db, &q, now + config::guard_interval_ms());
            continue;
        }
        let mut store = RedisStore::new(ctx, &q);
        let set = settings_cache::get(ctx, &q, &mut store);
        store.set_dedup_window(set.dedup_window_ms);
        let mut queue = Queue::with_settings(&mut store, set, now);
        // Ok(true): stopped by the budget with work left.
        let outcome = loop {
            match queue.guard(BATCH) {
                Ok(moved) => {
                    RECLAIMED.fetch_add(moved.reclaimed, Ordering::Relaxed);
                    PROMOTED.fetch_add(moved.promoted, Ordering::Relaxed);
                    if !moved.more || over() {
                        break Ok(moved.more);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let next = match outcome {
            Ok(true) => Some(now),
            Ok(false) => queue.next_due(),
            // A queue with a key of the wrong type is left alone (its commands answer
            // WRONGTYPE); the write that fixes the key schedules it again.
            Err(_) => None,
        };
        drop(store);
        if let Some(at) = next {
            schedule::at_most(db, &q, at);
        }
    }
    let left = schedule::any_due(now);
    if !left && !over() {
        registry::refresh(ctx, REFRESH_PER_TICK);
    }
    RUNS.fetch_add(1, Ordering::Relaxed);
    let took = started.elapsed().as_micros() as u64;
    LAST_US.store(took, Ordering::Relaxed);
    LONGEST_US.fetch_max(took, Ordering::Relaxed);
    left
}

/// Logs a warning when `maxmemory-policy` would let Redis evict queue keys.
fn check_eviction_policy(ctx: Ctx) {
    let context = Context::new(ctx);
    let policy = match context.call("CONFIG", &["GET", "maxmemory-policy"]) {
        Ok(RedisValue::Array(v)) => match v.get(1) {
            Some(RedisValue::SimpleString(s)) => s.clone(),
            Some(RedisValue::BulkString(s)) => s.clone(),
            Some(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return,
        },
        _ => return,
    };
    let ok = policy == "noeviction";
    let was = EVICTION_POLICY_OK.swap(ok, Ordering::Relaxed);
    if !ok && (was || RUNS.load(Ordering::Relaxed) == 0) {
        ffi::log(
            ctx,
            c"warning",
            &format!("rmq: maxmemory-policy is '{policy}': Redis may evict queue keys and lose messages; set it to noeviction"),
        );
    }
}
