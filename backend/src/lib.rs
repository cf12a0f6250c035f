//! rmq-backend: what rmq's console (`rmq console`, `rmq metrics`) and SQL archive (`rmq
//! archive`) need of a connection to Redis, as one trait.
//!
//! Every command goes through the rmq client (`rmq_client::Client` implements [`Backend`] in
//! `client/src/backend.rs`), so both speak whichever edition the server has (the module's
//! `RMQ.*` commands, or `FCALL rmq_*` of the Lua library, loaded when missing), on a single
//! server or a cluster, with the client's connections and timeouts.
//!
//! The trait lives in this small crate of its own rather than in `rmq-client` because the
//! `rmq` binary, in the rmq-client package, serves the console and runs the archive from their
//! crates, and Cargo forbids a cycle between packages: the console and the archive depend on
//! this crate, the client implements it.

pub mod reply;
mod signal;

pub use signal::shutdown_signal;

use std::future::Future;
use std::pin::Pin;

use redis::Value;

/// A boxed future, so that [`Backend`] can be used as `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failed request: Redis could not take it (`unavailable`: down, timed out, loading …: try
/// again later), or refused it (a bad argument, an unknown setting, no permission, a wrong key
/// type …).
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

/// One rmq command of a pipeline: `name` in lower case (`stats`), the queue, the arguments
/// after the queue name.
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

/// What the console and the archive need of a connection to Redis (one server, or a cluster).
pub trait Backend: Send + Sync + 'static {
    /// `"module"` or `"lua"`: which edition answers.
    fn edition(&self) -> BoxFuture<'_, Result<&'static str, RedisError>>;
    /// Runs one rmq command: `RMQ.<NAME> queue args…` or `FCALL rmq_<name> 1 queue args…`
    /// (`queue` None: no key, as for QUEUES).
    fn call<'a>(&'a self, name: &'a str, queue: Option<&'a str>, args: Vec<Vec<u8>>) -> BoxFuture<'a, Reply>;
    /// Runs several rmq commands in one pipeline (in a cluster, one per queue's slot, at the
    /// same time); each gets its own reply.
    fn call_many(&self, calls: Vec<Call>) -> BoxFuture<'_, Result<Vec<Reply>, RedisError>>;
    /// Runs a plain Redis command that has no key (INFO).
    fn raw(&self, cmd: redis::Cmd) -> BoxFuture<'_, Reply>;
    /// Runs a plain Redis command on `key` (a log's stream commands, EVAL), on the server
    /// holding it.
    fn key_command<'a>(&'a self, key: &'a str, cmd: redis::Cmd) -> BoxFuture<'a, Reply>;
    /// Runs plain Redis commands, each on the server holding its key, pipelined (one round
    /// trip on a single server; in a cluster, one per slot, at the same time); each gets its
    /// own reply. For reads that must not cost a round trip per key.
    fn key_commands(&self, cmds: Vec<(String, redis::Cmd)>) -> BoxFuture<'_, Result<Vec<Reply>, RedisError>>;
    /// Runs plain Redis commands on `key` in one MULTI/EXEC (nothing else runs in between);
    /// each gets its own reply, an error as `Value::ServerError`.
    fn transaction<'a>(&'a self, key: &'a str, cmds: Vec<redis::Cmd>) -> BoxFuture<'a, Result<Vec<Value>, RedisError>>;
    /// The queues rmq lists (RMQ.QUEUES; in a cluster, of every master).
    fn queues(&self) -> BoxFuture<'_, Result<Vec<String>, RedisError>>;
    /// The Redis URL it is connected to (shown with its password hidden).
    fn url(&self) -> String;
}
