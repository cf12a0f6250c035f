//! Module settings: `loadmodule librmq.so lock-ms 30000 …` and `CONFIG SET rmq.<name>`.
//! Per-queue `RMQ.CONFIG` overrides the queue settings among them.

use std::sync::atomic::{AtomicI64, Ordering};

use rmq_core::settings::{Settings, DEFAULTS, MAX_FETCH_COUNT as MAX_FETCH_COUNT_DEFAULT};

/// The defaults of the node's settings (the queue settings among them are SPEC's, from
/// rmq-core, shared with the Lua edition).
pub const DEFAULT_LOCK_MS: i64 = DEFAULTS.lock_ms as i64;
pub const DEFAULT_GUARD_INTERVAL_MS: i64 = 3_000;
pub const DEFAULT_MAX_ATTEMPTS: i64 = DEFAULTS.max_attempts as i64;
pub const DEFAULT_BACKOFF_MS: i64 = DEFAULTS.backoff_ms as i64;
pub const DEFAULT_BACKOFF_MAX_MS: i64 = DEFAULTS.backoff_max_ms as i64;
pub const DEFAULT_DEDUP_WINDOW_MS: i64 = DEFAULTS.dedup_window_ms as i64;
pub const DEFAULT_MAX_FETCH_COUNT: i64 = MAX_FETCH_COUNT_DEFAULT as i64;
pub const DEFAULT_LUA_INSTRUCTION_BUDGET: i64 = 500_000_000;
pub const DEFAULT_LUA_TIME_BUDGET_MS: i64 = 1_000;

pub static LOCK_MS: AtomicI64 = AtomicI64::new(DEFAULT_LOCK_MS);
pub static GUARD_INTERVAL_MS: AtomicI64 = AtomicI64::new(DEFAULT_GUARD_INTERVAL_MS);
pub static MAX_ATTEMPTS: AtomicI64 = AtomicI64::new(DEFAULT_MAX_ATTEMPTS);
pub static BACKOFF_MS: AtomicI64 = AtomicI64::new(DEFAULT_BACKOFF_MS);
pub static BACKOFF_MAX_MS: AtomicI64 = AtomicI64::new(DEFAULT_BACKOFF_MAX_MS);
pub static DEDUP_WINDOW_MS: AtomicI64 = AtomicI64::new(DEFAULT_DEDUP_WINDOW_MS);
pub static MAX_FETCH_COUNT: AtomicI64 = AtomicI64::new(DEFAULT_MAX_FETCH_COUNT);
/// Lua instructions one non-hot command (PEEK, REPLAY, …) may run before it is stopped.
pub static LUA_INSTRUCTION_BUDGET: AtomicI64 = AtomicI64::new(DEFAULT_LUA_INSTRUCTION_BUDGET);
/// Milliseconds one non-hot command may run before it is stopped.
pub static LUA_TIME_BUDGET_MS: AtomicI64 = AtomicI64::new(DEFAULT_LUA_TIME_BUDGET_MS);

fn get(v: &AtomicI64) -> u64 {
    v.load(Ordering::Relaxed).max(0) as u64
}

/// The node's defaults for every queue.
pub fn node_settings() -> Settings {
    Settings {
        lock_ms: get(&LOCK_MS),
        max_attempts: get(&MAX_ATTEMPTS),
        backoff_ms: get(&BACKOFF_MS),
        backoff_max_ms: get(&BACKOFF_MAX_MS),
        dedup_window_ms: get(&DEDUP_WINDOW_MS),
        ..Settings::default()
    }
}

pub fn max_fetch_count() -> u64 {
    get(&MAX_FETCH_COUNT)
}

pub fn lua_instruction_budget() -> u64 {
    get(&LUA_INSTRUCTION_BUDGET)
}

pub fn lua_time_budget_ms() -> u64 {
    get(&LUA_TIME_BUDGET_MS).max(1)
}

pub fn guard_interval_ms() -> u64 {
    get(&GUARD_INTERVAL_MS).max(1)
}
