//! Throwaway database servers for the tests and the benchmark: PostgreSQL (initdb + pg_ctl)
//! and MariaDB (mariadb-install-db + mariadbd) from Debian's packages, each in a temp dir on
//! a free 127.0.0.1 port, stopped when dropped. A server that does not start is an error at
//! once, with its log.
//!
//! PostgreSQL refuses to run as root: as root (CI containers) its programs run as the
//! unprivileged `postgres` user that Debian's package creates (`runuser`), which then owns the
//! temp dir. MariaDB runs as root when started by root (`--user=root`, which it allows).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
}

/// A running throwaway server.
pub struct DbServer {
    pub kind: Kind,
    pub port: u16,
    dir: tempfile::TempDir,
    /// mariadbd (PostgreSQL runs detached under pg_ctl).
    child: Option<Child>,
    running: bool,
    durable: bool,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// PostgreSQL's programs: `RMQ_PG_BIN`, else the newest /usr/lib/postgresql/<v>/bin (Debian
/// keeps initdb and pg_ctl there, off PATH), else PATH.
fn pg_bin(name: &str) -> PathBuf {
    if let Ok(d) = std::env::var("RMQ_PG_BIN") {
        return Path::new(&d).join(name);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let p = e.path().join("bin").join(name);
            p.exists().then_some((v, p))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).unwrap_or_else(|| PathBuf::from(name))
}

/// A command that runs as the `postgres` user when we are root.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str, log: &Path) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        format!("{what} could not be started ({e}); is the package installed? (make test installs postgresql and mariadb-server)")
    })?;
    if !out.status.success() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        return Err(format!(
            "{what} failed ({}):\n{}{}\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

impl DbServer {
    /// Starts a server. `durable`: keep fsync on (benchmarks); tests turn it off.
    pub fn start(kind: Kind, durable: bool) -> Result<DbServer, String> {
        let dir = tempfile::Builder::new().prefix("rmq-testdb-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let mut s = DbServer { kind, port: free_port(), dir, child: None, running: false, durable };
        match kind {
            Kind::Postgres => s.init_postgres()?,
            Kind::MariaDb => s.init_mariadb()?,
        }
        s.launch()?;
        Ok(s)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn init_postgres(&mut self) -> Result<(), String> {
        if is_root() {
            let st = Command::new("chown").arg("-R").arg("postgres:").arg(self.dir.path()).status().map_err(|e| format!("chown: {e}"))?;
            if !st.success() {
                return Err(
                    "as root, PostgreSQL runs as the user postgres, and chown to it failed: is the postgresql package installed?".into()
                );
            }
        }
        let mut c = as_pg_user(&pg_bin("initdb"));
        c.arg("-D").arg(self.path("data")).args(["-A", "trust", "-U", "rmq", "-E", "UTF8", "--no-sync", "--locale=C"]);
        run(c, "initdb", &self.path("data/log"))
    }

    fn init_mariadb(&mut self) -> Result<(), String> {
        // A temp dir of its own: servers started side by side must not share /tmp's files.
        std::fs::create_dir_all(self.path("tmp")).map_err(|e| format!("tmp dir: {e}"))?;
        let mut c = Command::new("mariadb-install-db");
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", self.path("data").display()))
            .arg(format!("--tmpdir={}", self.path("tmp").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if is_root() {
            c.arg("--user=root");
        }
        run(c, "mariadb-install-db", &self.path("install.log"))?;
        std::fs::write(
            self.path("init.sql"),
            "CREATE DATABASE IF NOT EXISTS rmq;\n\
             CREATE USER IF NOT EXISTS 'rmq'@'127.0.0.1' IDENTIFIED BY 'rmq';\n\
             GRANT ALL ON *.* TO 'rmq'@'127.0.0.1';\n",
        )
        .map_err(|e| format!("init.sql: {e}"))
    }

    fn launch(&mut self) -> Result<(), String> {
        match self.kind {
            Kind::Postgres => {
                let mut opts =
                    format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=60", self.port, self.dir.path().display());
                if !self.durable {
                    opts += " -c fsync=off -c full_page_writes=off";
                }
                // More server settings, to look inside (auto_explain, pg_stat_statements).
                if let Ok(more) = std::env::var("RMQ_TESTDB_PG_OPTS") {
                    opts = format!("{opts} {more}");
                }
                let mut c = as_pg_user(&pg_bin("pg_ctl"));
                c.arg("-D").arg(self.path("data")).arg("-l").arg(self.path("postgres.log")).args(["-w", "-t", "60", "-o", &opts, "start"]);
                run(c, "pg_ctl start", &self.path("postgres.log"))?;
            }
            Kind::MariaDb => {
                let log = self.path("mariadb.log");
                let _ = std::fs::remove_file(&log);
                let mut c = Command::new("mariadbd");
                c.arg("--no-defaults")
                    .arg(format!("--datadir={}", self.path("data").display()))
                    .arg(format!("--port={}", self.port))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", self.path("mysql.sock").display()))
                    .arg(format!("--pid-file={}", self.path("mariadb.pid").display()))
                    .arg(format!("--tmpdir={}", self.path("tmp").display()))
                    .arg(format!("--log-error={}", log.display()))
                    .arg(format!("--init-file={}", self.path("init.sql").display()))
                    .args(["--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--max-connections=100"]);
                if !self.durable {
                    c.arg("--innodb-flush-log-at-trx-commit=2");
                }
                // More server options, to look inside (the slow query log).
                if let Ok(more) = std::env::var("RMQ_TESTDB_MARIADB_OPTS") {
                    c.args(more.split_whitespace());
                }
                if is_root() {
                    c.arg("--user=root");
                }
                let mut child =
                    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| {
                        format!("mariadbd could not be started ({e}); is mariadb-server installed? (make test installs it)")
                    })?;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                        let log = std::fs::read_to_string(&log).unwrap_or_default();
                        return Err(format!("mariadbd exited at start ({st}); its log:\n{log}"));
                    }
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("ready for connections") {
                        break;
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("mariadbd did not get ready within 60 s; its log:\n{text}"));
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                self.child = Some(child);
            }
        }
        self.running = true;
        Ok(())
    }

    /// The URL for `--db`.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Postgres => format!("postgres://rmq@127.0.0.1:{}/postgres", self.port),
            Kind::MariaDb => format!("mysql://rmq:rmq@127.0.0.1:{}/rmq", self.port),
        }
    }

    /// Stops the server (its data stays): clients get connection errors until [`start_again`].
    ///
    /// [`start_again`]: DbServer::start_again
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        match self.kind {
            Kind::Postgres => {
                let mut c = as_pg_user(&pg_bin("pg_ctl"));
                c.arg("-D")
                    .arg(self.path("data"))
                    .args(["-w", "-t", "60", "-m", "fast", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let _ = c.status();
            }
            Kind::MariaDb => {
                if let Some(mut child) = self.child.take() {
                    // SAFETY: kill with a pid we own.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while child.try_wait().ok().flatten().is_none() {
                        if Instant::now() > deadline {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
        self.running = false;
    }

    /// Starts again after [`stop`](DbServer::stop), same port and data.
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.running {
            return Ok(());
        }
        self.launch()
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        let name = match self.kind {
            Kind::Postgres => "postgres.log",
            Kind::MariaDb => "mariadb.log",
        };
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        if self.kind == Kind::Postgres && self.running {
            let mut c = as_pg_user(&pg_bin("pg_ctl"));
            c.arg("-D").arg(self.path("data")).args(["-w", "-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
            let _ = c.status();
            self.running = false;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
