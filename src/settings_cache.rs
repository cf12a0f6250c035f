//! The effective settings of each queue, kept in memory so that a hot-path command need not
//! open `cfg:{q}` every time. An entry is dropped whenever that key may have changed: a
//! keyspace notification on it (HSET from RMQ.CONFIG or by hand, DEL, RENAME, EXPIRE,
//! RESTORE, a replicated write), a flush, SWAPDB, loading a dataset, a role change, or a
//! change of the node's `rmq.*` settings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::raw::c_void;

use redis_module::raw;
use rmq_core::queue;
use rmq_core::settings::Settings;
use rmq_core::store::Key;

use crate::config;
use crate::ffi::{self, Ctx};
use crate::safety::quietly;
use crate::store::RedisStore;

thread_local! {
    // Redis runs commands on one thread. Index: database number.
    static CACHE: RefCell<Vec<HashMap<Vec<u8>, Settings>>> = const { RefCell::new(Vec::new()) };
}

fn db(ctx: Ctx) -> usize {
    unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx) }.max(0) as usize
}

/// The queue's settings: from the cache, or read from `cfg:{q}` and remembered.
pub fn get(ctx: Ctx, q: &[u8], store: &mut RedisStore) -> Settings {
    let db = db(ctx);
    if let Some(s) = CACHE.with(|c| c.borrow().get(db).and_then(|m| m.get(q).cloned())) {
        return s;
    }
    let s = queue::settings(store, &config::node_settings());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() <= db {
            c.resize_with(db + 1, HashMap::new);
        }
        c[db].insert(q.to_vec(), s.clone());
    });
    s
}

pub fn forget(ctx: Ctx, q: &[u8]) {
    let db = db(ctx);
    CACHE.with(|c| {
        if let Some(m) = c.borrow_mut().get_mut(db) {
            m.remove(q);
        }
    });
}

pub fn clear() {
    CACHE.with(|c| c.borrow_mut().clear());
}

/// Called for every keyspace event the module subscribes to: drops the queue whose `cfg:{q}`
/// changed.
pub fn on_key(ctx: Ctx, key: &[u8]) {
    if let Some((Key::Cfg, q)) = Key::parse(key) {
        forget(ctx, q);
    }
}

extern "C" fn on_server_event(ctx: Ctx, _e: raw::RedisModuleEvent, _sub: u64, _data: *mut c_void) {
    quietly(ctx, "server event", clear);
}

pub fn subscribe(ctx: Ctx) {
    for id in [
        raw::REDISMODULE_EVENT_FLUSHDB,
        raw::REDISMODULE_EVENT_SWAPDB,
        raw::REDISMODULE_EVENT_LOADING,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
    ] {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        let ok = unsafe { raw::RedisModule_SubscribeToServerEvent.unwrap()(ctx, event, Some(on_server_event)) };
        if ok != raw::REDISMODULE_OK as i32 {
            ffi::log(ctx, c"warning", &format!("rmq: could not subscribe to server event {id}"));
        }
    }
}
