//! ACL checks the module makes itself, where a command's key spec cannot say it all:
//! RMQ.QUEUES lists only the queues whose name the caller may read, and RMQ.CONFIG (declared
//! read-only, so that CONFIG GET works for read-only users and on replicas) checks write
//! permission and the node's role for CONFIG SET.

use std::os::raw::c_int;

use redis_module::raw;
use rmq_core::{Error, Result};

use crate::ffi::{self, Ctx, RStr};

/// The ACL user of the client running the command.
pub struct CurrentUser {
    user: *mut raw::RedisModuleUser,
}

impl CurrentUser {
    pub fn of(ctx: Ctx) -> CurrentUser {
        // SAFETY: a command context; the name is ours to free, the user is freed on drop.
        let user = unsafe {
            let name = raw::RedisModule_GetCurrentUserName.unwrap()(ctx);
            let name = RStr::adopt(ctx, name);
            match name {
                Some(n) => raw::RedisModule_GetModuleUserFromUserName.unwrap()(n.ptr),
                None => std::ptr::null_mut(),
            }
        };
        CurrentUser { user }
    }

    fn may(&self, ctx: Ctx, q: &[u8], flags: u32) -> bool {
        if self.user.is_null() {
            return false;
        }
        let key = RStr::new(ctx, q);
        // SAFETY: a live user and key name.
        unsafe { raw::RedisModule_ACLCheckKeyPermissions.unwrap()(self.user, key.ptr, flags as c_int) == raw::REDISMODULE_OK as c_int }
    }

    /// Whether the user's key patterns let it read the queue `q` (the name commands declare).
    pub fn may_read(&self, ctx: Ctx, q: &[u8]) -> bool {
        self.may(ctx, q, raw::REDISMODULE_CMD_KEY_ACCESS)
    }

    /// Whether the user may read any key (`~*` or `%R~*`): then no name needs checking. Asked
    /// of a name no queue and no narrower pattern has.
    pub fn may_read_every_key(&self, ctx: Ctx) -> bool {
        self.may_read(ctx, b"\xff rmq: any key \xff")
    }

    /// Whether the user's key patterns let it change the queue `q`.
    pub fn may_write(&self, ctx: Ctx, q: &[u8]) -> bool {
        self.may(ctx, q, raw::REDISMODULE_CMD_KEY_UPDATE)
    }
}

impl Drop for CurrentUser {
    fn drop(&mut self) {
        if !self.user.is_null() {
            // SAFETY: got from GetModuleUserFromUserName, freed once.
            unsafe { raw::RedisModule_FreeModuleUser.unwrap()(self.user) };
        }
    }
}

/// RMQ.CONFIG q SET … writes: only on a primary, and only for a user who may write `q`.
/// GET goes through.
pub fn check_config(ctx: Ctx, q: &[u8], args: &[&[u8]]) -> Result<()> {
    if !args.first().is_some_and(|sub| sub.eq_ignore_ascii_case(b"SET")) {
        return Ok(());
    }
    let flags = ffi::ctx_flags(ctx);
    if flags & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0 && flags & raw::REDISMODULE_CTX_FLAGS_READONLY != 0 {
        return Err(Error::ReadOnlyReplica);
    }
    if !CurrentUser::of(ctx).may_write(ctx, q) {
        return Err(Error::NoPermission);
    }
    Ok(())
}
