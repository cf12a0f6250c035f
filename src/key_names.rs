//! The key names of recently used queues (`msg:{q}`, `bak:{q}`, …), made once and shared by
//! reference count from one command to the next.
//!
//! Every command opens five to eight keys of its queue; making each name afresh (format it,
//! allocate a Redis string, free it at the end) cost about 400 instructions a key, some 8 % of
//! a push-fetch-ack cycle. A name depends on the queue's name alone (not on the database, the
//! settings or the data), so a kept one is never stale.
//!
//! The table is direct-mapped and bounded: [`SLOTS`] queues at most, with names of up to
//! [`MAX_QUEUE_NAME`] bytes; a queue that hashes to a taken slot replaces its holder. Commands
//! on any number of distinct queues therefore never grow the module's memory, and cost what
//! they did before when they miss.
//!
//! A name handed out is retained for its user (one more reference), so replacing an entry
//! while a command still holds one of its names frees nothing that command uses. Redis never
//! changes a key-name string it is given: it copies the bytes when it creates the key.

use std::cell::RefCell;
use std::ptr;

use redis_module::raw;
use rmq_core::store::Key;

use crate::ffi::{Ctx, RStr};

/// Queues whose names are kept (each up to 10 names, made when first used).
const SLOTS: usize = 256;

/// Longer queue names are not kept (their key names are made afresh each time). Commands
/// refuse longer names, but the guard also visits queues found from their keys: the table
/// stays under about 700 KB whatever keys exist.
const MAX_QUEUE_NAME: usize = 200;

const KEYS: usize = Key::ALL.len();

struct Entry {
    queue: Box<[u8]>,
    /// Made when first asked for; null until then. Each holds one reference of the table's.
    names: [*mut raw::RedisModuleString; KEYS],
}

impl Drop for Entry {
    fn drop(&mut self) {
        for s in self.names.into_iter().filter(|s| !s.is_null()) {
            // SAFETY: made with no context by `name`, and this is the table's one reference.
            unsafe { raw::RedisModule_FreeString.unwrap()(ptr::null_mut(), s) }
        }
    }
}

thread_local! {
    /// Used on Redis's main thread only (commands, timers and events all run there).
    static TABLE: RefCell<Vec<Option<Entry>>> = RefCell::new((0..SLOTS).map(|_| None).collect());
}

/// FNV-1a: a name picks its slot. A collision only costs a miss (the slot is replaced), so
/// a crafted set of names cannot make a lookup slower than making the name afresh.
fn slot_of(queue: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in queue {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % SLOTS as u64) as usize
}

/// The name of `queue`'s key `k`, for `ctx`'s command to use and free (as any [`RStr`]).
pub fn name(ctx: Ctx, queue: &[u8], k: Key) -> RStr {
    if queue.len() > MAX_QUEUE_NAME {
        return RStr::new(ctx, &k.name(queue));
    }
    let s = TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let entry = &mut t[slot_of(queue)];
        if entry.as_ref().is_none_or(|e| *e.queue != *queue) {
            *entry = Some(Entry { queue: queue.into(), names: [ptr::null_mut(); KEYS] });
        }
        let s = &mut entry.as_mut().unwrap().names[k as usize];
        if s.is_null() {
            let bytes = k.name(queue);
            // SAFETY: with no context the string is not tied to a command; freed by `Entry`.
            *s = unsafe { raw::RedisModule_CreateString.unwrap()(ptr::null_mut(), bytes.as_ptr().cast(), bytes.len()) };
        }
        // SAFETY: a live string; the caller's reference, given up when its RStr drops.
        unsafe { raw::RedisModule_RetainString.unwrap()(ptr::null_mut(), *s) };
        *s
    });
    RStr::adopt(ctx, s).unwrap_or_else(|| RStr::new(ctx, &k.name(queue)))
}
