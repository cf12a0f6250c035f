//! How the console reaches Redis.
//!
//! Every command goes through the rmq client (`rmq_client::Client` implements [`Backend`] in
//! `client/src/console_backend.rs`), so the console speaks whichever edition the server has (the
//! module's `RMQ.*` commands, or `FCALL rmq_*` of the Lua library, loaded when missing) with the
//! client's connection pool and timeouts.
//!
//! The trait is defined here rather than the console depending on `rmq-client`, because the
//! `rmq` binary (in the rmq-client package) serves `rmq console` and `rmq metrics` from this
//! crate: Cargo forbids a cycle between two packages, so the client implements the console's
//! trait instead.

use std::future::Future;
use std::pin::Pin;

use redis::Value;

/// A boxed future, so that [`Backend`] can be used as `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failed request: Redis could not take it (`unavailable`: down, timed out, loading …), or
/// refused it (a bad argument, an unknown setting, no permission …).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct RedisError {
    pub unavailable: bool,
    pub text: String,
}

impl RedisError {
    pub fn refused(text: impl Into<String>) -> RedisError {
        RedisError { unavailable: false, text: text.into() }
    }
}

/// One reply.
pub type Reply = Result<Value, RedisError>;

/// One rmq command of a pipeline: `name` in lower case (`stats`), the queue, the arguments after
/// the queue name.
#[derive(Clone, Debug)]
pub struct Call {
    pub name: &'static str,
    pub queue: String,
    pub args: Vec<Vec<u8>>,
}

impl Call {
    pub fn new(name: &'static str, queue: &str, args: &[&str]) -> Call {
        Call { name, queue: queue.to_string(), args: args.iter().map(|a| a.as_bytes().to_vec()).collect() }
    }
}

/// What the console needs of a connection to one Redis server.
pub trait Backend: Send + Sync + 'static {
    /// `"module"` or `"lua"`: which edition answers.
    fn edition(&self) -> BoxFuture<'_, Result<&'static str, RedisError>>;
    /// Runs one rmq command: `RMQ.<NAME> queue args…` or `FCALL rmq_<name> 1 queue args…`
    /// (`queue` None: no key, as for QUEUES).
    fn call<'a>(&'a self, name: &'a str, queue: Option<&'a str>, args: Vec<Vec<u8>>) -> BoxFuture<'a, Reply>;
    /// Runs several rmq commands in one pipeline (one round trip); each gets its own reply.
    fn call_many(&self, calls: Vec<Call>) -> BoxFuture<'_, Result<Vec<Reply>, RedisError>>;
    /// Runs a plain Redis command (INFO).
    fn raw(&self, cmd: redis::Cmd) -> BoxFuture<'_, Reply>;
    /// The Redis URL it is connected to (the console hides a password in it).
    fn url(&self) -> String;
}

/// The URL with any password replaced by `***`, for pages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_string() };
            format!("{scheme}://{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_page() {
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://ann:s3cret@127.0.0.1:6379/0"), "redis://ann:***@127.0.0.1:6379/0");
        assert_eq!(redact_url("rediss://:pw@host:6380"), "rediss://:***@host:6380");
        assert_eq!(redact_url("redis://token@host"), "redis://***@host");
    }
}
