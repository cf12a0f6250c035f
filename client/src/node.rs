//! One Redis server: a small pool of shared multiplexed connections, a pool of dedicated
//! connections for commands that hold their connection (a blocking FETCH, a PUSH followed by
//! WAIT), and the sending of a pipeline with a time limit.
//!
//! A failure says whether the request may have reached the server, so that the layer above
//! sends again only what is safe to send again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::Mutex;

use crate::client::classify;
use crate::error::Error;

/// How long a node waits to open a connection, and how many shared connections it keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeSettings {
    pub pool_size: usize,
    pub connect_timeout: Duration,
}

pub(crate) struct Node {
    /// The URL, password hidden: what messages name.
    pub display: String,
    tls: bool,
    redis: redis::Client,
    settings: NodeSettings,
    shared: Vec<Mutex<Option<MultiplexedConnection>>>,
    next: AtomicUsize,
    /// Connections kept for commands that hold their connection while they wait.
    dedicated: Mutex<Vec<MultiplexedConnection>>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) struct SendError {
    pub err: Error,
    /// False when no connection could be opened, so the request never left: sending it again
    /// is always safe. True when it was sent and the answer was lost: it may have been applied.
    pub sent: bool,
}

impl Node {
    pub fn new(url: &str, display: String, settings: NodeSettings) -> Result<Node, Error> {
        let redis = redis::Client::open(url).map_err(|e| Error::Config(format!("bad Redis URL: {e}")))?;
        let n = settings.pool_size.max(1);
        Ok(Node {
            display,
            tls: url.starts_with("rediss://"),
            redis,
            settings,
            shared: (0..n).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            dedicated: Mutex::new(Vec::new()),
        })
    }

    /// A new connection, within the connect timeout and at most `within`: its setup sends
    /// commands (CLIENT SETINFO …) that a paused or busy server holds, and the caller's
    /// command timeout covers them too.
    async fn connect(&self, within: Duration) -> Result<MultiplexedConnection, Error> {
        let t = self.settings.connect_timeout;
        let cfg = AsyncConnectionConfig::new().set_connection_timeout(Some(t)).set_response_timeout(None);
        let fut = self.redis.get_multiplexed_async_connection_with_config(&cfg);
        let limit = (t + Duration::from_millis(100)).min(within);
        let err = match tokio::time::timeout(limit, fut).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => classify(e),
            Err(_) => Error::Unavailable(format!("no answer within {} ms", limit.as_millis())),
        };
        // Name the server: a wrong address or a TLS mismatch must not look like an outage of
        // some other server.
        Err(match err {
            Error::Unavailable(why) => Error::Unavailable(format!("cannot connect to {}: {why}{}", self.display, self.tls_hint(&why))),
            other => other,
        })
    }

    /// A hint when a connection failure looks like TLS spoken to a plain port, or plain text
    /// spoken to a TLS port (which often just hangs until the timeout).
    fn tls_hint(&self, why: &str) -> &'static str {
        let lower = why.to_lowercase();
        if self.tls
            && (lower.contains("tls")
                || lower.contains("ssl")
                || lower.contains("corrupt")
                || lower.contains("handshake")
                || lower.contains("certificate")
                || lower.contains("timed out")
                || lower.contains("no answer"))
        {
            " (the URL asks for TLS: does the server speak TLS on that port?)"
        } else if !self.tls
            && (lower.contains("no answer") || lower.contains("reset") || lower.contains("closed") || lower.contains("broken pipe"))
        {
            " (is the address right? a server that only speaks TLS needs rediss://)"
        } else {
            ""
        }
    }

    /// An unavailable error that names the server, once.
    pub fn name_server(&self, e: Error) -> Error {
        match e {
            Error::Unavailable(why) if !why.contains(&self.display) => Error::Unavailable(format!("{}: {why}", self.display)),
            other => other,
        }
    }

    /// Sends `pipe` (built with `ignore_errors`, so each command's error reply is a
    /// `Value::ServerError` in its place) and waits up to `t` for every answer. `dedicated`
    /// takes a connection no one else uses meanwhile, for commands that make the server hold
    /// the connection (BLOCK, WAIT).
    pub async fn send(&self, pipe: &redis::Pipeline, t: Duration, dedicated: bool) -> Result<Vec<Value>, SendError> {
        let not_sent = |err| SendError { err, sent: false };
        let started = tokio::time::Instant::now();
        let (slot, mut conn) = if dedicated {
            let pooled = self.dedicated.lock().await.pop();
            match pooled {
                Some(c) => (None, c),
                None => (None, self.connect(t).await.map_err(not_sent)?),
            }
        } else {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shared.len();
            let mut g = self.shared[i].lock().await;
            let c = match g.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = self.connect(t).await.map_err(not_sent)?;
                    *g = Some(c.clone());
                    c
                }
            };
            (Some(i), c)
        };
        let lost = |err| SendError { err, sent: true };
        let left = t.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, pipe.query_async::<Vec<Value>>(&mut conn)).await {
            Ok(Ok(v)) => {
                if slot.is_none() {
                    self.dedicated.lock().await.push(conn);
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                let err = self.name_server(classify(e));
                match (slot, err.is_unavailable()) {
                    // The connection may be dead: start a new one next time.
                    (Some(i), true) => *self.shared[i].lock().await = None,
                    (None, false) => self.dedicated.lock().await.push(conn),
                    _ => {}
                }
                Err(lost(err))
            }
            Err(_) => {
                // The connection may be dead without knowing it: start a new one next time.
                if let Some(i) = slot {
                    *self.shared[i].lock().await = None;
                }
                Err(lost(Error::Unavailable(format!("no answer from {} within {} ms", self.display, t.as_millis()))))
            }
        }
    }
}
