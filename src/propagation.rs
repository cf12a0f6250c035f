//! Whether a command's effects must be handed to Redis for replicas and the AOF.
//!
//! Redis drops propagated commands at the very end when there is no AOF, no replica and no
//! replication backlog, but building them (RM_Replicate looks each command up by name and
//! copies its arguments) is a quarter of a queue's instructions. So the store skips that work
//! when nothing could receive it: the AOF is off (checked at every command), and no replica has
//! ever asked this server to sync since it started (SYNC, PSYNC and REPLCONF are watched by a
//! command filter) and none had when the module loaded. Once a replica has asked, effects are
//! always propagated: the replication backlog keeps them for partial resyncs.

use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::{raw, Context};

use crate::ffi::{self, Ctx};

/// A replica has connected, or may have: propagate from now on.
static REPLICAS_SEEN: AtomicBool = AtomicBool::new(true);

/// Whether effects must be propagated now.
pub fn needed(ctx: Ctx) -> bool {
    REPLICAS_SEEN.load(Ordering::Relaxed) || ffi::ctx_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_AOF != 0
}

/// A command a replica sends to sync is about to run.
pub fn on_command(name: &[u8]) {
    if name.eq_ignore_ascii_case(b"psync") || name.eq_ignore_ascii_case(b"sync") || name.eq_ignore_ascii_case(b"replconf") {
        REPLICAS_SEEN.store(true, Ordering::Relaxed);
    }
}

/// At load: effects may be skipped only if this server has never had a replica, has no
/// replication backlog and is not a replica itself (then it propagates its master's stream).
pub fn start(ctx: Ctx) {
    let info = Context::new(ctx).server_info("replication");
    let field = |name: &str| info.field(name).map(|v| v.to_string()).unwrap_or_default();
    let alone = field("role") == "master" && field("connected_slaves") == "0" && field("repl_backlog_active") == "0";
    REPLICAS_SEEN.store(!alone, Ordering::Relaxed);
}
