//! The queues this node holds, for the guard and INFO (and the keyspace notifications that
//! also keep the settings cache right). Kept in memory, never in a key (no key
//! outside a queue's hash tag may exist): filled by the commands run here, and by keyspace
//! notifications for what arrives otherwise (replication stream, AOF and RDB loading,
//! RESTORE during resharding). A queue whose keys are all gone is dropped by the guard.

use std::collections::{BTreeMap, BTreeSet};
use std::os::raw::c_int;
use std::sync::Mutex;

use redis_module::raw;
use rmq_core::store::Key;

use crate::ffi::{self, Ctx};
use crate::safety::quietly;

/// (database, queue name).
pub type QueueRef = (i32, Vec<u8>);

static QUEUES: Mutex<BTreeMap<i32, BTreeSet<Vec<u8>>>> = Mutex::new(BTreeMap::new());

fn with<T>(f: impl FnOnce(&mut BTreeMap<i32, BTreeSet<Vec<u8>>>) -> T) -> T {
    let mut g = QUEUES.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

/// Records that queue `q` of the context's selected database exists.
pub fn note(ctx: Ctx, q: &[u8]) {
    let db = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx) };
    with(|dbs| {
        let set = dbs.entry(db).or_default();
        // Look up without allocating: the queue is almost always known already.
        if !set.contains(q) {
            set.insert(q.to_vec());
        }
    });
}

pub fn forget(q: &QueueRef) {
    with(|dbs| {
        if let Some(set) = dbs.get_mut(&q.0) {
            set.remove(&q.1);
        }
    });
}

/// The queues in order, starting at `start` and wrapping around (the guard's fairness).
pub fn snapshot_from(start: Option<&QueueRef>) -> Vec<QueueRef> {
    let all: Vec<QueueRef> = with(|dbs| dbs.iter().flat_map(|(db, set)| set.iter().map(move |q| (*db, q.clone()))).collect());
    match start.and_then(|a| all.iter().position(|x| x >= a)) {
        Some(i) => all[i..].iter().chain(all[..i].iter()).cloned().collect(),
        None => all,
    }
}

pub fn len() -> usize {
    with(|dbs| dbs.values().map(|s| s.len()).sum())
}

/// Keys that hold messages: one of them existing means the queue exists.
pub const MESSAGE_KEYS: [Key; 5] = [Key::Msg, Key::Dly, Key::Bak, Key::Fai, Key::Err];

extern "C" fn on_key_event(ctx: Ctx, _type: c_int, _event: *const std::os::raw::c_char, key: *mut raw::RedisModuleString) -> c_int {
    quietly(ctx, "keyspace notification", || {
        let key = ffi::bytes_of(key);
        crate::settings_cache::on_key(ctx, key);
        if let Some((k, q)) = Key::parse(key) {
            if MESSAGE_KEYS.contains(&k) {
                note(ctx, q);
            }
        }
    });
    0
}

pub fn subscribe(ctx: Ctx) {
    let types = raw::REDISMODULE_NOTIFY_LIST
        | raw::REDISMODULE_NOTIFY_ZSET
        | raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_LOADED
        // For the settings cache: cfg:{q} is a hash that may change, expire or be evicted.
        | raw::REDISMODULE_NOTIFY_HASH
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED;
    unsafe { raw::RedisModule_SubscribeToKeyspaceEvents.unwrap()(ctx, types, Some(on_key_event)) };
}
