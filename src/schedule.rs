//! The guard's schedule: for every queue with work coming (a lock that runs out, a delayed
//! message coming due, a dedup entry leaving its window), the earliest time it has that work.
//!
//! The guard takes only the queues that are due, earliest first, so its work per tick follows
//! what is due, not how many queues exist, and an idle server costs it one lookup. Times are
//! "no later than": a queue may be visited early (an ACK does not move its time back), in
//! which case the guard finds nothing to do and sets the queue's real next time.
//!
//! Kept in memory on Redis's main thread. It is rebuilt, everything due at once, when the
//! dataset is loaded and when this node becomes a primary.

use std::cell::RefCell;
use std::collections::BTreeSet;

use foldhash::HashMap;

/// (database, queue name).
pub type QueueRef = (i32, Vec<u8>);

#[derive(Default)]
struct Schedule {
    by_time: BTreeSet<(u64, QueueRef)>,
    /// database → queue → its time in `by_time`.
    by_queue: HashMap<i32, HashMap<Vec<u8>, u64>>,
}

thread_local! {
    static SCHEDULE: RefCell<Schedule> = RefCell::new(Schedule::default());
}

fn with<T>(f: impl FnOnce(&mut Schedule) -> T) -> T {
    SCHEDULE.with(|s| f(&mut s.borrow_mut()))
}

/// The guard has work on `q` no later than `at`.
pub fn at_most(db: i32, q: &[u8], at: u64) {
    with(|s| {
        // Looked up without allocating: the queue is usually scheduled earlier already.
        let old = s.by_queue.get(&db).and_then(|m| m.get(q)).copied();
        if old.is_some_and(|t| t <= at) {
            return;
        }
        let key = (db, q.to_vec());
        if let Some(t) = old {
            s.by_time.remove(&(t, key.clone()));
        }
        s.by_time.insert((at, key));
        s.by_queue.entry(db).or_default().insert(q.to_vec(), at);
    });
}

/// Takes the queue that is due first, if one is due at `now`.
pub fn take_due(now: u64) -> Option<QueueRef> {
    with(|s| {
        if s.by_time.first()?.0 > now {
            return None;
        }
        let (_, (db, q)) = s.by_time.pop_first()?;
        if let Some(m) = s.by_queue.get_mut(&db) {
            m.remove(&q);
        }
        Some((db, q))
    })
}

/// Whether a queue is due at `now`.
pub fn any_due(now: u64) -> bool {
    with(|s| s.by_time.first().is_some_and(|(t, _)| *t <= now))
}

/// Every one of `queues` is due at `at` (after a load, or on becoming a primary).
pub fn all_due(queues: impl IntoIterator<Item = QueueRef>, at: u64) {
    for (db, q) in queues {
        at_most(db, &q, at);
    }
}

/// Forgets database `db` (all of them for -1): it was flushed.
pub fn forget_db(db: i32) {
    with(|s| {
        s.by_time.retain(|(_, (d, _))| db != -1 && *d != db);
        s.by_queue.retain(|d, _| db != -1 && *d != db);
    });
}

/// Databases `a` and `b` traded places (SWAPDB).
pub fn swap_dbs(a: i32, b: i32) {
    with(|s| {
        let swap = |d: i32| {
            if d == a {
                b
            } else if d == b {
                a
            } else {
                d
            }
        };
        let old = std::mem::take(&mut s.by_time);
        s.by_time = old.into_iter().map(|(t, (d, q))| (t, (swap(d), q))).collect();
        let old = std::mem::take(&mut s.by_queue);
        s.by_queue = old.into_iter().map(|(d, m)| (swap(d), m)).collect();
    });
}

/// How many queues are scheduled.
pub fn len() -> usize {
    with(|s| s.by_queue.values().map(|m| m.len()).sum())
}
