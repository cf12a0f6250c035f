//! The redis-server under test: started by the harness on a free loopback port, pinned with
//! `taskset` to one CPU, with the module loaded; killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Connection;

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

impl Server {
    /// `cpu`: pin the server to this CPU with taskset (None: no pinning).
    pub fn start(module: &Path, cpu: Option<usize>) -> Result<Server, String> {
        Server::start_with(module, cpu, &[])
    }

    /// As `start`, with more configuration directives (`--name value`, each overriding the
    /// defaults: no persistence).
    pub fn start_with(module: &Path, cpu: Option<usize>, extra: &[String]) -> Result<Server, String> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("rmq-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = match cpu {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c.to_string()).arg("redis-server");
                cmd
            }
            None => Command::new("redis-server"),
        };
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--logfile", "redis.log"])
            .arg("--loadmodule")
            .arg(module)
            .args(extra)
            .stdout(Stdio::null())
            // A directive redis-server refuses is reported on stderr, before the log file is open.
            .stderr(std::fs::File::create(dir.join("stderr.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null()));
        let mut child = cmd.spawn().map_err(|e| format!("cannot start redis-server (via taskset: {}): {e}", cpu.is_some()))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
                    + &std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                return Err(format!("redis-server exited at start ({status}); its log:\n{log}"));
            }
            if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-server on port {port} did not answer within 15 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Server { port, dir, child })
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn conn(&self) -> Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let con = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connect to the bench server");
        con.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        con.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
        con
    }

    /// The CPUs the server may run on, as the kernel says (`Cpus_allowed_list`).
    pub fn cpus_allowed(&self) -> String {
        cpus_allowed(&format!("/proc/{}/status", self.pid()))
    }
}

pub fn cpus_allowed(status_path: &str) -> String {
    std::fs::read_to_string(status_path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "?".into())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Pins this process (the calling thread and every thread it starts later) to one CPU.
pub fn pin_self(cpu: usize) -> Result<(), String> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
