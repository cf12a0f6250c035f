//! How the archive reaches Redis.
//!
//! Every command goes through the rmq client (`rmq_client::Client` implements [`Backend`] in
//! `client/src/archive_backend.rs`), so the archive speaks whichever edition the server has
//! (the module's `RMQ.*` commands, or `FCALL rmq_*` of the Lua library, loaded when missing)
//! with the client's connections and timeouts. The trait is defined here rather than this
//! crate depending on `rmq-client` because the `rmq` binary, in the rmq-client package, runs
//! `rmq archive` from this crate, and Cargo forbids a cycle between two packages.

use std::future::Future;
use std::pin::Pin;

use redis::Value;

/// A boxed future, so that [`Backend`] can be used as `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failed request: Redis could not take it (`unavailable`: down, timed out, loading …:
/// try again later), or refused it (a bad argument, no permission, a wrong key type …).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct RedisError {
    pub unavailable: bool,
    pub text: String,
}

/// One reply.
pub type Reply = Result<Value, RedisError>;

/// One rmq command of a pipeline: `name` in lower case (`push`), the queue, the arguments
/// after the queue name.
#[derive(Clone, Debug)]
pub struct Call {
    pub name: &'static str,
    pub queue: String,
    pub args: Vec<Vec<u8>>,
}

/// What the archive needs of a connection to one Redis server.
pub trait Backend: Send + Sync + 'static {
    /// Runs one rmq command: `RMQ.<NAME> queue args…` or `FCALL rmq_<name> 1 queue args…`
    /// (`queue` None: no key, as for QUEUES).
    fn call<'a>(&'a self, name: &'a str, queue: Option<&'a str>, args: Vec<Vec<u8>>) -> BoxFuture<'a, Reply>;
    /// Runs several rmq commands in one pipeline; each gets its own reply.
    fn call_many(&self, calls: Vec<Call>) -> BoxFuture<'_, Result<Vec<Reply>, RedisError>>;
    /// Runs a plain Redis command that has no key.
    fn raw(&self, cmd: redis::Cmd) -> BoxFuture<'_, Reply>;
    /// Runs a plain Redis command on `key` (the log's stream commands, EVAL), on the server
    /// holding it.
    fn key_command<'a>(&'a self, key: &'a str, cmd: redis::Cmd) -> BoxFuture<'a, Reply>;
    /// Runs plain Redis commands on `key` in one MULTI/EXEC (nothing else runs in between);
    /// each gets its own reply, an error as `Value::ServerError`.
    fn transaction<'a>(&'a self, key: &'a str, cmds: Vec<redis::Cmd>) -> BoxFuture<'a, Result<Vec<Value>, RedisError>>;
    /// The queues rmq lists (RMQ.QUEUES; in a cluster, of every master).
    fn queues(&self) -> BoxFuture<'_, Result<Vec<String>, RedisError>>;
    /// The Redis URL (shown with its password hidden).
    fn url(&self) -> String;
}

/// The bytes of a string reply.
pub fn as_bytes(v: Value) -> Result<Vec<u8>, RedisError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected("a string", &other)),
    }
}

pub fn as_string(v: Value) -> Result<String, RedisError> {
    Ok(String::from_utf8_lossy(&as_bytes(v)?).into_owned())
}

pub fn as_i64(v: Value) -> Result<i64, RedisError> {
    match v {
        Value::Int(i) => Ok(i),
        Value::Nil => Ok(0),
        other => {
            let s = as_string(other)?;
            s.trim().parse().map_err(|_| RedisError { unavailable: false, text: format!("expected an integer, got {s:?}") })
        }
    }
}

/// The pairs of a map reply: a RESP3 map, or a flat RESP2 array.
pub fn pairs(v: Value) -> Result<Vec<(String, Value)>, RedisError> {
    match v {
        Value::Map(m) => m.into_iter().map(|(k, v)| Ok((as_string(k)?, v))).collect(),
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len() / 2);
            let mut it = a.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((as_string(k)?, v));
            }
            Ok(out)
        }
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected("a map", &other)),
    }
}

fn unexpected(what: &str, v: &Value) -> RedisError {
    RedisError { unavailable: false, text: format!("expected {what}, got {v:?}") }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
