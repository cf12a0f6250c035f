//! The `rmq` CLI against a real Redis Cluster, both editions, given the URL of one replica:
//! commands reach each queue's master, `queues` and `stats` cover every master, `push
//! --confirm` waits for a replica, and partitioned queues work end to end.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{editions, queues_per_master, start_cluster};

fn rmq(url: &str, spool: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rmq"));
    c.env("REDIS_URL", url)
        .env("RMQ_SPOOL", spool)
        .env("RMQ_LOG", "error")
        .args(["--connect-timeout", "1000", "--command-timeout", "5000"])
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs to the end, within a time limit.
fn run(mut c: Command) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("rmq did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Runs and expects exit 0; gives stdout.
fn ok(c: Command) -> String {
    let o = run(c);
    assert!(o.status.success(), "exit {:?}: {}{}", o.status.code(), text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn the_cli_speaks_cluster_from_any_node_with_partitioned_queues() {
    for ed in editions() {
        let mut c = start_cluster(ed);
        let masters = c.master_ports();
        let replica = c.replicas_of(masters[0])[0];
        let url = format!("redis://127.0.0.1:{replica}/");
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let per_master = queues_per_master(&mut c, "cli", 1);
        let queues: Vec<String> = per_master.iter().map(|(_, q)| q[0].clone()).collect();

        for q in &queues {
            ok(rmq(&url, &spool, &["push", q, "hello", "--id", &format!("{q}-1")]));
        }
        // queues and stats cover every master.
        let listed = json(&ok(rmq(&url, &spool, &["--json", "queues"])));
        let stats = json(&ok(rmq(&url, &spool, &["--json", "stats"])));
        for q in &queues {
            assert!(listed.as_array().unwrap().iter().any(|v| v == q.as_str()), "{ed:?}: {q} not in {listed}");
            assert_eq!(stats[q.as_str()]["ready"], 1, "{ed:?}: {stats}");
        }
        // fetch and ack on each master.
        for q in &queues {
            let m = json(&ok(rmq(&url, &spool, &["--json", "fetch", q])));
            let receipt = m[0]["receipt"].as_str().unwrap().to_string();
            assert_eq!(ok(rmq(&url, &spool, &["ack", q, &receipt])).trim(), "1");
        }
        // push --confirm: a replica has it.
        let out = json(&ok(rmq(&url, &spool, &["--json", "push", &queues[0], "safe", "--confirm"])));
        assert_eq!(out["spooled"], false, "{ed:?}: {out}");

        // A partitioned queue, ordered, spread over the three masters.
        let created = ok(rmq(&url, &spool, &["partition", "create", "orders", "6", "--ordered"]));
        assert!(created.contains("orders: 6 partitions, ordered") && created.contains("masters: 2 on"), "{ed:?}: {created}");
        let shown = json(&ok(rmq(&url, &spool, &["--json", "partition", "show", "orders"])));
        assert_eq!(shown["partitions"].as_array().unwrap().len(), 6);
        assert!(shown["masters"].as_object().unwrap().values().all(|n| n == 2), "{ed:?}: {shown}");
        assert!(ok(rmq(&url, &spool, &["partition", "list"])).contains("orders  6 partitions, ordered"));

        let keys = ["alice", "bob", "carol"];
        for seq in 0..4 {
            for k in keys {
                ok(rmq(&url, &spool, &["push", "orders", &format!("{k}:{seq}"), "--key", k]));
            }
        }
        let st = json(&ok(rmq(&url, &spool, &["--json", "stats", "orders"])));
        assert_eq!(st["total"]["ready"], 12, "{ed:?}: {st}");
        assert_eq!(st["partitions"].as_object().unwrap().len(), 6, "{ed:?}: {st}");
        let peeked = json(&ok(rmq(&url, &spool, &["--json", "peek", "orders"])));
        assert_eq!(peeked.as_array().unwrap().len(), 12);
        let refused = run(rmq(&url, &spool, &["log", "orders"]));
        assert!(!refused.status.success() && text(&refused.stderr).contains("partitioned queue"), "{}", text(&refused.stderr));

        // rmq work on the logical name handles every partition, each key in order.
        let out_file = dir.path().join("handled.txt");
        // One write per message (appends of one small write do not interleave).
        let script = format!("printf '%s\\n' \"$(cat)\" >> {}", out_file.display());
        let mut work = rmq(&url, &spool, &["work", "orders", "--concurrency", "3", "--", "sh", "-c", &script]);
        work.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = work.spawn().unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let st = json(&ok(rmq(&url, &spool, &["--json", "stats", "orders"])));
            if st["total"]["acked"] == 12 {
                break;
            }
            assert!(Instant::now() < until, "{ed:?}: rmq work did not handle everything: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let _ = child.wait();
        let handled = std::fs::read_to_string(&out_file).unwrap();
        for k in keys {
            let seqs: Vec<&str> = handled.lines().filter_map(|l| l.strip_prefix(&format!("{k}:"))).collect();
            assert_eq!(seqs, vec!["0", "1", "2", "3"], "{ed:?}: {k} in order:\n{handled}");
        }
        let rec = json(&ok(rmq(&url, &spool, &["--json", "recover", "orders"])));
        assert_eq!(rec["partitions"].as_object().unwrap().len(), 6, "{ed:?}: {rec}");
    }
}
