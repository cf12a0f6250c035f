//! The connection layer: a small pool of multiplexed connections, the two editions (RMQ.*
//! commands of the module, or FCALL of the Lua library), and typed wrappers of the commands.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ErrorKind, RedisError, ServerErrorKind, Value};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::cluster::{key_slot, queue_slot, Cluster, Target, Topology};
use crate::error::{Error, Result};
use crate::message::{Message, Push};
use crate::node::{Node, NodeSettings};

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

/// The keys of a queue, in the order the Lua edition takes them when a cluster client declares
/// them all (`FCALL rmq_x 11 q msg:{q} dly:{q} … log:{q} …`), so that Redis itself refuses
/// (ASK, TRYAGAIN) while the queue's slot migrates.
pub const QUEUE_KEY_PREFIXES: [&str; 10] = ["msg", "dly", "bak", "inf", "fai", "err", "cfg", "st", "dup", "log"];

/// One server, or a cluster of them.
enum Mode {
    Single(Arc<Node>),
    Cluster(Arc<Cluster>),
}

struct Inner {
    cfg: Config,
    /// The server of the URL: the only one, or the cluster's first contact.
    seed: Arc<Node>,
    /// Found out at the first request.
    mode: OnceCell<Mode>,
    edition: AtomicU8,
    /// FETCH asks for the COMPACT reply (half the server's reply work) until a server that
    /// predates it refuses the word; then it asks for maps.
    compact: AtomicBool,
}

/// Where a request goes.
#[derive(Clone, Copy, Debug)]
enum To<'a> {
    /// The server holding this queue.
    Queue(&'a str),
    /// The server holding this key.
    Key(&'a [u8]),
    /// Any server (in a cluster, a master).
    Any,
}

/// A handle on one Redis server or one Redis Cluster, cheap to clone.
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
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
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

/// The first reply of a pipeline as a result.
fn first(vals: Vec<Value>) -> Result<Value> {
    match vals.into_iter().next() {
        Some(v) => reply(v),
        None => Err(Error::Protocol("no reply".into())),
    }
}

/// One reply as a result: an error reply becomes the error.
fn reply(v: Value) -> Result<Value> {
    match v {
        Value::ServerError(se) => Err(classify(RedisError::from(se))),
        v => Ok(v),
    }
}

impl Client {
    /// Checks the settings; connections are opened when first needed.
    pub fn new(cfg: Config) -> Result<Client> {
        let settings = NodeSettings { pool_size: cfg.pool_size.max(1), connect_timeout: cfg.connect_timeout };
        let seed = Arc::new(Node::new(&cfg.url, redact_url(&cfg.url), settings)?);
        let edition = match cfg.edition {
            EditionChoice::Auto => ED_UNKNOWN,
            EditionChoice::Module => ED_MODULE,
            EditionChoice::Lua => ED_LUA,
        };
        Ok(Client {
            inner: Arc::new(Inner { cfg, seed, mode: OnceCell::new(), edition: AtomicU8::new(edition), compact: AtomicBool::new(true) }),
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

    /// One server or a cluster: asked once (`INFO cluster`), at the first request.
    async fn mode(&self) -> Result<&Mode> {
        self.inner
            .mode
            .get_or_try_init(|| async {
                let t = self.inner.cfg.command_timeout;
                let mut pipe = redis::pipe();
                // INFO, or CLUSTER INFO for a user whose ACL forbids INFO (a server without
                // cluster support refuses it); a server that answers neither is taken for a
                // single server.
                pipe.ignore_errors().cmd("INFO").arg("cluster").cmd("CLUSTER").arg("INFO");
                let vals = self.inner.seed.send(&pipe, t, false).await.map_err(|e| e.err)?;
                let mut answers = vals.into_iter().map(|v| reply(v).and_then(as_string));
                let info = answers.next().unwrap_or(Err(Error::Protocol("no reply".into())));
                let cluster_info = answers.next().unwrap_or(Err(Error::Protocol("no reply".into())));
                let cluster = match info {
                    Ok(info) => info.contains("cluster_enabled:1"),
                    Err(_) => cluster_info.is_ok_and(|ci| ci.contains("cluster_state:")),
                };
                if !cluster {
                    return Ok(Mode::Single(self.inner.seed.clone()));
                }
                let settings = NodeSettings { pool_size: self.inner.cfg.pool_size.max(1), connect_timeout: self.inner.cfg.connect_timeout };
                let c = Cluster::connect(&self.inner.cfg.url, settings, t).await?;
                tracing::debug!(server = %self.display_url(), masters = ?c.topology().masters(), "rmq: Redis Cluster");
                Ok(Mode::Cluster(Arc::new(c)))
            })
            .await
    }

    /// True when the URL names a node of a Redis Cluster.
    pub async fn is_cluster(&self) -> Result<bool> {
        Ok(matches!(self.mode().await?, Mode::Cluster(_)))
    }

    /// The cluster's slot map as last read (None on a single server).
    pub async fn topology(&self) -> Result<Option<Arc<Topology>>> {
        Ok(match self.mode().await? {
            Mode::Single(_) => None,
            Mode::Cluster(c) => Some(c.topology()),
        })
    }

    /// The masters (`host:port`): the cluster's, or the one server's URL.
    pub async fn masters(&self) -> Result<Vec<String>> {
        Ok(match self.mode().await? {
            Mode::Single(_) => vec![self.display_url()],
            Mode::Cluster(c) => c.topology().masters(),
        })
    }

    /// Sends `cmds` in one pipeline where `to` says, within `t`; see [`Cluster::exec`] for
    /// `resend` and `dedicated`. Each command's error reply is a `Value::ServerError` in place.
    async fn exec(&self, to: To<'_>, cmds: &[redis::Cmd], t: Duration, resend: bool, dedicated: bool) -> Result<Vec<Value>> {
        match self.mode().await? {
            Mode::Single(node) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for c in cmds {
                    pipe.add_command(c.clone());
                }
                node.send(&pipe, t, dedicated).await.map_err(|e| e.err)
            }
            Mode::Cluster(c) => {
                let target = match to {
                    To::Queue(q) => Target::Slot(queue_slot(q)),
                    To::Key(k) => Target::Slot(key_slot(k)),
                    To::Any => Target::Any,
                };
                c.exec(target, cmds, t, resend, dedicated).await
            }
        }
    }

    /// Sends `cmd` to every master (one server: to it) and gives each answer.
    async fn on_every_master(&self, cmd: &redis::Cmd) -> Result<Vec<(String, Result<Value>)>> {
        let t = self.inner.cfg.command_timeout;
        match self.mode().await? {
            Mode::Single(node) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors().add_command(cmd.clone());
                let r = node.send(&pipe, t, false).await.map_err(|e| e.err).and_then(first);
                Ok(vec![(self.display_url(), r)])
            }
            Mode::Cluster(c) => {
                let masters = c.topology().masters();
                let runs = masters.iter().map(|m| {
                    let c = c.clone();
                    async move { c.exec(Target::Node(m.clone()), std::slice::from_ref(cmd), t, false, false).await.and_then(first) }
                });
                let results = futures_util::future::join_all(runs).await;
                Ok(masters.into_iter().zip(results).collect())
            }
        }
    }

    /// A plain Redis command on `key` (not a queue's), sent to the server holding the key;
    /// `resend`: safe to send again after a lost answer.
    pub(crate) async fn key_command(&self, key: &str, cmd: &redis::Cmd, resend: bool) -> Result<Value> {
        let t = self.inner.cfg.command_timeout;
        first(self.exec(To::Key(key.as_bytes()), std::slice::from_ref(cmd), t, resend, false).await?)
    }

    /// Runs one raw command on a shared connection, with the command timeout. In a cluster it
    /// goes to the URL's node when that is a master, else to another master (route commands
    /// with keys through the typed methods).
    pub async fn raw(&self, cmd: &redis::Cmd) -> Result<Value> {
        self.raw_timeout(cmd, self.inner.cfg.command_timeout).await
    }

    async fn raw_timeout(&self, cmd: &redis::Cmd, t: Duration) -> Result<Value> {
        first(self.exec(To::Any, std::slice::from_ref(cmd), t, false, false).await?)
    }

    /// Runs plain Redis commands on `key` in one MULTI/EXEC, in one round trip, on the
    /// server holding the key: nothing else runs there in between. Each command gets its own
    /// reply (an error as `Value::ServerError`).
    pub async fn raw_transaction(&self, key: &str, cmds: &[redis::Cmd]) -> Result<Vec<Value>> {
        let mut all = Vec::with_capacity(cmds.len() + 2);
        all.push(redis::cmd("MULTI"));
        all.extend(cmds.iter().cloned());
        all.push(redis::cmd("EXEC"));
        let t = self.inner.cfg.command_timeout;
        let replies = self.exec(To::Key(key.as_bytes()), &all, t, false, false).await?;
        match replies.into_iter().last() {
            Some(Value::Array(v)) => Ok(v),
            Some(Value::ServerError(e)) => Err(classify(RedisError::from(e))),
            other => Err(Error::Protocol(format!("EXEC replied {other:?}"))),
        }
    }

    /// Runs plain read commands, each on the server holding its key (`(key, command)`), each
    /// with its own result: in one pipeline on a single server; in a cluster, one pipeline per
    /// key's slot, sent at the same time. Only for commands that are safe to send again.
    pub async fn key_commands(&self, cmds: &[(String, redis::Cmd)]) -> Result<Vec<Result<Value>>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let groups: Vec<Vec<usize>> = if self.is_cluster().await? {
            let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
            for (i, (k, _)) in cmds.iter().enumerate() {
                by_slot.entry(key_slot(k.as_bytes())).or_default().push(i);
            }
            by_slot.into_values().collect()
        } else {
            vec![(0..cmds.len()).collect()]
        };
        let runs = groups.iter().map(|g| {
            let pipe: Vec<redis::Cmd> = g.iter().map(|&i| cmds[i].1.clone()).collect();
            let t = self.inner.cfg.command_timeout + Duration::from_millis(g.len() as u64 / 10);
            let key = cmds[g[0]].0.as_bytes();
            async move { self.exec(To::Key(key), &pipe, t, true, false).await }
        });
        let results = futures_util::future::join_all(runs).await;
        let mut out: Vec<Option<Result<Value>>> = (0..cmds.len()).map(|_| None).collect();
        for (g, r) in groups.iter().zip(results) {
            for (&i, v) in g.iter().zip(r?) {
                out[i] = Some(reply(v));
            }
        }
        Ok(out.into_iter().map(|v| v.unwrap_or_else(|| Err(Error::Protocol("no reply".into())))).collect())
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

    /// Loads the Lua library unless the server has it already (in a cluster: on every master;
    /// replicas get it by replication).
    pub async fn load_lua(&self, replace: bool) -> Result<()> {
        let code = lua_library()?;
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD");
        if replace {
            cmd.arg("REPLACE");
        }
        cmd.arg(code);
        for (_, r) in self.on_every_master(&cmd).await? {
            match r {
                Ok(_) => {}
                Err(Error::Refused(t)) if t.contains("already exists") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The command `name` (lower case) for queue `q` in `ed`. `all_keys` declares every key of
    /// the queue to the Lua edition (cluster clients), instead of the queue name alone.
    fn build(ed: Edition, name: &str, q: Option<&str>, args: &[Vec<u8>], all_keys: bool) -> redis::Cmd {
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
                    Some(q) if all_keys => {
                        c.arg(1 + QUEUE_KEY_PREFIXES.len()).arg(q);
                        for p in QUEUE_KEY_PREFIXES {
                            c.arg(format!("{p}:{{{q}}}"));
                        }
                    }
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
        first(self.call_with(name, q, args, None, t, false).await?)
    }

    /// Runs an rmq command, followed on the same connection by `then` when given (WAIT), and
    /// gives every reply; the edition is fixed as in [`Client::call`].
    async fn call_with(
        &self,
        name: &str,
        q: Option<&str>,
        args: &[Vec<u8>],
        then: Option<&redis::Cmd>,
        t: Duration,
        dedicated: bool,
    ) -> Result<Vec<Value>> {
        let cluster = self.is_cluster().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let ed = self.edition().await?;
            let mut cmds = vec![Self::build(ed, name, q, args, cluster)];
            cmds.extend(then.cloned());
            let to = q.map(To::Queue).unwrap_or(To::Any);
            let vals = self.exec(to, &cmds, t, safe_to_repeat(name, args), dedicated).await?;
            if let Some(Value::ServerError(se)) = vals.first() {
                if let Error::Refused(text) = classify(RedisError::from(se.clone())) {
                    if tries < 3 && self.recoverable(ed, &text, writes(name, args)).await? {
                        continue;
                    }
                }
            }
            return Ok(vals);
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

    /// Runs several rmq commands, each with its own result: in one pipeline on a single
    /// server; in a cluster, one pipeline per queue's slot (the order of one queue's commands
    /// is kept), sent at the same time.
    pub async fn call_many(&self, cmds: &[(&str, &str, Vec<Vec<u8>>)]) -> Result<Vec<Result<Value>>> {
        self.call_many_confirmed(cmds, None).await
    }

    /// [`Client::call_many`], each pipeline followed by `WAIT replicas timeout` when `confirm`
    /// is given: the commands of a pipeline whose WAIT counted fewer replicas come back as
    /// [`Error::Unavailable`] ("not confirmed").
    pub async fn call_many_confirmed(&self, cmds: &[(&str, &str, Vec<Vec<u8>>)], confirm: Option<Confirm>) -> Result<Vec<Result<Value>>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        // The positions of the commands of each group.
        let groups: Vec<Vec<usize>> = if self.is_cluster().await? {
            let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
            for (i, (_, q, _)) in cmds.iter().enumerate() {
                by_slot.entry(queue_slot(q)).or_default().push(i);
            }
            by_slot.into_values().collect()
        } else {
            vec![(0..cmds.len()).collect()]
        };
        let runs = groups.iter().map(|g| self.call_group(cmds, g, confirm));
        let results = futures_util::future::join_all(runs).await;
        let mut out: Vec<Option<Result<Value>>> = (0..cmds.len()).map(|_| None).collect();
        for (g, r) in groups.iter().zip(results) {
            for (&i, v) in g.iter().zip(r?) {
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().map(|v| v.unwrap_or_else(|| Err(Error::Protocol("no reply".into())))).collect())
    }

    /// One pipeline of `cmds[g]` (commands of one queue's slot, or of one server).
    async fn call_group(&self, cmds: &[(&str, &str, Vec<Vec<u8>>)], g: &[usize], confirm: Option<Confirm>) -> Result<Vec<Result<Value>>> {
        let cluster = self.is_cluster().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let ed = self.edition().await?;
            let mut pipe: Vec<redis::Cmd> = g.iter().map(|&i| Self::build(ed, cmds[i].0, Some(cmds[i].1), &cmds[i].2, cluster)).collect();
            if let Some(c) = confirm {
                pipe.push(c.wait_cmd());
            }
            let t = self.inner.cfg.command_timeout
                + Duration::from_millis(g.len() as u64 / 10)
                + confirm.map(|c| c.timeout).unwrap_or_default();
            let resend = g.iter().all(|&i| safe_to_repeat(cmds[i].0, &cmds[i].2));
            let mut vals = self.exec(To::Queue(cmds[g[0]].1), &pipe, t, resend, confirm.is_some()).await?;
            let waited = if confirm.is_some() { vals.pop() } else { None };
            let mut out: Vec<Result<Value>> = vals.into_iter().map(reply).collect();
            if tries < 3 {
                if let Some(Err(Error::Refused(t))) = out.iter().find(|r| matches!(r, Err(Error::Refused(_)))) {
                    let t = t.clone();
                    let w = g.iter().any(|&i| writes(cmds[i].0, &cmds[i].2));
                    if self.recoverable(ed, &t, w).await? {
                        continue;
                    }
                }
            }
            if let (Some(c), Some(w)) = (confirm, waited) {
                let acked = reply(w).and_then(as_u64)?;
                if acked < c.replicas as u64 {
                    let why = c.shortfall(acked);
                    out = out.into_iter().map(|r| r.and_then(|_| Err(Error::Unavailable(why.clone())))).collect();
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

    /// RMQ.PUSH, then `WAIT replicas timeout` on the same connection: returns the id and how
    /// many replicas confirmed they have the write (the push, and everything before it on
    /// that master). Fewer than asked means the message may be lost if its master fails now.
    pub async fn push_confirmed(&self, p: &Push, confirm: Confirm) -> Result<(String, u64)> {
        let t = self.inner.cfg.command_timeout + confirm.timeout;
        let mut vals = self.call_with("push", Some(&p.queue), &p.args(), Some(&confirm.wait_cmd()), t, true).await?.into_iter();
        let id = as_string(reply(vals.next().unwrap_or(Value::Nil))?)?;
        let acked = as_u64(reply(vals.next().unwrap_or(Value::Nil))?)?;
        Ok((id, acked))
    }

    /// RMQ.FETCH. With `block`, waits (on the server for the module, by polling for Lua).
    pub async fn fetch(&self, q: &str, f: &Fetch) -> Result<Vec<Message>> {
        let compact = self.inner.compact.load(Ordering::Relaxed);
        match self.fetch_as(q, f, compact).await {
            Err(Error::Refused(e)) if compact && e.contains("near 'COMPACT'") => {
                self.inner.compact.store(false, Ordering::Relaxed);
                self.fetch_as(q, f, false).await
            }
            other => other,
        }
    }

    async fn fetch_as(&self, q: &str, f: &Fetch, compact: bool) -> Result<Vec<Message>> {
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
        // Last: the Lua edition reads `COUNT n COMPACT` without walking the options.
        if compact {
            args.push(b"COMPACT".to_vec());
        }
        let Some(block) = f.block else {
            let v = self.call("fetch", Some(q), &args).await?;
            return parse_fetched(q, v, compact);
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
                let msgs = parse_fetched(q, v, compact)?;
                if !msgs.is_empty() || (!forever && Instant::now() >= until) {
                    return Ok(msgs);
                }
            },
            Edition::Lua => {
                let mut pause = self.inner.cfg.poll_min;
                loop {
                    let v = self.call("fetch", Some(q), &args).await?;
                    let msgs = parse_fetched(q, v, compact)?;
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

    /// A FETCH that BLOCKs on the server, on a connection of its own, so that it holds up
    /// no other command of this client.
    async fn blocking_call(&self, q: &str, args: &[Vec<u8>], block: Duration) -> Result<Value> {
        let cmd = Self::build(Edition::Module, "fetch", Some(q), args, false);
        let t = block + self.inner.cfg.command_timeout;
        let res = self.exec(To::Queue(q), std::slice::from_ref(&cmd), t, false, true).await.and_then(first);
        if let Err(Error::Refused(text)) = &res {
            if self.recoverable(Edition::Module, text, true).await? {
                return Err(Error::Unavailable(format!("edition changed: {text}")));
            }
        }
        res
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

    /// RMQ.QUEUES: the queues of the server; in a cluster, of every master, merged (sorted,
    /// each name once: a queue whose slot is moving may show on two).
    pub async fn queues(&self) -> Result<Vec<String>> {
        if !self.is_cluster().await? {
            return parse_names(self.call("queues", None, &[]).await?);
        }
        let ed = self.edition().await?;
        let cmd = Self::build(ed, "queues", None, &[], true);
        let mut all = std::collections::BTreeSet::new();
        for (master, r) in self.on_every_master(&cmd).await? {
            let v = match r {
                Err(Error::Refused(t)) if t.to_lowercase().contains("function not found") => {
                    // A master without the Lua library holds no queue of the Lua edition.
                    tracing::debug!(%master, "rmq: no rmq Lua library on this master");
                    continue;
                }
                other => other?,
            };
            all.extend(parse_names(v)?);
        }
        Ok(all.into_iter().collect())
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

/// True for the commands that may be sent again when their answer was lost: the ones that
/// change nothing, a PUSH that carries its id (the dedup window drops a second copy), and
/// CONFIG (setting a value twice is setting it once). ACK, NACK, TOUCH, FETCH and the repair
/// commands are never sent twice by the client: a lost answer is reported as
/// [`Error::Unavailable`], since the command may have been applied.
fn safe_to_repeat(name: &str, args: &[Vec<u8>]) -> bool {
    match name {
        "stats" | "peek" | "get" | "queues" | "log" | "config" => true,
        // Push::args puts ID right after the body.
        "push" => args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(b"ID")) && args.len() >= 3,
        _ => false,
    }
}

/// A producer's confirm: after a PUSH, `WAIT replicas timeout` on the same connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// How many replicas must have the write (1 by default).
    pub replicas: u32,
    /// How long WAIT may wait for them.
    pub timeout: Duration,
}

impl Default for Confirm {
    fn default() -> Self {
        Confirm { replicas: 1, timeout: Duration::from_millis(1000) }
    }
}

impl Confirm {
    fn wait_cmd(&self) -> redis::Cmd {
        let mut c = redis::cmd("WAIT");
        c.arg(self.replicas).arg(self.timeout.as_millis().max(1) as u64);
        c
    }

    /// Why a WAIT that counted `acked` replicas is not enough.
    pub(crate) fn shortfall(&self, acked: u64) -> String {
        format!("not confirmed: {acked} of {} replica(s) had the write within {} ms (WAIT)", self.replicas, self.timeout.as_millis())
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

// The reply readers are rmq-backend's (shared with the console and the archive), with its
// error as this crate's protocol error.

/// The pairs of a map reply: a RESP3 map, or a flat RESP2 array.
pub fn pairs(v: Value) -> Result<Vec<(String, Value)>> {
    rmq_backend::reply::pairs(v).map_err(protocol)
}

pub fn as_bytes(v: Value) -> Result<Vec<u8>> {
    rmq_backend::reply::as_bytes(v).map_err(protocol)
}

pub fn as_string(v: Value) -> Result<String> {
    rmq_backend::reply::as_string(v).map_err(protocol)
}

fn protocol(e: rmq_backend::RedisError) -> Error {
    Error::Protocol(e.text)
}

pub fn as_i64(v: Value) -> Result<i64> {
    rmq_backend::reply::as_i64(v).map_err(protocol)
}

pub fn as_u64(v: Value) -> Result<u64> {
    rmq_backend::reply::as_u64(v).map_err(protocol)
}

/// A message's headers (a map; the Lua edition's empty table is an empty array).
pub fn headers(v: Value) -> Result<Vec<(String, String)>> {
    rmq_backend::reply::headers(v).map_err(protocol)
}

fn parse_names(v: Value) -> Result<Vec<String>> {
    match v {
        Value::Array(v) => v.into_iter().map(as_string).collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Protocol(format!("QUEUES replied {other:?}"))),
    }
}

/// FETCH's reply: maps, or with COMPACT each message's values in the maps' order.
fn parse_fetched(q: &str, v: Value, compact: bool) -> Result<Vec<Message>> {
    if !compact {
        return parse_messages(q, v);
    }
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|m| match m {
                Value::Array(values) => Message::from_compact(q, values),
                other => Err(Error::Protocol(format!("expected a COMPACT message, got {other:?}"))),
            })
            .collect(),
        other => Err(Error::Protocol(format!("expected messages, got {other:?}"))),
    }
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
