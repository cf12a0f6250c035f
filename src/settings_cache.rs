//! The effective settings of each queue, kept in memory so that a hot-path command need not
//! open `cfg:{q}` every time. An entry is dropped whenever that key may have changed: a
//! keyspace notification on it (HSET from RMQ.CONFIG or by hand, DEL, RENAME, EXPIRE,
//! RESTORE, a replicated write), a flush, SWAPDB, loading a dataset, a role change, or a
//! change of the node's `rmq.*` settings (see `events`).
//!
//! The cache is bounded: it holds at most [`CAPACITY`] queues and starts again empty when
//! full, so commands on any number of distinct names never grow the module's memory.

use std::cell::RefCell;
use std::collections::HashMap;

use rmq_core::queue;
use rmq_core::settings::Settings;

use crate::config;
use crate::ffi::{self, Ctx};
use crate::store::RedisStore;

/// Queues whose settings are kept at most (about 100 bytes each).
pub const CAPACITY: usize = 100_000;

#[derive(Default)]
struct Cache {
    /// (database, queue) → settings.
    entries: HashMap<i32, HashMap<Vec<u8>, Settings>>,
    len: usize,
}

thread_local! {
    // Redis runs commands on one thread.
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The queue's settings: from the cache, or read from `cfg:{q}` and remembered.
pub fn get(ctx: Ctx, q: &[u8], store: &mut RedisStore) -> Settings {
    let db = ffi::selected_db(ctx);
    if let Some(s) = CACHE.with(|c| c.borrow().entries.get(&db).and_then(|m| m.get(q).cloned())) {
        return s;
    }
    let s = queue::settings(store, &config::node_settings());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len >= CAPACITY {
            c.entries.clear();
            c.len = 0;
        }
        if c.entries.entry(db).or_default().insert(q.to_vec(), s.clone()).is_none() {
            c.len += 1;
        }
    });
    s
}

/// `cfg:{q}` may have changed.
pub fn forget(db: i32, q: &[u8]) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.entries.get_mut(&db).and_then(|m| m.remove(q)).is_some() {
            c.len -= 1;
        }
    });
}

pub fn clear() {
    CACHE.with(|c| *c.borrow_mut() = Cache::default());
}

/// How many queues' settings are cached.
pub fn len() -> usize {
    CACHE.with(|c| c.borrow().len)
}
