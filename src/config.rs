//! Module settings: `loadmodule librmq.so lock-ms 30000 …` and `CONFIG SET rmq.<name>`.
//! Per-queue `RMQ.CONFIG` overrides the queue settings among them.

use std::sync::atomic::{AtomicI64, Ordering};

use rmq_core::settings::Settings;

pub static LOCK_MS: AtomicI64 = AtomicI64::new(30_000);
pub static GUARD_INTERVAL_MS: AtomicI64 = AtomicI64::new(3_000);
pub static MAX_ATTEMPTS: AtomicI64 = AtomicI64::new(5);
pub static BACKOFF_MS: AtomicI64 = AtomicI64::new(1_000);
pub static BACKOFF_MAX_MS: AtomicI64 = AtomicI64::new(3_600_000);
pub static DEDUP_WINDOW_MS: AtomicI64 = AtomicI64::new(3_600_000);
pub static MAX_FETCH_COUNT: AtomicI64 = AtomicI64::new(1_000);
/// Lua instructions one non-hot command (PEEK, REPLAY, …) may run before it is stopped.
pub static LUA_INSTRUCTION_BUDGET: AtomicI64 = AtomicI64::new(500_000_000);
/// Milliseconds one non-hot command may run before it is stopped.
pub static LUA_TIME_BUDGET_MS: AtomicI64 = AtomicI64::new(1_000);

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
