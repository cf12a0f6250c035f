//! A real Redis Cluster for tests: 3 masters and 3 replicas (by default), each a
//! redis-server on free 127.0.0.1 ports in a temp dir, with the module loaded, or plain with
//! the Lua library loaded on every master. Shared by the tests of the module (`tests/`) and of
//! the client (`client/tests/`, which include this file by path).
//!
//! Each node gets two free ports chosen by the kernel: its port and its cluster bus port
//! (`cluster-port`), so the bus never needs `port + 10000` to be free. A node that does not
//! come up, a `redis-cli --cluster create` that fails, or a cluster that is not `ok` within
//! the bounded wait fails the test at once; the nodes are killed when the cluster drops.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Load this module on every node.
    pub module: Option<PathBuf>,
    /// Load this Lua library (FUNCTION LOAD) on every master once the cluster is up.
    pub lua: Option<String>,
    pub masters: usize,
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a silent master takes to be failed over. Short enough
    /// for a failover test, long enough that a busy 2-core machine causes no false failover.
    pub node_timeout_ms: u64,
    /// Extra `--name value` directives for every node.
    pub extra: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { module: None, lua: None, masters: 3, replicas_per_master: 1, node_timeout_ms: 3000, extra: Vec::new() }
    }
}

pub struct ClusterNode {
    pub port: u16,
    pub bus: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl ClusterNode {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Sends `signal` (`STOP`, `CONT` …) to the node's process: a stopped node reads nothing,
    /// as one cut off by the network.
    pub fn signal(&mut self, signal: &str) {
        let pid = self.child.as_ref().expect("the node is not running").id();
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "kill -{signal} {pid} failed");
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn spawn(&mut self) {
        let bin = server_bin();
        let child = Command::new(&bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} could not be started ({e}): is it installed?"));
        self.child = Some(child);
    }

    /// Waits (bounded) until the node answers PING; a node that exits fails the test at once.
    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cluster node on port {} exited at start ({status}); its log:\n{}", self.port, self.log());
            }
            if let Ok(mut c) = try_conn(self.port, Duration::from_millis(200)) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!("cluster node on port {} did not answer within 20 s; its log:\n{}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again after `kill9`, same ports, directory and arguments (it rejoins the
    /// cluster from its nodes.conf).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart needs a stopped node");
        self.spawn();
        self.wait_up();
    }

    pub fn conn(&self) -> redis::Connection {
        let c = try_conn(self.port, Duration::from_secs(5)).unwrap_or_else(|e| panic!("connect to node {}: {e}", self.port));
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The server binary: `RMQ_SERVER_BIN` (a redis-server or a valkey-server), else
/// `redis-server` from PATH.
fn server_bin() -> String {
    std::env::var("RMQ_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

fn try_conn(port: u16, t: Duration) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection_with_timeout(t)
}

/// `n` distinct free loopback ports.
fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are chosen, so the kernel never hands one out twice.
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A node of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// Inclusive slot ranges (masters).
    pub slots: Vec<(u16, u16)>,
}

pub struct TestCluster {
    pub nodes: Vec<ClusterNode>,
    pub opts: ClusterOptions,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn start(opts: ClusterOptions) -> TestCluster {
        let n = opts.masters * (1 + opts.replicas_per_master);
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let mut nodes = Vec::new();
        for i in 0..n {
            let (port, bus) = (ports[2 * i], ports[2 * i + 1]);
            let ndir = dir.path().join(format!("node-{port}"));
            std::fs::create_dir_all(&ndir).unwrap();
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--cluster-port",
                &bus.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &opts.node_timeout_ms.to_string(),
                // A replica takes over whatever its lag: the test kills masters on purpose.
                "--cluster-replica-validity-factor",
                "0",
                "--dir",
                &ndir.display().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                // Replicas sync at once, not after the default 5 s wait for more replicas.
                "--repl-diskless-sync-delay",
                "0",
                "--logfile",
                "redis.log",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for (k, v) in &opts.extra {
                args.push(format!("--{k}"));
                args.push(v.clone());
            }
            if let Some(m) = &opts.module {
                assert!(m.exists(), "{} is missing: run `make build` (or `make test`) first", m.display());
                args.push("--loadmodule".into());
                args.push(m.display().to_string());
            }
            nodes.push(ClusterNode { port, bus, dir: ndir, child: None, args });
        }
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_up();
        }
        let mut c = TestCluster { nodes, opts, _dir: dir };
        c.create();
        c.wait_ok(Duration::from_secs(60));
        if let Some(lua) = c.opts.lua.clone() {
            for port in c.master_ports() {
                let mut con = c.node(port).conn();
                let _: String = redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(&lua).query(&mut con).unwrap();
            }
        }
        c
    }

    /// `redis-cli --cluster create … --cluster-replicas N --cluster-yes`, bounded.
    fn create(&mut self) {
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas".into(), self.opts.replicas_per_master.to_string(), "--cluster-yes".into()]);
        let o = redis_cli(&args, Duration::from_secs(60));
        // On a busy machine redis-cli's own final check may run before every node has heard of
        // every replica ("claims to be slave of unknown node"): what matters is that it set the
        // cluster up; `wait_ok` then waits until every node agrees.
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("Nodes configuration updated") && out.contains("Sending CLUSTER MEET"),
            "redis-cli --cluster create failed:\n{}\n{}",
            out,
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Waits (bounded) until every live node says `cluster_state:ok`, knows every node and
    /// every replica, every replica's link to its master is up, and every live node agrees on
    /// the owner of every slot.
    pub fn wait_ok(&mut self, limit: Duration) {
        let n = self.nodes.len();
        let deadline = Instant::now() + limit;
        loop {
            let mut why = String::new();
            let mut maps = BTreeSet::new();
            for node in &mut self.nodes {
                if !node.alive() {
                    continue;
                }
                let info = try_conn(node.port, Duration::from_secs(2)).and_then(|mut c| {
                    let ci: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c)?;
                    let repl: String = redis::cmd("INFO").arg("replication").query(&mut c)?;
                    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c)?;
                    Ok((ci, repl, nodes))
                });
                match info {
                    Ok((ci, repl, nodes)) => {
                        if !ci.contains("cluster_state:ok") {
                            why = format!("node {} is not ok", node.port);
                        } else if !ci.contains(&format!("cluster_known_nodes:{n}")) {
                            why = format!("node {} does not know every node yet", node.port);
                        } else if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                            why = format!("replica {} is not in sync yet", node.port);
                        }
                        let parsed = parse_nodes(&nodes);
                        let replicas = parsed.iter().filter(|i| !i.master && !i.failed && i.master_id.is_some()).count();
                        if why.is_empty() && replicas != self.opts.masters * self.opts.replicas_per_master {
                            why = format!("node {} sees {replicas} replicas", node.port);
                        }
                        let owners: BTreeSet<String> = parsed
                            .into_iter()
                            .filter(|i| i.master && !i.failed && !i.slots.is_empty())
                            .map(|i| format!("{}={:?}", i.port, i.slots))
                            .collect();
                        maps.insert(owners.into_iter().collect::<Vec<_>>().join(" "));
                    }
                    Err(e) => why = format!("node {}: {e}", node.port),
                }
            }
            if why.is_empty() && maps.len() > 1 {
                why = format!("nodes disagree on the slot map: {maps:?}");
            }
            if why.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let logs: String = self.nodes.iter().map(|n| format!("--- node {}:\n{}\n", n.port, tail(&n.log(), 30))).collect();
                panic!("the cluster is not ok within {limit:?}: {why}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first live node's URL (any node will do for a cluster client).
    pub fn url(&mut self) -> String {
        let p = self.live_port();
        format!("redis://127.0.0.1:{p}/")
    }

    pub fn live_port(&mut self) -> u16 {
        self.nodes.iter_mut().find_map(|n| n.alive().then_some(n.port)).expect("no live node")
    }

    pub fn node(&mut self, port: u16) -> &mut ClusterNode {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// `CLUSTER NODES` as a live node sees it.
    pub fn info(&mut self) -> Vec<NodeInfo> {
        let port = self.live_port();
        let mut c = self.node(port).conn();
        let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
        parse_nodes(&text)
    }

    /// Ports of the masters that serve slots, in the order of their first slot.
    pub fn master_ports(&mut self) -> Vec<u16> {
        let mut m: Vec<NodeInfo> = self.info().into_iter().filter(|i| i.master && !i.failed && !i.slots.is_empty()).collect();
        m.sort_by_key(|i| i.slots[0].0);
        m.into_iter().map(|i| i.port).collect()
    }

    /// The port of the master serving `slot`.
    pub fn owner(&mut self, slot: u16) -> u16 {
        self.info()
            .into_iter()
            .find(|i| i.master && !i.failed && i.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|i| i.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The ports of the replicas of the master on `port`.
    pub fn replicas_of(&mut self, port: u16) -> Vec<u16> {
        let info = self.info();
        let id = info.iter().find(|i| i.port == port).map(|i| i.id.clone()).expect("no such node");
        info.into_iter().filter(|i| i.master_id.as_deref() == Some(id.as_str())).map(|i| i.port).collect()
    }

    pub fn id_of(&mut self, port: u16) -> String {
        self.info().into_iter().find(|i| i.port == port).map(|i| i.id).expect("no such node")
    }

    /// `redis-cli --cluster reshard`: moves `slots` slots (the lowest ones `from` has) from the
    /// master on `from` to the master on `to`. Panics with redis-cli's output when it fails.
    pub fn reshard(&mut self, from: u16, to: u16, slots: u32) -> String {
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let args: Vec<String> = [
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{from}"),
            "--cluster-from",
            &from_id,
            "--cluster-to",
            &to_id,
            "--cluster-slots",
            &slots.to_string(),
            "--cluster-yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = redis_cli(&args, Duration::from_secs(120));
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        if !o.status.success() || out.contains("[ERR]") {
            let errors: Vec<&str> = out.lines().filter(|l| l.contains("ERR") || l.to_lowercase().contains("error")).collect();
            panic!("redis-cli --cluster reshard failed:\n{}\n…\n{}", errors.join("\n"), tail(&out, 10));
        }
        out
    }

    /// How many keys of `slot` the node on `port` holds.
    pub fn keys_in_slot(&mut self, port: u16, slot: u16) -> i64 {
        let mut c = self.node(port).conn();
        redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(&mut c).unwrap()
    }

    /// Waits (bounded) until a replica has taken over from the master on `dead` (killed) and
    /// the cluster is ok again.
    pub fn wait_failover(&mut self, dead: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let info = self.info();
            let took_over = info.iter().all(|i| i.port != dead || i.failed || !i.master || i.slots.is_empty());
            let ok = {
                let p = self.live_port();
                let mut c = self.node(p).conn();
                let ci: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap_or_default();
                ci.contains("cluster_state:ok")
            };
            if took_over && ok {
                return;
            }
            assert!(Instant::now() < deadline, "no replica took over from {dead} within {limit:?}: {info:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs redis-cli with `args`, killed (and the test failed) after `limit`.
pub fn redis_cli(args: &[String], limit: Duration) -> Output {
    let mut child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-cli could not be started ({e}): is it installed?"));
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("redis-cli {args:?} did not finish within {limit:?}:\n{}", String::from_utf8_lossy(&o.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of `CLUSTER NODES`.
pub fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let port = f[1].split('@').next().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok()).unwrap_or(0);
        let flags = f[2];
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                continue; // a slot being moved: [slot->-id] / [slot-<-id]
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                slots.push((a, b));
            }
        }
        slots.sort();
        out.push(NodeInfo {
            id: f[0].to_string(),
            port,
            master: flags.contains("master"),
            failed: flags.contains("fail") && !flags.contains("fail?"),
            master_id: (f[3] != "-").then(|| f[3].to_string()),
            slots,
        });
    }
    out
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
