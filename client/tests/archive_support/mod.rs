//! What the archive tests share: the three databases (SQLite in a temp dir, PostgreSQL and
//! MariaDB started from Debian's packages), the archiver as a real `rmq archive run`
//! process, a random workload that records what the queue did, and the comparison of the
//! archive's rows with that history.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redis::Value;
use rmq_archive::search::{self, Filter};
use rmq_archive::sqlx;
use rmq_archive::store::Message;
use rmq_archive::testdb::{DbServer, Kind};
use rmq_archive::Db;

use crate::common::{lua_library, Ed, Server};

/// The three backends, each test runs on all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

/// `tests! { name => |backend| body }` makes `name_sqlite`, `name_postgres`,
/// `name_mariadb`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name($crate::archive_support::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name($crate::archive_support::Backend::Postgres) })*
        }
        mod mariadb {
            $(#[test] fn $name() { super::$name($crate::archive_support::Backend::MariaDb) })*
        }
    };
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The archive database of a test.
pub struct ArchiveDb {
    pub backend: Backend,
    pub url: String,
    server: Option<DbServer>,
    dir: tempfile::TempDir,
    /// SQLite "outage": a connection holding an exclusive lock.
    lock: Option<(tokio::runtime::Runtime, sqlx::AnyConnection)>,
}

impl ArchiveDb {
    pub fn start(backend: Backend) -> ArchiveDb {
        let dir = tempfile::tempdir().unwrap();
        let (url, server) = match backend {
            Backend::Sqlite => (format!("sqlite://{}", dir.path().join("archive.db").display()), None),
            Backend::Postgres => {
                let s = DbServer::start(Kind::Postgres, false).unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}"));
                (s.url(), Some(s))
            }
            Backend::MariaDb => {
                let s = DbServer::start(Kind::MariaDb, false).unwrap_or_else(|e| panic!("MariaDB did not start: {e}"));
                (s.url(), Some(s))
            }
        };
        ArchiveDb { backend, url, server, dir, lock: None }
    }

    /// An open handle (the schema is made by the archiver or `migrate`).
    pub async fn db(&self) -> Db {
        Db::open(&self.url, true).await.unwrap()
    }

    /// Makes the database unusable for the archiver: stops the server, or (SQLite) holds an
    /// exclusive lock on the file.
    pub fn outage_begin(&mut self) {
        match &mut self.server {
            Some(s) => s.stop(),
            None => {
                let rt = rt();
                let url = self.url.clone();
                let conn = rt.block_on(async move {
                    use sqlx::{Connection, Executor};
                    sqlx::any::install_default_drivers();
                    let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
                    c.execute("BEGIN EXCLUSIVE").await.unwrap();
                    c
                });
                self.lock = Some((rt, conn));
            }
        }
    }

    pub fn outage_end(&mut self) {
        match &mut self.server {
            Some(s) => s.start_again().unwrap_or_else(|e| panic!("database did not start again: {e}")),
            None => {
                if let Some((rt, mut c)) = self.lock.take() {
                    rt.block_on(async move {
                        use sqlx::Executor;
                        c.execute("ROLLBACK").await.unwrap();
                    });
                }
            }
        }
    }
}

/// A running `rmq archive run`.
pub struct Archiver {
    pub child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn rmq_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rmq")
}

/// `rmq --url URL archive ARGS…`.
pub fn rmq_archive(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(rmq_bin());
    c.arg("--url").arg(url).arg("archive").args(args);
    c.env("RMQ_LOG", "info");
    c.env_remove("RMQ_ARCHIVE_DB");
    c
}

pub fn run_ok(mut c: Command) -> Output {
    let out = c.stdin(Stdio::null()).output().expect("rmq runs");
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The archiver's options for tests: short batches and polls, so tests are quick.
pub const FAST: [&str; 8] = ["--batch-time", "50ms", "--discover-every", "200ms", "--poll-max", "50ms", "--claim-idle", "2s"];

impl Archiver {
    pub fn start(redis_url: &str, db_url: &str, extra: &[&str]) -> Archiver {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec!["--url".into(), redis_url.into(), "archive".into(), "run".into(), "--db".into(), db_url.into()];
        for pair in FAST.chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend(pair.iter().map(|s| s.to_string()));
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Archiver { child: None, args, log: dir.path().join("archiver.log"), _dir: dir };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(rmq_bin())
            .args(&self.args)
            .env("RMQ_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rmq archive run starts");
        self.child = Some(child);
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the batch in hand is saved.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "the archiver did not stop within 60 s:\n{}", self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test at once if the archiver died by itself.
    pub fn assert_alive(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Some(st) = c.try_wait().unwrap() {
                panic!("the archiver exited ({st}); its log:\n{}", self.log());
            }
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Builds an rmq command for either edition.
pub fn rmq_cmd(ed: Ed, name: &str, q: Option<&str>, args: &[&[u8]]) -> redis::Cmd {
    let mut c;
    match ed {
        Ed::Module => {
            c = redis::cmd(&format!("RMQ.{}", name.to_uppercase()));
            if let Some(q) = q {
                c.arg(q);
            }
        }
        Ed::Lua => {
            c = redis::cmd("FCALL");
            c.arg(format!("rmq_{name}"));
            match q {
                Some(q) => c.arg(1).arg(q),
                None => c.arg(0),
            };
        }
    }
    for a in args {
        c.arg(*a);
    }
    c
}

/// A Redis server of the edition, with the Lua library loaded for the Lua edition and a
/// quick guard for the module.
pub fn redis(ed: Ed) -> Server {
    let s = Server::start(ed, &[]);
    let mut c = s.sync_conn();
    match ed {
        Ed::Lua => {
            let _: String = redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(lua_library()).query(&mut c).unwrap();
        }
        Ed::Module => {
            let _: () = redis::cmd("CONFIG").arg("SET").arg("rmq.guard-interval-ms").arg("100").query(&mut c).unwrap();
        }
    }
    s
}

/// A map reply as field → value.
pub fn fields(v: Value) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let items: Vec<(Value, Value)> = match v {
        Value::Map(m) => m,
        Value::Array(a) => {
            let mut it = a.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        _ => Vec::new(),
    };
    for (k, v) in items {
        out.insert(text(&k), v);
    }
    out
}

pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

pub fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        other => text(other).into_bytes(),
    }
}

/// What became of a message, as the test saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    Live,
    Acked { attempt: i64 },
    Deleted,
    Purged,
}

/// A pushed message and what the test knows of it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub queue: String,
    pub body: Vec<u8>,
    pub tag: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub fate: Fate,
}

/// The history of a workload: every message pushed (by queue and id: server-made ids are
/// unique per queue only) and its fate.
#[derive(Default)]
pub struct History {
    pub msgs: BTreeMap<(String, String), Sent>,
    held: Vec<(String, String, String, i64)>,
    producer_ids: Vec<(String, String)>,
    n: u64,
}

/// A random workload over `queues`: pushes (some delayed, some with producer ids and a few
/// duplicates), fetches with short and long locks, acks, nacks of every kind, deletes,
/// requeues, recovers and purges, and pauses so that locks run out and the guard reclaims.
pub struct Workload {
    pub ed: Ed,
    pub queues: Vec<String>,
    pub rng: SmallRng,
    pub history: History,
}

impl Workload {
    pub fn new(ed: Ed, queues: &[&str], seed: u64) -> Workload {
        Workload {
            ed,
            queues: queues.iter().map(|s| s.to_string()).collect(),
            rng: SmallRng::seed_from_u64(seed),
            history: History::default(),
        }
    }

    /// Settings that make the interesting paths happen often.
    pub fn configure(&self, c: &mut redis::Connection) {
        for q in &self.queues {
            let _: Value =
                rmq_cmd(self.ed, "config", Some(q), &[b"SET", b"max-attempts", b"3", b"backoff-ms", b"40", b"backoff-max-ms", b"150"])
                    .query(c)
                    .unwrap();
        }
    }

    fn q(&mut self) -> String {
        let i = self.rng.gen_range(0..self.queues.len());
        self.queues[i].clone()
    }

    /// Runs `ops` random operations.
    pub fn run(&mut self, c: &mut redis::Connection, ops: usize) {
        for _ in 0..ops {
            let r = self.rng.gen_range(0..100);
            match r {
                0..=29 => self.push(c),
                30..=54 => self.fetch(c),
                55..=72 => self.ack(c),
                73..=84 => self.nack(c),
                85..=88 => self.delete(c),
                89..=92 => self.requeue(c),
                93 => self.recover(c),
                94 => self.purge(c),
                _ => std::thread::sleep(Duration::from_millis(self.rng.gen_range(10..120))),
            }
        }
    }

    pub fn push(&mut self, c: &mut redis::Connection) {
        let q = self.q();
        self.history.n += 1;
        let n = self.history.n;
        let body: Vec<u8> = match self.rng.gen_range(0..4) {
            0 => vec![0, 0xff, b'x', (n % 251) as u8],
            _ => format!("body {n} {}", "é".repeat(self.rng.gen_range(0..3))).into_bytes(),
        };
        let tag = ["", "a", "b"][self.rng.gen_range(0..3)].to_string();
        let key = if self.rng.gen_bool(0.5) { format!("k{}", n % 7) } else { String::new() };
        let mut headers = Vec::new();
        for h in 0..self.rng.gen_range(0..3) {
            headers.push((format!("h{h}"), format!("v{n}")));
        }
        // A producer id, now and then one sent again (a duplicate: no new message).
        let mut pid = None;
        if self.rng.gen_bool(0.15) {
            if self.rng.gen_bool(0.3) && !self.history.producer_ids.is_empty() {
                let i = self.rng.gen_range(0..self.history.producer_ids.len());
                let (pq, p) = self.history.producer_ids[i].clone();
                if pq == q {
                    pid = Some(p);
                }
            }
            if pid.is_none() {
                let p = format!("p-{n}");
                self.history.producer_ids.push((q.clone(), p.clone()));
                pid = Some(p);
            }
        }
        let mut args: Vec<Vec<u8>> = vec![body.clone()];
        if let Some(p) = &pid {
            args.extend([b"ID".to_vec(), p.clone().into_bytes()]);
        }
        if !tag.is_empty() {
            args.extend([b"TAG".to_vec(), tag.clone().into_bytes()]);
        }
        if !key.is_empty() {
            args.extend([b"KEY".to_vec(), key.clone().into_bytes()]);
        }
        for (k, v) in &headers {
            args.extend([b"HEADER".to_vec(), k.clone().into_bytes(), v.clone().into_bytes()]);
        }
        if self.rng.gen_bool(0.12) {
            args.extend([b"DELAY".to_vec(), self.rng.gen_range(30..200).to_string().into_bytes()]);
        }
        let a: Vec<&[u8]> = args.iter().map(|v| v.as_slice()).collect();
        let id: String = rmq_cmd(self.ed, "push", Some(&q), &a).query(c).unwrap();
        self.history.msgs.entry((q.clone(), id)).or_insert(Sent { queue: q, body, tag, key, headers, fate: Fate::Live });
    }

    pub fn fetch(&mut self, c: &mut redis::Connection) {
        let q = self.q();
        let count = self.rng.gen_range(1..4).to_string();
        let lock = if self.rng.gen_bool(0.15) { "60" } else { "30000" };
        let consumer = format!("w{}", self.rng.gen_range(0..4));
        let v: Value =
            rmq_cmd(self.ed, "fetch", Some(&q), &[b"COUNT", count.as_bytes(), b"LOCK", lock.as_bytes(), b"CONSUMER", consumer.as_bytes()])
                .query(c)
                .unwrap();
        if let Value::Array(items) = v {
            for m in items {
                let f = fields(m);
                let id = text(&f["id"]);
                let receipt = text(&f["receipt"]);
                let attempt: i64 = text(&f["attempt"]).parse().unwrap();
                self.history.held.push((q.clone(), id, receipt, attempt));
            }
        }
    }

    fn take_held(&mut self) -> Option<(String, String, String, i64)> {
        if self.history.held.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.history.held.len());
        Some(self.history.held.swap_remove(i))
    }

    pub fn ack(&mut self, c: &mut redis::Connection) {
        let Some((q, id, receipt, attempt)) = self.take_held() else { return };
        let n: i64 = rmq_cmd(self.ed, "ack", Some(&q), &[receipt.as_bytes()]).query(c).unwrap();
        if n == 1 {
            self.history.msgs.get_mut(&(q, id)).expect("pushed").fate = Fate::Acked { attempt };
        }
    }

    pub fn nack(&mut self, c: &mut redis::Connection) {
        let Some((q, _id, receipt, _)) = self.take_held() else { return };
        let reason = format!("reason {}", self.rng.gen_range(0..100));
        let args: Vec<&[u8]> = match self.rng.gen_range(0..5) {
            0 => vec![receipt.as_bytes(), b"RETRY"],
            1 => vec![receipt.as_bytes(), b"RETRY", b"REASON", reason.as_bytes()],
            2 => vec![receipt.as_bytes(), b"RETRY", b"DELAY", b"80"],
            3 => vec![receipt.as_bytes(), b"FAIL", b"REASON", reason.as_bytes()],
            _ => vec![receipt.as_bytes(), b"ERROR", b"REASON", reason.as_bytes()],
        };
        let _: i64 = rmq_cmd(self.ed, "nack", Some(&q), &args).query(c).unwrap();
    }

    fn live_ids(&self) -> Vec<(String, String)> {
        self.history.msgs.iter().filter(|(_, s)| s.fate == Fate::Live).map(|(k, _)| k.clone()).collect()
    }

    pub fn delete(&mut self, c: &mut redis::Connection) {
        let live = self.live_ids();
        if live.is_empty() {
            return;
        }
        let (q, id) = live[self.rng.gen_range(0..live.len())].clone();
        let n: i64 = rmq_cmd(self.ed, "del", Some(&q), &[id.as_bytes()]).query(c).unwrap();
        if n == 1 {
            self.history.msgs.get_mut(&(q, id)).unwrap().fate = Fate::Deleted;
        }
    }

    pub fn requeue(&mut self, c: &mut redis::Connection) {
        let live = self.live_ids();
        if live.is_empty() {
            return;
        }
        let (q, id) = live[self.rng.gen_range(0..live.len())].clone();
        let _: i64 = rmq_cmd(self.ed, "requeue", Some(&q), &[id.as_bytes()]).query(c).unwrap();
    }

    pub fn recover(&mut self, c: &mut redis::Connection) {
        let q = self.q();
        let _: Value = rmq_cmd(self.ed, "recover", Some(&q), &[]).query(c).unwrap();
    }

    pub fn purge(&mut self, c: &mut redis::Connection) {
        let q = self.q();
        let state = ["READY", "DELAYED", "FAILED", "ERRORS", "INFLIGHT"][self.rng.gen_range(0..5)];
        let _: i64 = rmq_cmd(self.ed, "purge", Some(&q), &[state.as_bytes()]).query(c).unwrap();
        // Whatever of this queue is gone now and was not acked or deleted was purged.
        let ids: Vec<String> =
            self.history.msgs.iter().filter(|(_, s)| s.fate == Fate::Live && s.queue == q).map(|((_, id), _)| id.clone()).collect();
        for id in ids {
            let v: Value = rmq_cmd(self.ed, "get", Some(&q), &[id.as_bytes()]).query(c).unwrap();
            if matches!(v, Value::Nil) {
                self.history.msgs.get_mut(&(q.clone(), id)).unwrap().fate = Fate::Purged;
            }
        }
    }

    /// Ends the workload in a state that no longer changes by itself: waits out the short
    /// locks and the backoffs, and reclaims expired locks now (the guard would do it later,
    /// and a reclaim is logged). Promotion of delayed messages is not logged, so it may
    /// still happen.
    pub fn settle(&mut self, c: &mut redis::Connection) {
        std::thread::sleep(Duration::from_millis(250));
        for q in self.queues.clone() {
            let _: Value = rmq_cmd(self.ed, "recover", Some(&q), &[b"EXPIRED"]).query(c).unwrap();
        }
    }

    /// What Redis holds now of every live message: (state, attempt, error).
    pub fn snapshot(&self, c: &mut redis::Connection) -> HashMap<(String, String), (String, i64, String)> {
        let mut out = HashMap::new();
        for ((_, id), s) in &self.history.msgs {
            if s.fate != Fate::Live {
                continue;
            }
            let v: Value = rmq_cmd(self.ed, "get", Some(&s.queue), &[id.as_bytes()]).query(c).unwrap();
            assert!(!matches!(v, Value::Nil), "message {id} of {} is gone from Redis but the test did not remove it", s.queue);
            let f = fields(v);
            let error = f.get("error").map(text).unwrap_or_default();
            out.insert((s.queue.clone(), id.clone()), (text(&f["state"]), text(&f["attempt"]).parse().unwrap(), error));
        }
        out
    }
}

/// Every row of a queue.
pub async fn rows(db: &Db, queue: &str) -> Vec<Message> {
    search::find(db, &Filter { queue: queue.into(), ..Default::default() }, None, 10_000_000).await.unwrap()
}

/// Waits until the archive holds every log entry of `queues` (no entry unread or unsaved),
/// failing the test after `limit`.
pub async fn caught_up(redis_url: &str, queues: &[&str], archivers: &mut [&mut Archiver], limit: Duration) {
    let client = crate::common::client_for(redis_url, Ed::Lua);
    let backend: Arc<dyn rmq_archive::backend::Backend> = Arc::new(client);
    let source = rmq_archive::source::Source::new(backend, "rmq-archive", "test");
    let deadline = Instant::now() + limit;
    loop {
        for a in archivers.iter_mut() {
            a.assert_alive();
        }
        let mut done = true;
        for q in queues {
            match source.group_info(q).await.unwrap() {
                Some(g) if g.lag == Some(0) && g.pending == 0 => {}
                _ => done = false,
            }
        }
        if done {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = archivers.iter().map(|a| a.log()).collect();
            panic!("the archive did not catch up within {limit:?}; archiver logs:\n{}", logs.join("\n---\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The archive's statuses that fit a state Redis reports for a message.
fn fits(state: &str, m: &Message, now_ms: i64) -> bool {
    match state {
        "ready" => {
            matches!(m.status.as_str(), "ready" | "retried")
                || (m.status == "delayed" && m.due_time.as_deref().map(|d| parse_ms(d) <= now_ms).unwrap_or(true))
        }
        "delayed" => m.status == "delayed",
        "inflight" => m.status == "inflight",
        "failed" => m.status == "failed",
        "errors" => m.status == "errored",
        _ => false,
    }
}

fn parse_ms(t: &str) -> i64 {
    rmq_archive::when::parse_time(t, 0).unwrap()
}

/// Compares the archive with the history: one row per message, the message as pushed, the
/// right final status, attempts and error.
pub async fn compare(db: &Db, w: &Workload, snapshot: &HashMap<(String, String), (String, i64, String)>) {
    let now = rmq_archive::when::now_ms();
    let mut seen = HashSet::new();
    for q in &w.queues {
        let rows = rows(db, q).await;
        let expected = w.history.msgs.values().filter(|s| &s.queue == q).count();
        assert_eq!(rows.len(), expected, "queue {q}: {} rows for {expected} messages pushed", rows.len());
        let mut offsets = HashSet::new();
        for m in &rows {
            assert!(offsets.insert(m.offset), "queue {q}: offset {} twice", m.offset);
            let key = (q.clone(), m.id.clone());
            assert!(seen.insert(key.clone()), "message {} twice", m.id);
            let s = w.history.msgs.get(&key).unwrap_or_else(|| panic!("queue {q}: a row for {} that was never pushed", m.id));
            let body = m.body_bytes().unwrap().unwrap_or_else(|| panic!("{}: no body archived", m.id));
            assert_eq!(body, s.body, "{}: body", m.id);
            assert_eq!(m.tag, s.tag, "{}: tag", m.id);
            assert_eq!(m.key, s.key, "{}: key", m.id);
            let mut h = m.headers.clone();
            h.sort();
            let mut want = s.headers.clone();
            want.sort();
            assert_eq!(h, want, "{}: headers", m.id);
            match &s.fate {
                Fate::Acked { attempt } => {
                    assert_eq!(m.status, "acked", "{}: {m:?}", m.id);
                    assert_eq!(m.attempts, *attempt, "{}: attempts when acked", m.id);
                }
                Fate::Deleted => assert_eq!(m.status, "deleted", "{}: {m:?}", m.id),
                Fate::Purged => assert_eq!(m.status, "purged", "{}: {m:?}", m.id),
                Fate::Live => {
                    let (state, attempt, error) = &snapshot[&key];
                    assert!(fits(state, m, now), "{}: Redis says {state}, the archive {m:?}", m.id);
                    assert_eq!(m.attempts, *attempt, "{}: attempts ({state}); {m:?}", m.id);
                    if !error.is_empty() {
                        assert_eq!(m.error.as_deref(), Some(error.as_str()), "{}: error ({state})", m.id);
                    }
                    if matches!(state.as_str(), "failed" | "errors") {
                        assert!(m.error.is_some(), "{}: a {state} message has its reason", m.id);
                    }
                }
            }
        }
    }
}
