//! A real redis-server on a free loopback port (127.0.0.1 only), with the module or the Lua
//! library. A server that does not come up fails the test at once; it is killed on drop.
#![allow(dead_code)]

/// The cluster harness, shared with the module's tests.
#[path = "../../../tests/common/cluster.rs"]
pub mod cluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmq_client::{Client, Config, EditionChoice};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The module, when it is built (or named by RMQ_MODULE).
pub fn module_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("RMQ_MODULE") {
        return Some(PathBuf::from(p));
    }
    let p = root().join("target/release/librmq.so");
    p.exists().then_some(p)
}

pub fn lua_library() -> String {
    std::fs::read_to_string(root().join("lua/rmq.lua")).expect("lua/rmq.lua")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ed {
    Module,
    Lua,
}

/// The editions to test: `RMQ_CLIENT_EDITIONS=lua,module` (default: lua, and module when
/// RMQ_MODULE is set). A name that is not an edition, or an empty list, fails the test:
/// a misspelled setting must never turn a test into one that checks nothing.
pub fn editions() -> Vec<Ed> {
    let spec = std::env::var("RMQ_CLIENT_EDITIONS").unwrap_or_else(|_| {
        if std::env::var("RMQ_MODULE").is_ok() {
            "lua,module".into()
        } else {
            "lua".into()
        }
    });
    let eds = parse_editions(&spec).unwrap_or_else(|e| panic!("RMQ_CLIENT_EDITIONS: {e}"));
    if eds.contains(&Ed::Module) {
        // Fail here, with the reason, rather than at the first server start.
        module_path().expect("RMQ_CLIENT_EDITIONS names the module, which is not built");
    }
    eds
}

/// `lua,module` → the editions; an unknown name or an empty list is an error.
pub fn parse_editions(spec: &str) -> Result<Vec<Ed>, String> {
    let mut out = Vec::new();
    for s in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match s {
            "lua" => out.push(Ed::Lua),
            "module" => out.push(Ed::Module),
            other => return Err(format!("unknown edition '{other}' (want lua, module)")),
        }
    }
    if out.is_empty() {
        return Err(format!("no edition in '{spec}' (want lua, module)"));
    }
    Ok(out)
}

/// The server binary: `RMQ_SERVER_BIN` (a redis-server or a valkey-server), else
/// `redis-server` from PATH.
pub fn server_bin() -> String {
    std::env::var("RMQ_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

pub struct Server {
    pub port: u16,
    pub ed: Ed,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
}

impl Server {
    /// Starts a server of edition `ed` with extra `--name value` directives. The Lua library
    /// is NOT loaded: the client loads it itself.
    pub fn start(ed: Ed, extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--logfile".into(),
            "redis.log".into(),
        ];
        if !extra.iter().any(|(k, _)| *k == "appendonly") {
            args.extend(["--appendonly".into(), "no".into()]);
        }
        for (k, v) in extra {
            args.push(format!("--{k}"));
            args.push(v.to_string());
        }
        if ed == Ed::Module {
            let m = module_path().expect("the module is not built: cargo build --release -p rmq");
            args.push("--loadmodule".into());
            args.push(m.display().to_string());
        }
        let mut s = Server { port: 0, ed, dir, child: None, args };
        s.launch(free_port());
        s
    }

    fn launch(&mut self, port: u16) {
        self.port = port;
        let bin = server_bin();
        let mut child = Command::new(&bin)
            .arg("--port")
            .arg(port.to_string())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} could not be started ({e}): is it installed?"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("redis-server exited at start ({status}); log:\n{}", self.log());
            }
            if let Ok(c) = redis::Client::open(self.url()) {
                if let Ok(mut con) = c.get_connection_with_timeout(Duration::from_millis(200)) {
                    let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut con);
                    if pong.is_ok() {
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
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let p = self.port;
        self.launch(p);
    }

    /// A client with short timeouts, for tests.
    pub fn client(&self) -> Client {
        client_for(&self.url(), self.ed)
    }

    pub fn sync_conn(&self) -> redis::Connection {
        let c = redis::Client::open(self.url()).unwrap();
        let con = c.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        con
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client_for(url: &str, ed: Ed) -> Client {
    let mut cfg = Config::new(url);
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.command_timeout = Duration::from_secs(5);
    cfg.pool_size = 4;
    cfg.edition = match ed {
        Ed::Module => EditionChoice::Module,
        Ed::Lua => EditionChoice::Auto,
    };
    Client::new(cfg).unwrap()
}

/// Runs `f` up to `limit`; panics (instead of hanging) when it takes longer.
pub async fn bounded<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A 3-master, 3-replica cluster of edition `ed`: the module on every node, or plain nodes
/// with the Lua library loaded on every master.
pub fn start_cluster(ed: Ed) -> cluster::TestCluster {
    start_cluster_with(ed, cluster::ClusterOptions::default())
}

pub fn start_cluster_with(ed: Ed, mut o: cluster::ClusterOptions) -> cluster::TestCluster {
    match ed {
        Ed::Module => o.module = Some(module_path().expect("the module is not built: cargo build --release -p rmq")),
        Ed::Lua => o.lua = Some(lua_library()),
    }
    cluster::TestCluster::start(o)
}

/// `n` queue names per master of `c`, named `{prefix}-{i}`, found by their slots.
pub fn queues_per_master(c: &mut cluster::TestCluster, prefix: &str, n: usize) -> Vec<(u16, Vec<String>)> {
    let masters = c.master_ports();
    let info = c.info();
    let owner =
        |slot: u16| info.iter().find(|i| i.master && i.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))).map(|i| i.port).unwrap();
    let mut out: Vec<(u16, Vec<String>)> = masters.iter().map(|&m| (m, Vec::new())).collect();
    let mut i = 0;
    while out.iter().any(|(_, v)| v.len() < n) {
        let q = format!("{prefix}-{i}");
        let port = owner(rmq_client::cluster::queue_slot(&q));
        let entry = out.iter_mut().find(|(m, _)| *m == port).unwrap();
        if entry.1.len() < n {
            entry.1.push(q);
        }
        i += 1;
    }
    out
}
