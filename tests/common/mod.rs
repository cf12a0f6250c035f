//! Test harness: a real redis-server on a free loopback port, with or without the module.
//!
//! A server that does not come up fails the test at once (the child's exit is noticed, and
//! the wait is bounded); the server is killed when the handle drops.
#![allow(dead_code)]

pub mod cluster;
pub mod load;
pub mod module_calls;
pub mod stall;
pub mod values;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the release module is; `make test` builds it before running the tests.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("RMQ_MODULE") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = root.join("target/release/librmq.so");
    assert!(p.exists(), "{} is missing: run `make build` (or `make test`) first", p.display());
    p
}

pub fn lua_library() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("lua/rmq.lua")).expect("lua/rmq.lua")
}

/// The server binary: `RMQ_SERVER_BIN` (a redis-server or a valkey-server, e.g. the one
/// `make test` installs), else `redis-server` from PATH.
pub fn server_bin() -> String {
    std::env::var("RMQ_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
}

/// What to start.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// Load the module (with these `name value` module arguments).
    pub module: bool,
    pub module_args: Vec<String>,
    /// Extra `--name value` redis.conf directives.
    pub extra: Vec<String>,
}

impl ServerOptions {
    pub fn module() -> Self {
        ServerOptions { module: true, ..Default::default() }
    }
    pub fn plain() -> Self {
        ServerOptions::default()
    }
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.module_args.push(name.into());
        self.module_args.push(value.into());
        self
    }
    pub fn conf(mut self, name: &str, value: &str) -> Self {
        self.extra.push(format!("--{name}"));
        self.extra.push(value.into());
        self
    }
}

impl Server {
    pub fn start(opts: ServerOptions) -> Server {
        Server::start_on(opts, free_port())
    }

    /// Starts on `port` (a cluster node needs its bus port, port + 10000, free too).
    pub fn start_on(opts: ServerOptions, port: u16) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server { port: 0, dir, child: None, args: Vec::new() };
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            server.dir.path().display().to_string(),
            "--logfile".into(),
            "redis.log".into(),
            "--enable-debug-command".into(),
            "yes".into(),
        ];
        if opts.module {
            args.push("--loadmodule".into());
            args.push(module_path().display().to_string());
            args.extend(opts.module_args.iter().cloned());
        }
        args.extend(opts.extra.iter().cloned());
        server.args = args;
        server.launch(port);
        server
    }

    /// Starts (again) on `port` with the same arguments and directory.
    fn launch(&mut self, port: u16) {
        self.port = port;
        let bin = server_bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("--port").arg(port.to_string()).args(&self.args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{bin} could not be started ({e}): is it installed?"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server exited at start ({status}); its log:\n{log}");
            }
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                    let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                    if pong.is_ok() {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("redis-server on port {port} did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
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

    pub fn conn_resp3(&self) -> redis::Connection {
        let c = redis::Client::open(format!("{}?protocol=resp3", self.url())).unwrap();
        let con = c.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        con
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again after `kill9`, same port, directory and arguments.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart needs a stopped server");
        let port = self.port;
        self.launch(port);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The two editions of the same contract: RMQ.* on the module, FCALL on a plain server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edition {
    Module,
    Lua,
}

impl Edition {
    pub fn start(self) -> Server {
        self.start_with(ServerOptions::default())
    }

    pub fn start_with(self, mut opts: ServerOptions) -> Server {
        opts.module = self == Edition::Module;
        let s = Server::start(opts);
        if self == Edition::Lua {
            let mut c = s.conn();
            let _: String = redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(lua_library()).query(&mut c).unwrap();
        }
        s
    }

    /// The command for `name` (lower case, e.g. "push") on queue `q` with `args`.
    pub fn cmd(self, name: &str, q: &str, args: &[&[u8]]) -> redis::Cmd {
        let mut c;
        match self {
            Edition::Module => {
                c = redis::cmd(&format!("RMQ.{}", name.to_uppercase()));
                if name != "queues" {
                    c.arg(q);
                }
            }
            Edition::Lua => {
                c = redis::cmd("FCALL");
                c.arg(format!("rmq_{}", name.to_lowercase()));
                if name == "queues" {
                    c.arg(0);
                } else {
                    c.arg(1).arg(q);
                }
            }
        }
        for a in args {
            c.arg(*a);
        }
        c
    }
}
