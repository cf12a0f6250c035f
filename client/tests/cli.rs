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
        .args(["--connect-timeout", "300", "--timeout", "3000"])
        .args(args)
        .stdin(Stdio::null());
    c
}

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

    // Redis down: spooled, said on stderr, exit 0, id on stdout.
    let o = run(rmq(&url, &spool, &["push", "orders", "first", "--tag", "new", "--header", "trace=abc", "--id", "o-1"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "o-1");
    assert!(text(&o.stderr).contains("spooled"), "{}", text(&o.stderr));
    // Body from stdin.
    let mut c = rmq(&url, &spool, &["--json", "push", "orders", "-"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"second\nline").unwrap();
    wait_child(&mut child, Duration::from_secs(30));
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
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
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("drain stopped"), "{}", text(&o.stderr));

    // A message that neither Redis nor the spool can take: non-zero exit.
    let bad_spool = tmp.path().join("file");
    std::fs::write(&bad_spool, b"x").unwrap();
    let o = run(rmq(&url, &bad_spool.join("sub"), &["push", "orders", "lost"]));
    assert!(!o.status.success());
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
    run(rmq(&url, &spool, &["push", "other", "x"]));
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
