//! Redis Cluster: a queue's keys all live in the slot of its name, and while that slot moves
//! between nodes (`redis-cli --cluster reshard`, CLUSTER SETSLOT … MIGRATING / IMPORTING) the
//! keys are split between the two nodes. A command run on either side would then act on part
//! of the queue, so every command refuses with TRYAGAIN (as Redis does for a multi-key command
//! whose keys are split) until the slot has moved, and the guard leaves the slot alone.
//!
//! The commands declare the bare queue name as their key, a key that never exists, so Redis's
//! own checks cannot see the split: the module keeps the node's migrating and importing slots
//! in memory, read from `CLUSTER NODES` whenever a `CLUSTER SETSLOT` may have changed them (a
//! command filter sees every one), at load and at every guard tick. A SETSLOT may take effect
//! some time after it is seen (Valkey 8 first waits for the replicas to take it), so for two
//! seconds after one the slots are read again at every command.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redis_module::{raw, Context, RedisValue};
use rmq_core::cluster::{moving_slots, slot_of};
use rmq_core::{Error, Result};

use crate::ffi::{self, Ctx};

/// `CLUSTER NODES` must be read again before the slots below are trusted.
static STALE: AtomicBool = AtomicBool::new(true);
/// When a CLUSTER SETSLOT was last seen (unix ms).
static SETSLOT_SEEN_MS: AtomicU64 = AtomicU64::new(0);
/// How long after a SETSLOT the slots are read again at every command.
const SETSLOT_SETTLE_MS: u64 = 2_000;

thread_local! {
    /// The slots this node is migrating to, or importing from, another node.
    static MOVING: RefCell<BTreeSet<u16>> = const { RefCell::new(BTreeSet::new()) };
}

fn cluster_enabled(ctx: Ctx) -> bool {
    ffi::ctx_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0
}

/// Reads the node's moving slots again if a SETSLOT may have changed them.
fn refresh(ctx: Ctx) {
    let settling = ffi::now_ms().saturating_sub(SETSLOT_SEEN_MS.load(Ordering::Relaxed)) < SETSLOT_SETTLE_MS;
    if !STALE.swap(false, Ordering::Relaxed) && !settling {
        return;
    }
    let nodes = match Context::new(ctx).call("CLUSTER", &["NODES"]) {
        Ok(RedisValue::BulkString(s)) | Ok(RedisValue::SimpleString(s)) => s,
        Ok(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => {
            STALE.store(true, Ordering::Relaxed);
            return;
        }
    };
    let moving = moving_slots(&nodes);
    MOVING.with(|m| *m.borrow_mut() = moving);
}

/// Whether the slot of `q` is moving between nodes (false outside a cluster).
pub fn moving(ctx: Ctx, q: &[u8]) -> bool {
    if !cluster_enabled(ctx) {
        return false;
    }
    refresh(ctx);
    MOVING.with(|m| {
        let m = m.borrow();
        !m.is_empty() && m.contains(&slot_of(q))
    })
}

/// Refuses a command on a queue whose slot is moving.
pub fn check_stable(ctx: Ctx, q: &[u8]) -> Result<()> {
    if moving(ctx, q) {
        return Err(Error::SlotMoving);
    }
    Ok(())
}

/// The next read of the moving slots asks CLUSTER NODES again (at every guard tick, and after
/// loading or a role change).
pub fn stale() {
    STALE.store(true, Ordering::Relaxed);
}

/// A CLUSTER SETSLOT is about to run: the slots are read again at every command until it has
/// surely taken effect.
pub fn setslot_seen() {
    SETSLOT_SEEN_MS.store(ffi::now_ms(), Ordering::Relaxed);
    stale();
}
