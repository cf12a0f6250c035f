//! The queues this node holds — every queue with at least one of its keys (messages, counters
//! or settings) — for RMQ.QUEUES, INFO and the guard's rebuilds. Kept in memory, never in a key
//! (no key outside a queue's hash tag may exist), and kept exact by keyspace notifications:
//! every write to a queue's key notes the queue (the module's own commands announce their
//! changes like Redis's commands do; replication, AOF and RDB loading, RESTORE during
//! resharding, and hand-made changes notify by themselves), and a deletion forgets it once
//! none of its keys is left. Flushes and SWAPDB arrive as server events.
//!
//! INFO's totals per state are the sum of counts cached per queue. A queue whose keys changed
//! is marked stale and read again later, a bounded number per INFO call and per guard tick,
//! so INFO costs the same whatever the number of queues.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use rmq_core::store::{Key, Store};

use crate::ffi::{self, Ctx};
use crate::schedule::QueueRef;
use crate::store::RedisStore;

#[derive(Default)]
struct Entry {
    /// ready, delayed, inflight, failed, errors, as last read.
    counts: [u64; 5],
    stale: bool,
}

#[derive(Default)]
struct Registry {
    /// Per database, by name (kept sorted for RMQ.QUEUES).
    dbs: HashMap<i32, BTreeMap<Vec<u8>, Entry>>,
    /// Queues whose counts must be read again, oldest change first.
    stale: VecDeque<QueueRef>,
    totals: [u64; 5],
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
    /// The queue noted last, known to be stale already: the common case of a command
    /// announcing several changes to one queue costs no lookup.
    static LAST_NOTED: RefCell<Option<QueueRef>> = const { RefCell::new(None) };
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    REGISTRY.with(|r| f(&mut r.borrow_mut()))
}

/// Queue `q` of database `db` has a key that was just written.
pub fn note(db: i32, q: &[u8]) {
    let known = LAST_NOTED.with(|l| l.borrow().as_ref().is_some_and(|(d, n)| *d == db && n == q));
    if known {
        return;
    }
    with(|r| {
        let m = r.dbs.entry(db).or_default();
        match m.get_mut(q) {
            Some(e) if e.stale => {}
            Some(e) => {
                e.stale = true;
                r.stale.push_back((db, q.to_vec()));
            }
            None => {
                m.insert(q.to_vec(), Entry { counts: [0; 5], stale: true });
                r.stale.push_back((db, q.to_vec()));
            }
        }
    });
    LAST_NOTED.with(|l| *l.borrow_mut() = Some((db, q.to_vec())));
}

/// One of `q`'s keys was deleted (or expired, or evicted): forgets the queue when it has none
/// left. `ctx` has the queue's database selected.
pub fn deleted(ctx: Ctx, db: i32, q: &[u8]) {
    let mut store = RedisStore::reading(ctx, q);
    // Counters are the key most likely to exist: looked at first.
    let left = [Key::St, Key::Msg, Key::Bak, Key::Inf, Key::Dly, Key::Fai, Key::Err, Key::Cfg, Key::Dup, Key::Log]
        .into_iter()
        .any(|k| store.exists(k));
    drop(store);
    if left {
        note(db, q);
        return;
    }
    LAST_NOTED.with(|l| l.borrow_mut().take());
    with(|r| {
        if let Some(e) = r.dbs.get_mut(&db).and_then(|m| m.remove(q)) {
            for (t, c) in r.totals.iter_mut().zip(e.counts) {
                *t -= c;
            }
        }
    });
}

/// Calls `f` with the name of every queue of database `db`, sorted by name; `f` must not
/// write (it runs while the registry is borrowed).
pub fn each_name(db: i32, mut f: impl FnMut(&[u8])) {
    REGISTRY.with(|r| {
        if let Some(m) = r.borrow().dbs.get(&db) {
            for name in m.keys() {
                f(name);
            }
        }
    });
}

/// Every queue of every database.
pub fn all() -> Vec<QueueRef> {
    with(|r| r.dbs.iter().flat_map(|(db, m)| m.keys().map(move |q| (*db, q.clone()))).collect())
}

pub fn len() -> usize {
    with(|r| r.dbs.values().map(|m| m.len()).sum())
}

/// Reads the counts of up to `limit` queues that changed since they were last read.
/// `ctx` may select databases; the caller's selection is restored.
pub fn refresh(ctx: Ctx, limit: usize) {
    let selected = ffi::selected_db(ctx);
    LAST_NOTED.with(|l| l.borrow_mut().take());
    for _ in 0..limit {
        let Some((db, q)) = with(|r| r.stale.pop_front()) else { break };
        ffi::select_db(ctx, db);
        let mut s = RedisStore::reading(ctx, &q);
        let counts = [s.llen(Key::Msg), s.zcard(Key::Dly), s.zcard(Key::Bak), s.llen(Key::Fai), s.llen(Key::Err)];
        drop(s);
        with(|r| {
            let Some(e) = r.dbs.get_mut(&db).and_then(|m| m.get_mut(&q)) else { return };
            for ((t, old), new) in r.totals.iter_mut().zip(e.counts).zip(counts) {
                *t = *t - old + new;
            }
            e.counts = counts;
            e.stale = false;
        });
    }
    ffi::select_db(ctx, selected);
}

/// Messages per state (ready, delayed, inflight, failed, errors) over every queue, as last
/// read, and how many queues changed since.
pub fn totals() -> ([u64; 5], usize) {
    with(|r| (r.totals, r.stale.len()))
}

/// Database `db` (all of them for -1) was flushed.
pub fn forget_db(db: i32) {
    LAST_NOTED.with(|l| l.borrow_mut().take());
    with(|r| {
        r.dbs.retain(|d, _| db != -1 && *d != db);
        r.stale.retain(|(d, _)| db != -1 && *d != db);
        r.totals = [0; 5];
        for e in r.dbs.values().flat_map(|m| m.values()) {
            for (t, c) in r.totals.iter_mut().zip(e.counts) {
                *t += c;
            }
        }
    });
}

/// Databases `a` and `b` traded places (SWAPDB).
pub fn swap_dbs(a: i32, b: i32) {
    LAST_NOTED.with(|l| l.borrow_mut().take());
    with(|r| {
        let swap = |d: i32| {
            if d == a {
                b
            } else if d == b {
                a
            } else {
                d
            }
        };
        let dbs = std::mem::take(&mut r.dbs);
        r.dbs = dbs.into_iter().map(|(d, m)| (swap(d), m)).collect();
        for (d, _) in r.stale.iter_mut() {
            *d = swap(*d);
        }
    });
}
