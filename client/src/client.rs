//! The connection layer: a small pool of multiplexed connections, the two editions (RMQ.*
//! commands of the module, or FCALL of the Lua library), and typed wrappers of the commands.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, ServerErrorKind, Value};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::message::{Message, Push};

/// The Lua edition, built into this crate.
pub const EMBEDDED_LUA: &str = include_str!("../../lua/rmq.lua");

/// The Lua library's source: the embedded copy, or the file named by `RMQ_LUA` (to try
/// another version without rebuilding).
pub fn lua_library() -> Result<String> {
    if let Ok(p) = std::env::var("RMQ_LUA") {
        return std::fs::read_to_string(&p).map_err(|e| Error::Config(format!("RMQ_LUA={p}: {e}")));
    }
    Ok(EMBEDDED_LUA.to_string())
}

/// Which command set the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Edition {
    /// The module is loaded: `RMQ.PUSH q …`, and FETCH can BLOCK on the server.
    Module,
    /// No module: `FCALL rmq_push 1 q …`; the client waits for BLOCK itself, polling.
    Lua,
}

/// Which edition to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EditionChoice {
    /// The module when it is loaded, else the Lua library (loaded by the client if needed).
    #[default]
    Auto,
    Module,
    Lua,
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS (`#insecure` at the
    /// end skips certificate checks).
    pub url: String,
    /// Multiplexed connections shared by all calls (each carries many requests at once).
    pub pool_size: usize,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one command's answer (a blocking FETCH gets its BLOCK time on top).
    pub command_timeout: Duration,
    pub edition: EditionChoice,
    /// Polling of the Lua edition, which cannot block: first and longest pause between two
    /// empty FETCHes.
    pub poll_min: Duration,
    pub poll_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            edition: EditionChoice::Auto,
            poll_min: Duration::from_millis(5),
            poll_max: Duration::from_millis(250),
        }
    }
}

impl Config {
    pub fn new(url: impl Into<String>) -> Config {
        Config { url: url.into(), ..Default::default() }
    }
}

/// Options of FETCH.
#[derive(Clone, Debug, Default)]
pub struct Fetch {
    pub count: Option<u32>,
    pub lock: Option<Duration>,
    /// Wait up to this long for a message; `Some(ZERO)` waits forever.
    pub block: Option<Duration>,
    pub consumer: Option<String>,
}

/// What NACK does with the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackKind {
    /// Back to ready, or to delayed (by `delay`, or by the queue's backoff).
    Retry { delay: Option<Duration> },
    /// To failed (dead) now.
    Fail,
    /// To errors now.
    Error,
}

/// Counters of RMQ.STATS, by name.
pub type Stats = BTreeMap<String, i64>;

/// Number of distinct edition states kept in an atomic.
const ED_UNKNOWN: u8 = 0;
const ED_MODULE: u8 = 1;
const ED_LUA: u8 = 2;

struct Inner {
    cfg: Config,
    redis: redis::Client,
    slots: Vec<Mutex<Option<MultiplexedConnection>>>,
    next: AtomicUsize,
    edition: AtomicU8,
    /// Connections kept for blocking FETCHes (module edition), which would hold up a shared one.
    blocking: Mutex<Vec<MultiplexedConnection>>,
}

/// A handle on one Redis server, cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Sorts a Redis error into "Redis could not take it" (unavailable: retry, spool) and "Redis
/// refused it" (the request itself is at fault, or a setting: report it).
pub fn classify(e: RedisError) -> Error {
    let text = e.to_string();
    match e.kind() {
        ErrorKind::Io => Error::Unavailable(text),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => Error::Unavailable(text),
        ErrorKind::Extension => match e.code() {
            // A long script holds the server; out of memory; cannot persist; not enough
            // replicas: all pass, none is the message's fault.
            Some("BUSY" | "OOM" | "MISCONF" | "NOREPLICAS" | "LOADING") => Error::Unavailable(text),
            _ => Error::Refused(server_text(&e)),
        },
        ErrorKind::Server(_) | ErrorKind::AuthenticationFailed => Error::Refused(server_text(&e)),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Error::Protocol(text),
        _ => {
            if e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
                Error::Unavailable(text)
            } else {
                Error::Refused(text)
            }
        }
    }
}

/// "ERR queue full" as Redis sent it (code and detail), not the crate's decorated text.
fn server_text(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(c), Some(d)) => format!("{c} {d}"),
        (Some(c), None) => c.to_string(),
        _ => e.to_string(),
    }
}

impl Client {
    /// Checks the settings; connections are opened when first needed.
    pub fn new(cfg: Config) -> Result<Client> {
        let redis = redis::Client::open(cfg.url.as_str()).map_err(|e| Error::Config(format!("bad Redis URL: {e}")))?;
        let n = cfg.pool_size.max(1);
        let slots = (0..n).map(|_| Mutex::new(None)).collect();
        let edition = match cfg.edition {
            EditionChoice::Auto => ED_UNKNOWN,
            EditionChoice::Module => ED_MODULE,
            EditionChoice::Lua => ED_LUA,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                cfg,
                redis,
                slots,
                next: AtomicUsize::new(0),
                edition: AtomicU8::new(edition),
                blocking: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn open(url: &str) -> Result<Client> {
        Client::new(Config::new(url))
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The URL without its password, for messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.inner.cfg.url)
    }

    async fn connect(&self) -> Result<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new().set_connection_timeout(Some(self.inner.cfg.connect_timeout)).set_response_timeout(None);
        let fut = self.inner.redis.get_multiplexed_async_connection_with_config(&cfg);
        let t = self.inner.cfg.connect_timeout;
        let err = match tokio::time::timeout(t + Duration::from_millis(100), fut).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => classify(e),
            Err(_) => Error::Unavailable(format!("no answer within {} ms", t.as_millis())),
        };
        // Name the server: a wrong address or a TLS mismatch must not look like an outage
        // of some other server.
        Err(match err {
            Error::Unavailable(why) => {
                Error::Unavailable(format!("cannot connect to {}: {why}{}", self.display_url(), self.tls_hint(&why)))
            }
            other => other,
        })
    }

    /// An unavailable error that names the server, once.
    fn name_server(&self, e: Error) -> Error {
        match e {
            Error::Unavailable(why) if !why.contains(&self.display_url()) => Error::Unavailable(format!("{}: {why}", self.display_url())),
            other => other,
        }
    }

    /// A hint when a connection failure looks like TLS spoken to a plain port, or plain
    /// text spoken to a TLS port (which often just hangs until the timeout).
    fn tls_hint(&self, why: &str) -> &'static str {
        let tls = self.inner.cfg.url.starts_with("rediss://");
        let lower = why.to_lowercase();
        if tls
            && (lower.contains("tls")
                || lower.contains("ssl")
                || lower.contains("corrupt")
                || lower.contains("handshake")
                || lower.contains("certificate")
                || lower.contains("timed out")
                || lower.contains("no answer"))
        {
            " (the URL asks for TLS: does the server speak TLS on that port?)"
        } else if !tls
            && (lower.contains("no answer") || lower.contains("reset") || lower.contains("closed") || lower.contains("broken pipe"))
        {
            " (is the address right? a server that only speaks TLS needs rediss://)"
        } else {
            ""
        }
    }

    /// A shared connection and its slot.
    async fn conn(&self) -> Result<(usize, MultiplexedConnection)> {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        let mut slot = self.inner.slots[i].lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok((i, c.clone()));
        }
        let c = self.connect().await?;
        *slot = Some(c.clone());
        Ok((i, c))
    }

    async fn drop_slot(&self, i: usize) {
        *self.inner.slots[i].lock().await = None;
    }

    /// Runs one raw command on a shared connection, with the command timeout.
    pub async fn raw(&self, cmd: &redis::Cmd) -> Result<Value> {
        self.raw_timeout(cmd, self.inner.cfg.command_timeout).await
    }

    async fn raw_timeout(&self, cmd: &redis::Cmd, t: Duration) -> Result<Value> {
        let (i, mut c) = self.conn().await?;
        match tokio::time::timeout(t, cmd.query_async::<Value>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let err = self.name_server(classify(e));
                if matches!(err, Error::Unavailable(_)) {
                    self.drop_slot(i).await;
                }
                Err(err)
            }
            Err(_) => {
                // The connection may be dead without knowing it: start a new one next time.
                self.drop_slot(i).await;
                Err(Error::Unavailable(format!("no answer from {} within {} ms", self.display_url(), t.as_millis())))
            }
        }
    }

    /// Runs plain Redis commands in one MULTI/EXEC, in one round trip: nothing else runs on
    /// the server in between. Each command gets its own reply (an error as
    /// `Value::ServerError`).
    pub async fn raw_transaction(&self, cmds: &[redis::Cmd]) -> Result<Vec<Value>> {
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        for c in cmds {
            pipe.add_command(c.clone());
        }
        let t = self.inner.cfg.command_timeout;
        let (i, mut c) = self.conn().await?;
        match tokio::time::timeout(t, pipe.query_async::<Vec<Value>>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let err = classify(e);
                if matches!(err, Error::Unavailable(_)) {
                    self.drop_slot(i).await;
                }
                Err(err)
            }
            Err(_) => {
                self.drop_slot(i).await;
                Err(Error::Unavailable(format!("no answer within {t:?}")))
            }
        }
    }

    /// Which edition the server answers (found out once, then again after a restart showed a
    /// change).
    pub async fn edition(&self) -> Result<Edition> {
        match self.inner.edition.load(Ordering::Relaxed) {
            ED_MODULE => return Ok(Edition::Module),
            ED_LUA => return Ok(Edition::Lua),
            _ => {}
        }
        let ed = self.detect().await?;
        self.inner.edition.store(if ed == Edition::Module { ED_MODULE } else { ED_LUA }, Ordering::Relaxed);
        Ok(ed)
    }

    async fn detect(&self) -> Result<Edition> {
        let v = self.raw(redis::cmd("COMMAND").arg("INFO").arg("rmq.push")).await;
        match v {
            Ok(Value::Array(items)) => {
                if items.first().is_some_and(|v| !matches!(v, Value::Nil)) {
                    Ok(Edition::Module)
                } else {
                    Ok(Edition::Lua)
                }
            }
            Ok(_) => Ok(Edition::Lua),
            Err(Error::Refused(_)) => {
                // COMMAND may be forbidden by an ACL: ask the module itself.
                match self.raw(&redis::cmd("RMQ.QUEUES")).await {
                    Ok(_) => Ok(Edition::Module),
                    Err(Error::Refused(t)) if t.to_lowercase().contains("unknown command") => Ok(Edition::Lua),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the Lua library unless the server has it already.
    pub async fn load_lua(&self, replace: bool) -> Result<()> {
        let code = lua_library()?;
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD");
        if replace {
            cmd.arg("REPLACE");
        }
        cmd.arg(code);
        match self.raw(&cmd).await {
            Ok(_) => Ok(()),
            Err(Error::Refused(t)) if t.contains("already exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The command `name` (lower case) for queue `q` in `ed`.
    fn build(ed: Edition, name: &str, q: Option<&str>, args: &[Vec<u8>]) -> redis::Cmd {
        let mut c;
        match ed {
            Edition::Module => {
                c = redis::cmd(&format!("RMQ.{}", name.to_uppercase()));
                if let Some(q) = q {
                    c.arg(q);
                }
            }
            Edition::Lua => {
                c = redis::cmd("FCALL");
                c.arg(format!("rmq_{name}"));
                match q {
                    Some(q) => {
                        c.arg(1).arg(q);
                    }
                    None => {
                        c.arg(0);
                    }
                }
            }
        }
        for a in args {
            c.arg(a.as_slice());
        }
        c
    }

    /// Runs an rmq command in whichever edition the server has. A Lua library missing from
    /// the server (a restart without persistence, a FUNCTION FLUSH) is loaded again, and a
    /// server whose edition changed is asked again.
    ///
    /// Only a command that writes installs the Lua library on a server that has neither the
    /// module nor the library (and logs a warning that it did); a read-only one answers
    /// [`Error::NotInstalled`], so looking at a server never changes it.
    pub async fn call(&self, name: &str, q: Option<&str>, args: &[Vec<u8>]) -> Result<Value> {
        self.call_timeout(name, q, args, self.inner.cfg.command_timeout).await
    }

    async fn call_timeout(&self, name: &str, q: Option<&str>, args: &[Vec<u8>], t: Duration) -> Result<Value> {
        let mut tries = 0;
        loop {
            tries += 1;
            let ed = self.edition().await?;
            let res = self.raw_timeout(&Self::build(ed, name, q, args), t).await;
            match res {
                Err(Error::Refused(text)) if tries < 3 && self.recoverable(ed, &text, writes(name, args)).await? => continue,
                other => return other,
            }
        }
    }

    /// After an error that means "the edition is not what we thought", fixes that and says
    /// whether to try again.
    async fn recoverable(&self, ed: Edition, text: &str, writes: bool) -> Result<bool> {
        let lower = text.to_lowercase();
        if ed == Edition::Lua && lower.contains("function not found") {
            if self.inner.cfg.edition == EditionChoice::Auto {
                // Maybe the module is there now.
                self.inner.edition.store(ED_UNKNOWN, Ordering::Relaxed);
                if self.edition().await? == Edition::Module {
                    return Ok(true);
                }
            }
            if !writes {
                return Err(Error::NotInstalled(format!(
                    "rmq is not installed on {}: neither the RMQ module nor the rmq Lua \
                     library is loaded (a command that writes, such as a push, loads the library)",
                    self.display_url()
                )));
            }
            self.load_lua(false).await?;
            tracing::warn!(server = %self.display_url(),
                "rmq: installed the rmq Lua library (FUNCTION LOAD): the server has no rmq module");
            return Ok(true);
        }
        if ed == Edition::Module && lower.contains("unknown command") && self.inner.cfg.edition == EditionChoice::Auto {
            self.inner.edition.store(ED_UNKNOWN, Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
    }

    /// Runs several rmq commands in one pipeline; each gets its own result.
    pub async fn call_many(&self, cmds: &[(&str, &str, Vec<Vec<u8>>)]) -> Result<Vec<Result<Value>>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let ed = self.edition().await?;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for (name, q, args) in cmds {
                pipe.add_command(Self::build(ed, name, Some(q), args));
            }
            let (i, mut c) = self.conn().await?;
            let t = self.inner.cfg.command_timeout + Duration::from_millis(cmds.len() as u64 / 10);
            let res: Vec<Value> = match tokio::time::timeout(t, pipe.query_async::<Vec<Value>>(&mut c)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    let err = self.name_server(classify(e));
                    if matches!(err, Error::Unavailable(_)) {
                        self.drop_slot(i).await;
                    }
                    return Err(err);
                }
                Err(_) => {
                    self.drop_slot(i).await;
                    return Err(Error::Unavailable(format!("no answer from {} within {} ms", self.display_url(), t.as_millis())));
                }
            };
            let out: Vec<Result<Value>> = res
                .into_iter()
                .map(|v| match v {
                    Value::ServerError(se) => Err(classify(RedisError::from(se))),
                    v => Ok(v),
                })
                .collect();
            if tries < 3 {
                if let Some(Err(Error::Refused(t))) = out.iter().find(|r| matches!(r, Err(Error::Refused(_)))) {
                    let t = t.clone();
                    let w = cmds.iter().any(|(name, _, args)| writes(name, args));
                    if self.recoverable(ed, &t, w).await? {
                        continue;
                    }
                }
            }
            return Ok(out);
        }
    }

    /// PING.
    pub async fn ping(&self) -> Result<()> {
        self.raw(&redis::cmd("PING")).await.map(|_| ())
    }

    /// RMQ.PUSH. Returns the id.
    pub async fn push(&self, p: &Push) -> Result<String> {
        let v = self.call("push", Some(&p.queue), &p.args()).await?;
        as_string(v)
    }

    /// RMQ.FETCH. With `block`, waits (on the server for the module, by polling for Lua).
    pub async fn fetch(&self, q: &str, f: &Fetch) -> Result<Vec<Message>> {
        let ed = self.edition().await?;
        let mut args: Vec<Vec<u8>> = Vec::new();
        if let Some(n) = f.count {
            args.push(b"COUNT".to_vec());
            args.push(n.to_string().into_bytes());
        }
        if let Some(l) = f.lock {
            args.push(b"LOCK".to_vec());
            args.push(l.as_millis().max(1).to_string().into_bytes());
        }
        if let Some(c) = &f.consumer {
            args.push(b"CONSUMER".to_vec());
            args.push(c.clone().into_bytes());
        }
        let Some(block) = f.block else {
            let v = self.call("fetch", Some(q), &args).await?;
            return parse_messages(q, v);
        };
        let forever = block.is_zero();
        let until = Instant::now() + block;
        match ed {
            Edition::Module => loop {
                // Block on the server in slices, so a dead connection is noticed.
                let slice = if forever { Duration::from_secs(10) } else { until.saturating_duration_since(Instant::now()) };
                let mut a = args.clone();
                a.push(b"BLOCK".to_vec());
                a.push(slice.as_millis().max(1).to_string().into_bytes());
                let v = self.blocking_call(q, &a, slice).await?;
                let msgs = parse_messages(q, v)?;
                if !msgs.is_empty() || (!forever && Instant::now() >= until) {
                    return Ok(msgs);
                }
            },
            Edition::Lua => {
                let mut pause = self.inner.cfg.poll_min;
                loop {
                    let v = self.call("fetch", Some(q), &args).await?;
                    let msgs = parse_messages(q, v)?;
                    let now = Instant::now();
                    if !msgs.is_empty() || (!forever && now >= until) {
                        return Ok(msgs);
                    }
                    let mut sleep = pause;
                    if !forever {
                        sleep = sleep.min(until - now);
                    }
                    tokio::time::sleep(sleep).await;
                    pause = (pause * 2).min(self.inner.cfg.poll_max);
                }
            }
        }
    }

    async fn blocking_call(&self, q: &str, args: &[Vec<u8>], block: Duration) -> Result<Value> {
        let conn = self.inner.blocking.lock().await.pop();
        let mut conn = match conn {
            Some(c) => c,
            None => self.connect().await?,
        };
        let cmd = Self::build(Edition::Module, "fetch", Some(q), args);
        let t = block + self.inner.cfg.command_timeout;
        match tokio::time::timeout(t, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.inner.blocking.lock().await.push(conn);
                Ok(v)
            }
            Ok(Err(e)) => {
                let err = self.name_server(classify(e));
                if !matches!(err, Error::Unavailable(_)) {
                    self.inner.blocking.lock().await.push(conn);
                    if let Error::Refused(t) = &err {
                        if self.recoverable(Edition::Module, t, true).await? {
                            return Err(Error::Unavailable(format!("edition changed: {t}")));
                        }
                    }
                }
                Err(err)
            }
            Err(_) => Err(Error::Unavailable(format!("no answer from {} within {} ms", self.display_url(), t.as_millis()))),
        }
    }

    /// RMQ.ACK. Returns how many were acked.
    pub async fn ack(&self, q: &str, receipts: &[&str]) -> Result<u64> {
        let args: Vec<Vec<u8>> = receipts.iter().map(|r| r.as_bytes().to_vec()).collect();
        as_u64(self.call("ack", Some(q), &args).await?)
    }

    /// RMQ.NACK. Returns false for a stale receipt.
    pub async fn nack(&self, q: &str, receipt: &str, kind: NackKind, reason: Option<&str>) -> Result<bool> {
        let mut args: Vec<Vec<u8>> = vec![receipt.as_bytes().to_vec()];
        match kind {
            NackKind::Retry { delay } => {
                args.push(b"RETRY".to_vec());
                if let Some(d) = delay {
                    args.push(b"DELAY".to_vec());
                    args.push(d.as_millis().to_string().into_bytes());
                }
            }
            NackKind::Fail => args.push(b"FAIL".to_vec()),
            NackKind::Error => args.push(b"ERROR".to_vec()),
        }
        if let Some(r) = reason {
            args.push(b"REASON".to_vec());
            args.push(r.as_bytes().to_vec());
        }
        Ok(as_u64(self.call("nack", Some(q), &args).await?)? == 1)
    }

    /// RMQ.TOUCH. Returns the new deadline (unix ms), or 0 for a stale receipt.
    pub async fn touch(&self, q: &str, receipt: &str, lock: Option<Duration>) -> Result<u64> {
        let mut args: Vec<Vec<u8>> = vec![receipt.as_bytes().to_vec()];
        if let Some(l) = lock {
            args.push(b"LOCK".to_vec());
            args.push(l.as_millis().max(1).to_string().into_bytes());
        }
        as_u64(self.call("touch", Some(q), &args).await?)
    }

    /// RMQ.RECOVER with the parts asked for (none: all three). Returns [expired, failed, errors].
    pub async fn recover(&self, q: &str, parts: &[&str]) -> Result<[u64; 3]> {
        let args: Vec<Vec<u8>> = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
        match self.call("recover", Some(q), &args).await? {
            Value::Array(v) if v.len() == 3 => {
                let mut out = [0u64; 3];
                for (o, x) in out.iter_mut().zip(v) {
                    *o = as_u64(x)?;
                }
                Ok(out)
            }
            other => Err(Error::Protocol(format!("RECOVER replied {other:?}"))),
        }
    }

    /// RMQ.STATS.
    pub async fn stats(&self, q: &str) -> Result<Stats> {
        let v = self.call("stats", Some(q), &[]).await?;
        let mut out = Stats::new();
        for (k, v) in pairs(v)? {
            out.insert(k, as_i64(v)?);
        }
        Ok(out)
    }

    /// RMQ.PEEK.
    pub async fn peek(&self, q: &str, state: Option<&str>, start: Option<u64>, count: Option<u64>) -> Result<Vec<Message>> {
        let mut args: Vec<Vec<u8>> = Vec::new();
        if let Some(s) = state {
            args.push(s.to_uppercase().into_bytes());
        }
        if let Some(s) = start {
            args.push(b"START".to_vec());
            args.push(s.to_string().into_bytes());
        }
        if let Some(c) = count {
            args.push(b"COUNT".to_vec());
            args.push(c.to_string().into_bytes());
        }
        parse_messages(q, self.call("peek", Some(q), &args).await?)
    }

    /// RMQ.GET.
    pub async fn get(&self, q: &str, id: &str) -> Result<Option<Message>> {
        let v = self.call("get", Some(q), &[id.as_bytes().to_vec()]).await?;
        if matches!(v, Value::Nil) {
            return Ok(None);
        }
        Ok(Some(Message::from_pairs(q, pairs(v)?)?))
    }

    /// RMQ.QUEUES.
    pub async fn queues(&self) -> Result<Vec<String>> {
        match self.call("queues", None, &[]).await? {
            Value::Array(v) => v.into_iter().map(as_string).collect(),
            Value::Nil => Ok(Vec::new()),
            other => Err(Error::Protocol(format!("QUEUES replied {other:?}"))),
        }
    }

    /// RMQ.DEL q id …: how many messages were deleted.
    pub async fn del(&self, q: &str, ids: &[&str]) -> Result<u64> {
        let args: Vec<Vec<u8>> = ids.iter().map(|i| i.as_bytes().to_vec()).collect();
        as_u64(self.call("del", Some(q), &args).await?)
    }

    /// RMQ.REQUEUE q id …: how many messages went back to ready.
    pub async fn requeue(&self, q: &str, ids: &[&str]) -> Result<u64> {
        let args: Vec<Vec<u8>> = ids.iter().map(|i| i.as_bytes().to_vec()).collect();
        as_u64(self.call("requeue", Some(q), &args).await?)
    }

    /// RMQ.PURGE q STATE (READY, DELAYED, INFLIGHT, FAILED, ERRORS or ALL): how many
    /// messages were deleted.
    pub async fn purge(&self, q: &str, state: &str) -> Result<u64> {
        as_u64(self.call("purge", Some(q), &[state.to_uppercase().into_bytes()]).await?)
    }

    /// RMQ.CONFIG q GET [name]: the effective settings, name and value, in the server's order.
    pub async fn config_get(&self, q: &str, name: Option<&str>) -> Result<Vec<(String, String)>> {
        let mut args = vec![b"GET".to_vec()];
        if let Some(n) = name {
            args.push(n.as_bytes().to_vec());
        }
        pairs(self.call("config", Some(q), &args).await?)?.into_iter().map(|(k, v)| Ok((k, as_string(v)?))).collect()
    }

    /// RMQ.LOG q [FROM offset] [COUNT n]: log entries, each as field–value pairs.
    pub async fn log(&self, q: &str, from: Option<u64>, count: Option<u64>) -> Result<Vec<Vec<(String, Value)>>> {
        let mut args: Vec<Vec<u8>> = Vec::new();
        if let Some(f) = from {
            args.push(b"FROM".to_vec());
            args.push(f.to_string().into_bytes());
        }
        if let Some(c) = count {
            args.push(b"COUNT".to_vec());
            args.push(c.to_string().into_bytes());
        }
        match self.call("log", Some(q), &args).await? {
            Value::Array(items) => items.into_iter().map(pairs).collect(),
            Value::Nil => Ok(Vec::new()),
            other => Err(Error::Protocol(format!("LOG replied {other:?}"))),
        }
    }

    /// RMQ.REPLAY q FROM offset [TO offset]: how many copies were pushed.
    pub async fn replay(&self, q: &str, from: u64, to: Option<u64>) -> Result<u64> {
        let mut args = vec![b"FROM".to_vec(), from.to_string().into_bytes()];
        if let Some(t) = to {
            args.push(b"TO".to_vec());
            args.push(t.to_string().into_bytes());
        }
        as_u64(self.call("replay", Some(q), &args).await?)
    }

    /// RMQ.CONFIG q SET name value ….
    pub async fn config_set(&self, q: &str, settings: &[(&str, &str)]) -> Result<()> {
        let mut args: Vec<Vec<u8>> = vec![b"SET".to_vec()];
        for (k, v) in settings {
            args.push(k.as_bytes().to_vec());
            args.push(v.as_bytes().to_vec());
        }
        self.call("config", Some(q), &args).await.map(|_| ())
    }
}

/// True for the commands that change a queue (and so may install the Lua library).
fn writes(name: &str, args: &[Vec<u8>]) -> bool {
    match name {
        "stats" | "peek" | "get" | "queues" | "log" => false,
        "config" => !args.first().is_some_and(|a| a.eq_ignore_ascii_case(b"GET")),
        _ => true,
    }
}

/// `url` with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        // A user name alone is no secret.
        None => url.to_string(),
    }
}

/// The pairs of a map reply: a RESP3 map, or a flat RESP2 array.
pub fn pairs(v: Value) -> Result<Vec<(String, Value)>> {
    match v {
        Value::Map(m) => m.into_iter().map(|(k, v)| Ok((as_string(k)?, v))).collect(),
        Value::Array(a) => {
            if a.len() % 2 != 0 {
                return Err(Error::Protocol("odd field-value array".into()));
            }
            let mut out = Vec::with_capacity(a.len() / 2);
            let mut it = a.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((as_string(k)?, v));
            }
            Ok(out)
        }
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Protocol(format!("expected a map, got {other:?}"))),
    }
}

pub fn as_bytes(v: Value) -> Result<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::Nil => Ok(Vec::new()),
        Value::Okay => Ok(b"OK".to_vec()),
        other => Err(Error::Protocol(format!("expected a string, got {other:?}"))),
    }
}

pub fn as_string(v: Value) -> Result<String> {
    Ok(String::from_utf8_lossy(&as_bytes(v)?).into_owned())
}

pub fn as_i64(v: Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(i),
        Value::Nil => Ok(0),
        Value::Double(d) => Ok(d as i64),
        other => {
            let s = as_string(other)?;
            s.trim().parse().map_err(|_| Error::Protocol(format!("expected an integer, got {s:?}")))
        }
    }
}

pub fn as_u64(v: Value) -> Result<u64> {
    Ok(as_i64(v)?.max(0) as u64)
}

fn parse_messages(q: &str, v: Value) -> Result<Vec<Message>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(|m| Message::from_pairs(q, pairs(m)?)).collect(),
        other => Err(Error::Protocol(format!("expected messages, got {other:?}"))),
    }
}

pub(crate) fn now_ms() -> u64 {
    unix_ms()
}
