//! The effective settings of each queue, kept in memory so that a hot-path command need not
//! open `cfg:{q}` every time. An entry is dropped whenever that key may have changed: a
//! keyspace notification on it (HSET from RMQ.CONFIG or by hand, DEL, RENAME, EXPIRE,
//! RESTORE, a replicated write), a flush, SWAPDB, loading a dataset, a role change, or a
//! change of the node's `rmq.*` settings (see `events`).
//!
//! It also remembers that a queue's keys were found of the right types: they stay so until
//! something other than the module's own commands writes one of them (a keyspace
//! notification the module did not send drops the entry), so the hot path need not open
//! every key a command might touch to check its type.
//!
//! The cache is bounded: it holds at most [`CAPACITY`] queues and starts again empty when
//! full, so commands on any number of distinct names never grow the module's memory.

use std::cell::RefCell;

use foldhash::HashMap;
use rmq_core::queue;
use rmq_core::settings::Settings;

use crate::config;
use crate::ffi::{self, Ctx};
use crate::store::RedisStore;

/// Queues whose settings are kept at most (about 100 bytes each).
pub const CAPACITY: usize = 100_000;

struct Entry {
    settings: Settings,
    types_checked: bool,
}

#[derive(Default)]
struct Cache {
    /// (database, queue) → what is known of it.
    entries: HashMap<i32, HashMap<Vec<u8>, Entry>>,
    len: usize,
}

thread_local! {
    // Redis runs commands on one thread.
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The queue's settings: from the cache, or read from `cfg:{q}` and remembered. The store is
/// told when the queue's key types are known to be right.
pub fn get(ctx: Ctx, q: &[u8], store: &mut RedisStore) -> Settings {
    let db = ffi::selected_db(ctx);
    let cached = CACHE.with(|c| c.borrow().entries.get(&db).and_then(|m| m.get(q)).map(|e| (e.settings.clone(), e.types_checked)));
    if let Some((s, types_checked)) = cached {
        if types_checked {
            store.types_are_checked();
        }
        return s;
    }
    let s = queue::settings(store, &config::node_settings());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len >= CAPACITY {
            c.entries.clear();
            c.len = 0;
        }
        let entry = Entry { settings: s.clone(), types_checked: false };
        if c.entries.entry(db).or_default().insert(q.to_vec(), entry).is_none() {
            c.len += 1;
        }
    });
    s
}

/// Every key of the queue was found of its type.
pub fn types_checked(db: i32, q: &[u8]) {
    CACHE.with(|c| {
        if let Some(e) = c.borrow_mut().entries.get_mut(&db).and_then(|m| m.get_mut(q)) {
            e.types_checked = true;
        }
    });
}

/// `cfg:{q}`, or the type of one of the queue's keys, may have changed.
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
