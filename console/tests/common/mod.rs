//! The console's test harness: a real redis-server on a free loopback port (with the module,
//! or with the Lua library loaded by the client), the console served in-process on another free
//! loopback port, and an HTTP client. A server that does not come up fails the test at once.
#![allow(dead_code)]

pub mod archive;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmq_client::{Client, Config, EditionChoice};
use rmq_console::{Backend, ConsoleArgs, Running};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The module: RMQ_MODULE, or the release build. A missing module fails the test.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("RMQ_MODULE") {
        return PathBuf::from(p);
    }
    let p = root().join("target/release/librmq.so");
    assert!(p.exists(), "{} is missing: run `make build` (or `make test`) first", p.display());
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ed {
    Module,
    Lua,
}

pub struct Redis {
    pub port: u16,
    pub ed: Ed,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Redis {
    pub fn start(ed: Ed) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--logfile", "redis.log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if ed == Ed::Module {
            cmd.arg("--loadmodule").arg(module_path());
        }
        let mut child = cmd.spawn().expect("redis-server could not be started: is it installed?");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server exited at start ({status}); log:\n{log}");
            }
            let url = format!("redis://127.0.0.1:{port}/");
            if let Ok(c) = redis::Client::open(url) {
                if let Ok(mut con) = c.get_connection_with_timeout(Duration::from_millis(200)) {
                    if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {port} did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = Redis { port, ed, dir, child };
        if ed == Ed::Lua {
            let code = std::fs::read_to_string(root().join("lua/rmq.lua")).expect("lua/rmq.lua");
            let _: String = redis::cmd("FUNCTION").arg("LOAD").arg(code).query(&mut r.conn()).expect("FUNCTION LOAD");
        }
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        let c = redis::Client::open(self.url()).unwrap();
        let con = c.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        con
    }

    pub fn client(&self) -> Client {
        let mut cfg = Config::new(self.url());
        cfg.connect_timeout = Duration::from_secs(2);
        cfg.command_timeout = Duration::from_secs(20);
        cfg.edition = match self.ed {
            Ed::Module => EditionChoice::Module,
            Ed::Lua => EditionChoice::Lua,
        };
        Client::new(cfg).unwrap()
    }

    /// An rmq command in this server's edition: `RMQ.<NAME> q args…` or `FCALL rmq_<name> 1 q args…`.
    pub fn cmd(&self, name: &str, q: &str, args: &[&str]) -> redis::Cmd {
        let mut c = match self.ed {
            Ed::Module => {
                let mut c = redis::cmd(&format!("RMQ.{}", name.to_uppercase()));
                c.arg(q);
                c
            }
            Ed::Lua => {
                let mut c = redis::cmd("FCALL");
                c.arg(format!("rmq_{name}")).arg(1).arg(q);
                c
            }
        };
        for a in args {
            c.arg(*a);
        }
        c
    }

    /// Runs an rmq command and returns its reply.
    pub fn run(&self, name: &str, q: &str, args: &[&str]) -> redis::Value {
        self.cmd(name, q, args).query(&mut self.conn()).unwrap_or_else(|e| panic!("{name} {q} {args:?}: {e}"))
    }

    /// RMQ.STATS as (name → number).
    pub fn stats(&self, q: &str) -> std::collections::BTreeMap<String, i64> {
        let v = self.run("stats", q, &[]);
        rmq_console::reply::pairs(v).unwrap().into_iter().map(|(k, v)| (k, rmq_console::reply::as_i64(v).unwrap())).collect()
    }

    pub fn push(&self, q: &str, body: &str, extra: &[&str]) -> String {
        let mut a = vec![body];
        a.extend_from_slice(extra);
        rmq_console::reply::as_string(self.run("push", q, &a)).unwrap()
    }

    /// PUSH of a body that is not text.
    pub fn push_bytes(&self, q: &str, body: &[u8], extra: &[&str]) -> String {
        let mut c = self.cmd("push", q, &[]);
        c.arg(body);
        for a in extra {
            c.arg(*a);
        }
        rmq_console::reply::as_string(c.query(&mut self.conn()).unwrap()).unwrap()
    }

    /// FETCH one message and NACK it with `how` (FAIL or ERROR) and a reason; returns its id.
    pub fn fail_one(&self, q: &str, how: &str, reason: &str) -> String {
        let redis::Value::Array(items) = self.run("fetch", q, &[]) else { panic!("nothing to fetch from {q}") };
        let fields = rmq_console::reply::pairs(items.into_iter().next().unwrap()).unwrap();
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| rmq_console::reply::as_string(v.clone()).unwrap()).unwrap();
        let (id, receipt) = (get("id"), get("receipt"));
        assert_eq!(self.run("nack", q, &[&receipt, how, "REASON", reason]), redis::Value::Int(1));
        id
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A console on a free loopback port, over a client of `redis`.
pub struct Console {
    pub running: Option<Running>,
    pub base: String,
    pub http: reqwest::Client,
    pub audit: PathBuf,
    _dir: tempfile::TempDir,
}

/// Console options for tests: a fast refresh, a free port, an audit log in a temp dir.
pub fn args() -> (ConsoleArgs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ConsoleArgs::new(&format!("127.0.0.1:{}", free_port()));
    a.audit_log = Some(dir.path().join("audit.jsonl"));
    a.refresh = 300;
    (a, dir)
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(60)).build().unwrap()
}

impl Console {
    pub async fn start(redis: &Redis, args: ConsoleArgs, dir: tempfile::TempDir) -> Console {
        let backend: Arc<dyn Backend> = Arc::new(redis.client());
        let running = rmq_console::start_console(backend, &args).await.expect("console starts");
        Console {
            base: format!("http://{}", running.addr()),
            running: Some(running),
            http: http(),
            audit: args.audit_log.clone().expect("tests name the audit log"),
            _dir: dir,
        }
    }

    pub async fn default(redis: &Redis) -> Console {
        let (a, d) = args();
        Console::start(redis, a, d).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET, expecting `status`; returns the body.
    pub async fn get(&self, path: &str, status: u16) -> String {
        let r = self.http.get(self.url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let s = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(s, status, "GET {path} answered {s}:\n{body}");
        body
    }

    /// The form token of a page.
    pub async fn csrf(&self) -> String {
        // The overview has no form; the queue page of any name has.
        let page = self.get("/queues/any", 200).await;
        let doc = scraper::Html::parse_document(&page);
        let sel = scraper::Selector::parse("input[name=csrf]").unwrap();
        doc.select(&sel).next().expect("a form token on the queue page").value().attr("value").unwrap().to_string()
    }

    /// POST a form; returns (status, Location header, body).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let r = self.http.post(self.url(path)).form(form).send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        let loc = r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (status, loc, r.text().await.unwrap())
    }

    /// POST an action, confirm it when asked, and follow to the page it leads to; returns that page.
    pub async fn act(&self, path: &str, form: &[(&str, &str)]) -> String {
        let (status, loc, body) = self.post(path, form).await;
        let loc = if status == 200 {
            // A confirmation page: post its form as it is.
            let doc = scraper::Html::parse_document(&body);
            let sel = scraper::Selector::parse("form input[type=hidden]").unwrap();
            let fields: Vec<(String, String)> = doc
                .select(&sel)
                .map(|e| (e.value().attr("name").unwrap().to_string(), e.value().attr("value").unwrap_or("").to_string()))
                .collect();
            assert!(fields.iter().any(|(k, _)| k == "confirmed"), "expected a confirmation page for {path}:\n{body}");
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (s2, loc2, body2) = self.post(path, &pairs).await;
            assert_eq!(s2, 303, "confirmed {path} answered {s2}:\n{body2}");
            loc2
        } else {
            assert_eq!(status, 303, "{path} answered {status}:\n{body}");
            loc
        };
        self.get(&loc, 200).await
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }
}

/// Texts of the elements `css` selects in `html`, whitespace collapsed.
pub fn texts(html: &str, css: &str) -> Vec<String> {
    let doc = scraper::Html::parse_document(html);
    let sel = scraper::Selector::parse(css).unwrap();
    doc.select(&sel).map(|e| e.text().collect::<Vec<_>>().join(" ").split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

/// The rows of a table as cell texts.
pub fn rows(html: &str, table: &str) -> Vec<Vec<String>> {
    let doc = scraper::Html::parse_document(html);
    let tr = scraper::Selector::parse(&format!("{table} tbody tr")).unwrap();
    let td = scraper::Selector::parse("td").unwrap();
    doc.select(&tr)
        .map(|r| r.select(&td).map(|c| c.text().collect::<Vec<_>>().join(" ").split_whitespace().collect::<Vec<_>>().join(" ")).collect())
        .collect()
}

/// Polls `f` until it is true (a loaded machine is slow), failing after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + limit;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < end, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
