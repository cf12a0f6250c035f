//! The `rmq` CLI end to end, against a real redis-server.
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn rmq(url: &str, spool: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rmq"));
    c.env("REDIS_URL", url)
        .env("RMQ_SPOOL", spool)
        .env("RMQ_LOG", "error")
        .args(["--connect-timeout", "300", "--command-timeout", "3000"])
        .args(args)
        .stdin(Stdio::null());
    c
}

/// `rmq` with the default log filter (RMQ_LOG unset).
fn rmq_logged(url: &str, spool: &Path, args: &[&str]) -> Command {
    let mut c = rmq(url, spool, args);
    c.env_remove("RMQ_LOG");
    c
}

/// The exit statuses documented in `rmq --help`.
const SPOOLED: i32 = 4;
const UNAVAILABLE: i32 = 3;
const NOTHING: i32 = 5;

/// Runs to the end, within a time limit.
fn run(mut c: Command) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    wait_child(&mut child, Duration::from_secs(30));
    child.wait_with_output().unwrap()
}

fn wait_child(child: &mut Child, limit: Duration) {
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("rmq did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

fn stat(url: &str, spool: &Path, q: &str, field: &str) -> i64 {
    let o = run(rmq(url, spool, &["--json", "stats", q]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    json(&o)[field].as_i64().unwrap()
}

#[test]
fn push_while_down_then_drain_when_up_then_stats() {
    let ed = editions()[0];
    let mut srv = Server::start(ed, &[]);
    let url = srv.url();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    srv.kill9();

    // Redis down: spooled, said on stderr with the server's URL, its own exit status, id on
    // stdout.
    let o = run(rmq(&url, &spool, &["push", "orders", "first", "--tag", "new", "--header", "trace=abc", "--id", "o-1"]));
    assert_eq!(o.status.code(), Some(SPOOLED), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "o-1");
    let err = text(&o.stderr);
    assert!(err.contains("NOT sent") && err.contains(&url) && err.contains("spool"), "{err}");
    // Body from stdin.
    let mut c = rmq(&url, &spool, &["--json", "push", "orders", "-"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"second\nline").unwrap();
    wait_child(&mut child, Duration::from_secs(30));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(SPOOLED));
    let j = json(&o);
    assert_eq!(j["spooled"], true);
    let second_id = j["id"].as_str().unwrap().to_string();

    let o = run(rmq(&url, &spool, &["--json", "spool", "status"]));
    assert!(o.status.success());
    let j = json(&o);
    assert_eq!((j["records"].as_u64(), j["quarantined"].as_u64()), (Some(2), Some(0)));
    assert!(j["bytes"].as_u64().unwrap() > 0);
    let o = run(rmq(&url, &spool, &["spool", "status"]));
    assert!(text(&o.stdout).contains("records     2"), "{}", text(&o.stdout));

    // Still down: the drain fails, and keeps everything.
    let o = run(rmq(&url, &spool, &["spool", "drain"]));
    assert_eq!(o.status.code(), Some(UNAVAILABLE));
    assert!(text(&o.stderr).contains("drain stopped"), "{}", text(&o.stderr));

    // A message that neither Redis nor the spool can take: non-zero exit.
    let bad_spool = tmp.path().join("file");
    std::fs::write(&bad_spool, b"x").unwrap();
    let o = run(rmq(&url, &bad_spool.join("sub"), &["push", "orders", "lost"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not stored"), "{}", text(&o.stderr));

    // Redis back: the drain sends both, in order.
    srv.restart();
    let o = run(rmq(&url, &spool, &["spool", "drain"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("sent 2"), "{}", text(&o.stdout));
    let o = run(rmq(&url, &spool, &["--json", "spool", "status"]));
    assert_eq!(json(&o)["records"].as_u64(), Some(0));
    assert_eq!(stat(&url, &spool, "orders", "ready"), 2);

    let o = run(rmq(&url, &spool, &["--json", "peek", "orders"]));
    let msgs = json(&o);
    assert_eq!(msgs[0]["id"], "o-1");
    assert_eq!(msgs[0]["tag"], "new");
    assert_eq!(msgs[0]["headers"][0], serde_json::json!(["trace", "abc"]));
    assert_eq!(msgs[1]["id"].as_str(), Some(second_id.as_str()));
    assert_eq!(msgs[1]["body"], "second\nline");

    // Stats of every queue, as a table, and --watch redraws.
    assert!(run(rmq(&url, &spool, &["push", "other", "x"])).status.success());
    let o = run(rmq(&url, &spool, &["stats"]));
    let out = text(&o.stdout);
    assert!(out.contains("queue") && out.contains("ready") && out.contains("orders") && out.contains("other"), "{out}");
    let o = run(rmq(&url, &spool, &["stats", "--watch", "--interval", "50", "--iterations", "3"]));
    assert_eq!(text(&o.stdout).matches("2 queue(s)").count(), 3, "{}", text(&o.stdout));

    // fetch / nack / ack / recover.
    let o = run(rmq(&url, &spool, &["--json", "fetch", "orders", "--count", "2", "--lock", "60000"]));
    let got = json(&o);
    let r1 = got[0]["receipt"].as_str().unwrap().to_string();
    let r2 = got[1]["receipt"].as_str().unwrap().to_string();
    let o = run(rmq(&url, &spool, &["ack", "orders", &r1]));
    assert_eq!(text(&o.stdout).trim(), "1");
    assert!(o.status.success());
    let o = run(rmq(&url, &spool, &["nack", "orders", &r2, "--error", "--reason", "looked bad"]));
    assert_eq!(text(&o.stdout).trim(), "1");
    let o = run(rmq(&url, &spool, &["--json", "peek", "orders", "errors"]));
    assert_eq!(json(&o)[0]["error"], "looked bad");
    let o = run(rmq(&url, &spool, &["--json", "recover", "orders"]));
    assert_eq!(json(&o)["errors"], 1);
    assert_eq!(stat(&url, &spool, "orders", "ready"), 1);
    // Empty queue: fetch prints nothing, --block waits and gives up.
    let o = run(rmq(&url, &spool, &["fetch", "empty", "--block", "200"]));
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "");
}

#[test]
fn work_runs_the_command_per_message_and_acks_or_nacks() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let url = srv.url();
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        let outdir = tmp.path().join("out");
        std::fs::create_dir(&outdir).unwrap();
        for body in ["alpha", "fail", "beta"] {
            let o = run(rmq(&url, &spool, &["push", "w", body, "--id", body, "--header", "x-trace=t1"]));
            assert!(o.status.success(), "{}", text(&o.stderr));
        }
        let script = format!(
            "b=$(cat); if [ \"$b\" = fail ]; then echo \"cannot do $RMQ_ID\" >&2; exit 3; fi; echo \"$b $RMQ_ATTEMPT $RMQ_HEADER_X_TRACE\" > {}/$RMQ_ID",
            outdir.display()
        );
        let mut child = rmq(&url, &spool, &["work", "w", "--concurrency", "2", "--failed-is-error", "--", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let st = run(rmq(&url, &spool, &["--json", "stats", "w"]));
            let j = json(&st);
            if j["acked"] == 2 && j["errors"] == 1 {
                break;
            }
            assert!(Instant::now() < until, "{ed:?}: work did not finish: {j}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // SIGTERM: a graceful stop.
        send_signal(child.id(), "TERM");
        wait_child(&mut child, Duration::from_secs(10));
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("acked 2"), "{}", text(&o.stderr));
        assert_eq!(std::fs::read_to_string(outdir.join("alpha")).unwrap(), "alpha 1 t1\n");
        assert_eq!(std::fs::read_to_string(outdir.join("beta")).unwrap(), "beta 1 t1\n");
        let o = run(rmq(&url, &spool, &["--json", "peek", "w", "errors"]));
        let j = json(&o);
        assert_eq!((j[0]["id"].as_str(), j[0]["error"].as_str()), (Some("fail"), Some("cannot do fail")));
    }
}

#[test]
fn a_killed_rmq_work_gets_its_message_redelivered_to_another_worker() {
    let ed = editions()[0];
    let srv = Server::start(ed, &[]);
    let url = srv.url();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mark = tmp.path().join("started");
    run(rmq(&url, &spool, &["push", "kq", "job", "--id", "job-1"]));
    // Worker 1 starts a long command, then is killed with SIGKILL.
    let script = format!("touch {}; sleep 3", mark.display());
    let mut w1 = rmq(&url, &spool, &["work", "kq", "--lock", "500", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !mark.exists() {
        assert!(Instant::now() < until, "worker 1 never started its command");
        std::thread::sleep(Duration::from_millis(10));
    }
    w1.kill().unwrap();
    w1.wait().unwrap();
    // Worker 2 gets it after the lock ran out: attempt 2.
    let out = tmp.path().join("w2");
    let script = format!("echo $RMQ_ID $RMQ_ATTEMPT > {}", out.display());
    let mut w2 = rmq(&url, &spool, &["work", "kq", "--", "sh", "-c", &script]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&out).map(|s| s.is_empty()).unwrap_or(true) {
        assert!(Instant::now() < until, "{ed:?}: not redelivered");
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal(w2.id(), "TERM");
    wait_child(&mut w2, Duration::from_secs(10));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "job-1 2\n");
    assert_eq!(stat(&url, &spool, "kq", "acked"), 1);
}

/// Sends a signal with kill(1): no libc binding needed.
fn send_signal(pid: u32, sig: &str) {
    let s = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(s.success());
}

/// Starts `rmq` and collects its stdout as it comes, for long-running commands.
struct Running {
    child: Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Running {
    fn start(mut c: Command) -> Running {
        use std::io::Read;
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let collect = |mut r: Box<dyn Read + Send>| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Running { child, out, err }
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until `f(stdout, stderr)` holds.
    fn wait_for(&mut self, what: &str, f: impl Fn(&str, &str) -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !f(&self.stdout(), &self.stderr()) {
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("{what}: not seen within 30 s\nstdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit; returns the status code.
    fn wait(&mut self) -> Option<i32> {
        wait_child(&mut self.child, Duration::from_secs(30));
        // Let the reader threads take the last bytes.
        std::thread::sleep(Duration::from_millis(50));
        self.child.wait().unwrap().code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peek_json(url: &str, spool: &Path, q: &str, state: &str) -> serde_json::Value {
    let o = run(rmq(url, spool, &["--json", "peek", q, state]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    json(&o)
}

#[test]
fn no_spool_and_a_wrong_address_fail_loudly_naming_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let o = run(rmq(&url, &spool, &["--no-spool", "push", "q", "x"]));
    assert_eq!(o.status.code(), Some(UNAVAILABLE), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&url), "{}", text(&o.stderr));
    assert!(!spool.exists(), "--no-spool must not create a spool");
    // Any command: the error names the server it could not reach.
    let o = run(rmq(&url, &spool, &["stats", "q"]));
    assert_eq!(o.status.code(), Some(UNAVAILABLE));
    assert!(text(&o.stderr).contains(&url), "{}", text(&o.stderr));
    // Under --json the error is JSON too.
    let o = run(rmq(&url, &spool, &["--json", "--no-spool", "push", "q", "x"]));
    assert_eq!(o.status.code(), Some(UNAVAILABLE));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["kind"], "unavailable");
    assert!(e["error"].as_str().unwrap().contains(&url), "{e}");
}

/// A TLS-only redis-server on a free port (its certificate made with openssl).
struct TlsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let st = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is needed for the TLS test (make test installs it)");
        assert!(st.success());
        let port = free_port();
        // The client's behaviour is under test, so any TLS-capable server does: Debian's
        // redis-server (the Valkey of `make test` is built without TLS).
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--tls-auth-clients", "no", "--dir"])
            .arg(d)
            .arg("--tls-cert-file")
            .arg(d.join("cert.pem"))
            .arg("--tls-key-file")
            .arg(d.join("key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(d.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("TLS redis-server exited at start: {st}");
            }
            assert!(Instant::now() < until, "TLS redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsServer { child, port, _dir: dir }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_tls_mismatch_is_reported_with_the_url_and_a_hint() {
    let srv = TlsServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let plain = format!("redis://127.0.0.1:{}/", srv.port);
    let o = run(rmq(&plain, &spool, &["push", "q", "x"]));
    assert_eq!(o.status.code(), Some(SPOOLED), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains(&plain) && err.contains("rediss://"), "{err}");
    let o = run(rmq(&plain, &spool, &["--no-spool", "push", "q", "x"]));
    assert_eq!(o.status.code(), Some(UNAVAILABLE));
    assert!(text(&o.stderr).contains("rediss://"), "{}", text(&o.stderr));
    // TLS asked of a plain server (which waits for a command that never comes): a hint too.
    let plain_srv = Server::start(Ed::Lua, &[]);
    let tls_to_plain = format!("rediss://127.0.0.1:{}/#insecure", plain_srv.port);
    let o = run(rmq(&tls_to_plain, &spool, &["--no-spool", "push", "q", "x"]));
    assert_eq!(o.status.code(), Some(UNAVAILABLE));
    let err = text(&o.stderr);
    assert!(err.contains("rediss://127.0.0.1") && err.contains("asks for TLS"), "{err}");
    // The right scheme works.
    let tls = format!("rediss://127.0.0.1:{}/#insecure", srv.port);
    let o = run(rmq(&tls, &spool, &["--no-spool", "push", "q", "x"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn the_default_spool_is_per_user_and_server_not_the_working_directory_and_is_warned_about() {
    let mut srv = Server::start(editions()[0], &[]);
    let url = srv.url();
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let base = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rmq"));
        c.env("REDIS_URL", &url)
            .env_remove("RMQ_SPOOL")
            .env_remove("XDG_STATE_HOME")
            .env("HOME", home.path())
            .env("RMQ_LOG", "error")
            .current_dir(cwd.path())
            .args(["--connect-timeout", "300"])
            .args(args)
            .stdin(Stdio::null());
        c
    };
    srv.kill9();
    let o = run(base(&["push", "jobs", "while-down", "--id", "d1"]));
    assert_eq!(o.status.code(), Some(SPOOLED), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "nothing may be written to the working directory");
    let expected = home.path().join(".local/state/rmq/spool").join(format!("127.0.0.1-{}-0", srv.port));
    assert!(expected.is_dir(), "spool not at {}", expected.display());
    assert!(text(&o.stderr).contains(&expected.display().to_string()));

    // Redis back: a push that Redis takes warns about the older ones, and so does any
    // other command while nothing drains the spool.
    srv.restart();
    let o = run(base(&["push", "jobs", "after", "--id", "d2"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("WARNING"), "{}", text(&o.stderr));
    let o = run(base(&["stats", "jobs"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("WARNING") && err.contains("rmq spool drain"), "{err}");

    // `rmq work`, a long-running command, drains it: both messages are handled.
    let out = cwd.path().join("handled");
    let script = format!("echo $RMQ_ID >> {}", out.display());
    let mut w = Running::start(base(&["work", "jobs", "--", "sh", "-c", &script]));
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        if got.lines().count() == 2 {
            let mut ids: Vec<&str> = got.lines().collect();
            ids.sort();
            assert_eq!(ids, ["d1", "d2"]);
            break;
        }
        assert!(Instant::now() < until, "not drained and handled: {got:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal(w.child.id(), "TERM");
    assert_eq!(w.wait(), Some(0), "{}", w.stderr());
    let o = run(base(&["stats", "jobs"]));
    assert!(!text(&o.stderr).contains("WARNING"), "{}", text(&o.stderr));
}

#[test]
fn work_with_a_command_that_cannot_run_never_touches_a_message() {
    let ed = editions()[0];
    let srv = Server::start(ed, &[]);
    let url = srv.url();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    assert!(run(rmq(&url, &spool, &["push", "m", "x", "--id", "m1"])).status.success());
    for cmd in ["/no/such/command", "no-such-command-anywhere"] {
        let o = run(rmq(&url, &spool, &["work", "m", "--", cmd]));
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("cannot run") && text(&o.stderr).contains(cmd), "{}", text(&o.stderr));
    }
    // Checked before the first FETCH: the message was never delivered.
    let j = peek_json(&url, &spool, "m", "ready");
    assert_eq!((j[0]["id"].as_str(), j[0]["attempt"].as_u64()), (Some("m1"), Some(0)));
}

#[test]
fn a_command_that_exits_127_is_the_workers_fault_and_never_dead_letters() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let url = srv.url();
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        // Even on its last attempt the message must not end in failed or errors.
        let o = run(rmq(&url, &spool, &["config", "set", "m", "max-attempts", "1"]));
        assert!(o.status.success(), "{}", text(&o.stderr));
        run(rmq(&url, &spool, &["push", "m", "x", "--id", "m1"]));
        let o = run(rmq(&url, &spool, &["work", "m", "--failed-is-error", "--", "sh", "-c", "exit 127"]));
        assert_eq!(o.status.code(), Some(1), "{ed:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("127"), "{}", text(&o.stderr));
        let st = json(&run(rmq(&url, &spool, &["--json", "stats", "m"])));
        assert_eq!((st["ready"].as_i64(), st["failed"].as_i64(), st["errors"].as_i64()), (Some(1), Some(0), Some(0)), "{ed:?}: {st}");
    }
}

#[test]
fn work_logs_each_message_and_honours_the_exit_status_convention_and_the_timeout() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let url = srv.url();
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        let o = run(rmq(&url, &spool, &["config", "set", "w", "backoff-ms", "0", "max-attempts", "2"]));
        assert!(o.status.success(), "{}", text(&o.stderr));
        for id in ["ok", "bad", "slow"] {
            run(rmq(&url, &spool, &["push", "w", id, "--id", id]));
        }
        let pids = tmp.path().join("pids");
        let script = format!(
            "b=$(cat); case $b in ok) exit 0;; bad) echo 'unparseable order' >&2; exit 65;; \
             slow) echo $$ >> {}; exec sleep 60;; esac",
            pids.display()
        );
        let mut w =
            Running::start(rmq_logged(&url, &spool, &["work", "w", "--concurrency", "3", "--timeout", "500", "--", "sh", "-c", &script]));
        // The slow one times out twice (attempts 1 and 2): then it is dead (max-attempts 2).
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let st = json(&run(rmq(&url, &spool, &["--json", "stats", "w"])));
            if st["acked"] == 1 && st["failed"] == 2 {
                break;
            }
            assert!(Instant::now() < until, "{ed:?}: {st}\n{}", w.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        send_signal(w.child.id(), "TERM");
        assert_eq!(w.wait(), Some(0));
        let log = w.stderr();
        // Start: server, queue, edition. Per message: start and outcome, with its id.
        let ed_name = if ed == Ed::Module { "Module" } else { "Lua" };
        assert!(log.contains("started") && log.contains(&url) && log.contains(ed_name), "{log}");
        for needle in ["id=ok", "id=bad", "id=slow", "ack", "dead-letter", "timeout after 500 ms"] {
            assert!(log.contains(needle), "{needle} missing from:\n{log}");
        }
        assert!(!log.contains('\x1b'), "no ANSI colours when stderr is not a terminal");
        // 65: dead-lettered at once with its stderr as the reason.
        let failed = peek_json(&url, &spool, "w", "failed");
        let bad = failed.as_array().unwrap().iter().find(|m| m["id"] == "bad").unwrap();
        assert_eq!((bad["attempt"].as_u64(), bad["error"].as_str()), (Some(1), Some("unparseable order")));
        // The timed-out commands were killed.
        let pids = std::fs::read_to_string(&pids).unwrap();
        assert_eq!(pids.lines().count(), 2, "{pids}");
        for pid in pids.lines() {
            let until = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
            {
                assert!(Instant::now() < until, "{ed:?}: command {pid} still runs after its timeout");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn a_worker_pointed_at_nothing_gives_up_after_its_startup_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let o = run(rmq_logged(&url, &spool, &["work", "q", "--startup-timeout", "500", "--", "true"]));
    assert_eq!(o.status.code(), Some(UNAVAILABLE), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains(&url) && err.contains("gives up"), "{err}");
    assert!(err.contains("WARN") && !err.contains('\x1b'), "plain text logs off a terminal: {err}");
}

#[test]
fn json_keeps_binary_bodies_and_reports_errors_as_json() {
    use base64::Engine;
    let ed = editions()[0];
    let srv = Server::start(ed, &[]);
    let url = srv.url();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let body: Vec<u8> = vec![0, 159, 146, 150, 255, b'x'];
    let mut c = rmq(&url, &spool, &["push", "bin", "-", "--id", "b1"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    wait_child(&mut child, Duration::from_secs(30));
    assert!(child.wait().unwrap().success());
    run(rmq(&url, &spool, &["push", "bin", "plain text", "--id", "t1"]));
    let j = peek_json(&url, &spool, "bin", "ready");
    assert_eq!(j[0]["body_encoding"], "base64");
    let got = base64::engine::general_purpose::STANDARD.decode(j[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(got, body);
    assert_eq!((j[1]["body"].as_str(), j[1].get("body_encoding")), (Some("plain text"), None));
    // Errors: JSON on stderr, with a kind.
    let o = run(rmq(&url, &spool, &["--json", "get", "bin", "nosuch"]));
    assert_eq!(o.status.code(), Some(NOTHING));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["kind"], "not_found");
    let o = run(rmq(&url, &spool, &["--json", "push", "bad name", "x"]));
    assert_eq!(o.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["kind"], "invalid", "{e}");
    let o = run(rmq(&url, &spool, &["--json", "push"]));
    assert_eq!(o.status.code(), Some(2));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["kind"], "usage", "{e}");
}

#[test]
fn ack_nack_touch_that_change_nothing_exit_non_zero_and_say_why() {
    let ed = editions()[0];
    let srv = Server::start(ed, &[]);
    let url = srv.url();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    run(rmq(&url, &spool, &["push", "s", "a", "--id", "msg-a"]));
    run(rmq(&url, &spool, &["push", "s", "b", "--id", "msg-b"]));
    let got = json(&run(rmq(&url, &spool, &["--json", "fetch", "s", "--count", "2"])));
    let r1 = got[0]["receipt"].as_str().unwrap().to_string();
    let r2 = got[1]["receipt"].as_str().unwrap().to_string();
    assert!(run(rmq(&url, &spool, &["ack", "s", &r1])).status.success());
    // Again: stale.
    let o = run(rmq(&url, &spool, &["ack", "s", &r1]));
    assert_eq!(o.status.code(), Some(NOTHING));
    assert_eq!(text(&o.stdout).trim(), "0");
    assert!(text(&o.stderr).contains("stale"), "{}", text(&o.stderr));
    // One good, one stale: still non-zero, with the count.
    let o = run(rmq(&url, &spool, &["ack", "s", &r1, &r2]));
    assert_eq!(o.status.code(), Some(NOTHING));
    assert!(text(&o.stderr).contains("1 of 2 receipts were stale"), "{}", text(&o.stderr));
    // A message id where a receipt belongs: said so.
    run(rmq(&url, &spool, &["push", "s", "c", "--id", "msg-c"]));
    let o = run(rmq(&url, &spool, &["ack", "s", "msg-c"]));
    assert_eq!(o.status.code(), Some(NOTHING));
    assert!(text(&o.stderr).contains("'msg-c' is a message id, not a receipt"), "{}", text(&o.stderr));
    for args in [vec!["nack", "s", r1.as_str()], vec!["nack", "s", r1.as_str(), "--error"], vec!["touch", "s", r1.as_str()]] {
        let o = run(rmq(&url, &spool, &args));
        assert_eq!(o.status.code(), Some(NOTHING), "{args:?}");
        assert!(text(&o.stderr).contains("stale"), "{args:?}: {}", text(&o.stderr));
    }
}

/// A receipt belongs to one delivery of one queue: used on another queue, it must not ack
/// that queue's message, even where both queues made the same numbers (fencing across
/// queues; needs receipts that are unique across queues).
#[test]
fn a_receipt_of_one_queue_never_acks_another_queues_message() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let url = srv.url();
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        run(rmq(&url, &spool, &["push", "qa", "for a"]));
        run(rmq(&url, &spool, &["push", "qb", "for b"]));
        let a = json(&run(rmq(&url, &spool, &["--json", "fetch", "qa"])));
        let b = json(&run(rmq(&url, &spool, &["--json", "fetch", "qb"])));
        let (ra, _rb) = (a[0]["receipt"].as_str().unwrap(), b[0]["receipt"].as_str().unwrap());
        let o = run(rmq(&url, &spool, &["ack", "qb", ra]));
        assert_eq!(o.status.code(), Some(NOTHING), "{ed:?}: qa's receipt acked qb's message");
        let st = json(&run(rmq(&url, &spool, &["--json", "stats", "qb"])));
        assert_eq!((st["inflight"].as_i64(), st["acked"].as_i64()), (Some(1), Some(0)), "{ed:?}");
    }
}

/// Runs redis-cli against a plain server (no module).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let o = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
    text(&o.stdout)
}

#[test]
fn reading_commands_never_install_the_lua_library_and_writing_ones_say_they_did() {
    let srv = Server::start(Ed::Lua, &[]);
    let url = srv.url();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    for args in [vec!["stats", "q"], vec!["peek", "q"], vec!["queues"], vec!["get", "q", "x"], vec!["config", "get", "q"], vec!["log", "q"]]
    {
        let o = run(rmq(&url, &spool, &args));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("not installed"), "{args:?}: {}", text(&o.stderr));
        assert_eq!(redis_cli(srv.port, &["FUNCTION", "LIST"]).trim(), "", "{args:?} installed it");
    }
    let o = run(rmq_logged(&url, &spool, &["push", "q", "x"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("installed the rmq Lua library"), "{}", text(&o.stderr));
    assert!(redis_cli(srv.port, &["FUNCTION", "LIST"]).contains("rmq"));
    let o = run(rmq(&url, &spool, &["stats", "q"]));
    assert!(o.status.success());
}

#[test]
fn every_command_of_the_contract_has_a_subcommand() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let url = srv.url();
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        let ok = |args: &[&str]| {
            let o = run(rmq(&url, &spool, args));
            assert!(o.status.success(), "{ed:?} {args:?}: {}", text(&o.stderr));
            text(&o.stdout)
        };
        // config set / get
        ok(&["config", "set", "c", "log", "1", "backoff-ms", "0"]);
        assert_eq!(ok(&["config", "get", "c", "log"]).split_whitespace().collect::<Vec<_>>(), ["log", "1"]);
        let all = json(&run(rmq(&url, &spool, &["--json", "config", "get", "c"])));
        assert_eq!(all["backoff-ms"], "0");
        assert_eq!(run(rmq(&url, &spool, &["config", "set", "c", "lock-ms"])).status.code(), Some(2));
        for id in ["c1", "c2", "c3"] {
            ok(&["push", "c", id, "--id", id]);
        }
        // touch
        let f = json(&run(rmq(&url, &spool, &["--json", "fetch", "c", "--lock", "1000", "--consumer", "me"])));
        let r = f[0]["receipt"].as_str().unwrap();
        let deadline: u64 = ok(&["touch", "c", r, "--lock", "60000"]).trim().parse().unwrap();
        assert!(deadline > f[0]["deadline"].as_u64().unwrap());
        // get
        let g = json(&run(rmq(&url, &spool, &["--json", "get", "c", "c1"])));
        assert_eq!((g[0]["state"].as_str(), g[0]["consumer"].as_str()), (Some("inflight"), Some("me")));
        ok(&["nack", "c", r, "--error", "--reason", "broken"]);
        // requeue: from errors back to ready.
        assert_eq!(ok(&["requeue", "c", "c1"]).trim(), "1");
        assert_eq!(run(rmq(&url, &spool, &["requeue", "c", "c1"])).status.code(), Some(NOTHING));
        // del
        assert_eq!(ok(&["del", "c", "c2"]).trim(), "1");
        assert_eq!(run(rmq(&url, &spool, &["del", "c", "c2"])).status.code(), Some(NOTHING));
        // log (with the push events) and replay.
        let log = json(&run(rmq(&url, &spool, &["--json", "log", "c", "--count", "100"])));
        let pushes: Vec<_> = log.as_array().unwrap().iter().filter(|e| e["event"] == "push").collect();
        assert_eq!(pushes.len(), 3, "{log}");
        let text_log = ok(&["log", "c"]);
        assert!(text_log.contains("push") && text_log.contains("c3"), "{text_log}");
        let first = pushes[0]["offset"].as_str().map(|s| s.to_string()).unwrap_or_else(|| pushes[0]["offset"].to_string());
        assert_eq!(ok(&["replay", "c", "--from", &first, "--to", &first]).trim(), "1");
        // purge
        let st = json(&run(rmq(&url, &spool, &["--json", "stats", "c"])));
        let ready = st["ready"].as_i64().unwrap();
        assert_eq!(ok(&["purge", "c", "ready"]).trim(), ready.to_string());
        assert_eq!(run(rmq(&url, &spool, &["purge", "c"])).status.code(), Some(2), "the state is required");
        let st = json(&run(rmq(&url, &spool, &["--json", "stats", "c"])));
        assert_eq!(st["ready"], 0);
    }
}

#[test]
fn help_describes_every_option_with_an_example_per_subcommand() {
    let help = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_rmq")).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}");
        text(&o.stdout)
    };
    let top = help(&["--help"]);
    assert!(top.contains("Global options:") && top.contains("Exit status:"), "{top}");
    let subs: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|s| s != "help" && !s.is_empty())
        .collect();
    assert!(subs.len() >= 18, "{subs:?}");
    let mut leaves = Vec::new();
    for s in subs {
        if s == "spool" {
            leaves.extend([vec!["spool".to_string(), "status".into()], vec!["spool".into(), "drain".into()]]);
        } else if s == "config" {
            leaves.extend([vec!["config".to_string(), "get".into()], vec!["config".into(), "set".into()]]);
        } else if s == "partition" {
            leaves.extend(["create", "show", "list"].map(|l| vec!["partition".to_string(), l.into()]));
        } else if s == "archive" {
            leaves.push(vec![s]);
            leaves.extend(["run", "migrate", "status", "search", "replay"].map(|l| vec!["archive".to_string(), l.into()]));
        } else {
            leaves.push(vec![s]);
        }
    }
    for sub in leaves {
        let mut args: Vec<&str> = sub.iter().map(String::as_str).collect();
        args.push("--help");
        let h = help(&args);
        assert!(h.contains("Example"), "{sub:?} has no example:\n{h}");
        // Every option and argument has a description: no `--name <X>` line followed by a
        // blank line.
        let lines: Vec<&str> = h.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            // (A short help puts the description on the same line, after two spaces.)
            if (t.starts_with("--") || t.starts_with('<')) && l.starts_with("  ") && !t.contains("  ") {
                let next = lines.get(i + 1).map(|n| n.trim()).unwrap_or("");
                assert!(!next.is_empty(), "{sub:?}: '{t}' has no description:\n{h}");
            }
        }
    }
}

#[test]
fn stats_watch_survives_a_restart_shows_rates_fits_80_columns_and_keeps_idle_queues() {
    let ed = editions()[0];
    let mut srv = Server::start(ed, &[]);
    let url = srv.url();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    run(rmq(&url, &spool, &["push", "a-queue-with-a-rather-long-name-indeed", "x"]));
    run(rmq(&url, &spool, &["push", "idle", "x"]));
    let mut w = Running::start(rmq(&url, &spool, &["stats", "--watch", "--interval", "100", "--iterations", "100000"]));
    w.wait_for("first table", |o, _| o.contains("push/s") && o.contains("idle"));
    // The idle queue is emptied: it stays in the table.
    let f = json(&run(rmq(&url, &spool, &["--json", "fetch", "idle"])));
    run(rmq(&url, &spool, &["ack", "idle", f[0]["receipt"].as_str().unwrap()]));
    let mark = w.stdout().len();
    w.wait_for("a redraw after the ack", |o, _| o[mark..].matches("queue(s)").count() >= 2);
    srv.kill9();
    w.wait_for("down", |o, _| o.contains("DOWN since"));
    srv.restart();
    // (A restarted server without persistence has lost the Lua library, which only a
    // command that writes installs again: the pushes.)
    for _ in 0..5 {
        run(rmq(&url, &spool, &["push", "idle", "y"]));
    }
    let mark = w.stdout().len();
    w.wait_for("back up", |o, _| o[mark..].contains("queue(s)"));
    let mark = w.stdout().len();
    w.wait_for("redraws after the restart", |o, _| o[mark..].matches("queue(s)").count() >= 3);
    let _ = w.child.kill();
    let out = w.stdout();
    for l in out.lines() {
        assert!(l.chars().count() <= 80, "wider than 80 columns: {l:?}");
    }
    let after_ack = &out[out.find("DOWN since").unwrap()..];
    assert!(after_ack.contains("idle"), "{out}");
    assert!(out.contains("a-queue-with-a-rath…"), "{out}");
    assert!(!out.contains('\x1b'), "no escape codes off a terminal");
}

/// The README's first steps, pasted as they are into a shell against `make run`'s server
/// (its port changed to the test server's).
#[test]
fn the_readme_first_steps_run_when_pasted() {
    let srv = Server::start(Ed::Module, &[]);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("<!-- first-steps").expect("marker in README.md");
    let block = &readme[start..];
    let block = &block[block.find("```sh").unwrap() + 5..];
    let block = &block[..block.find("```").unwrap()];
    let script = block.replace("6399", &srv.port.to_string());
    let bin = Path::new(env!("CARGO_BIN_EXE_rmq")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let home = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("HOME", home.path())
        .env_remove("REDIS_URL")
        .env_remove("RMQ_SPOOL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}\nstdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    let mut c = srv.sync_conn();
    let acked: i64 = redis::cmd("RMQ.STATS").arg("jobs").query::<std::collections::HashMap<String, i64>>(&mut c).unwrap()["acked"];
    assert!(acked >= 1, "the README's ACK acked nothing:\n{}", text(&o.stdout));
}
