//! `rmq archive` end to end, on a real redis-server and real databases (SQLite, PostgreSQL
//! and MariaDB, each started by the test): the archive against the queue's history, search,
//! replay, retention, queue discovery, and the Lua edition.

mod archive_support;
mod common;

use std::time::Duration;

use archive_support::*;
use common::Ed;
use redis::Value;

/// Polls until every queue's log is on (the archiver turns it on for the queues it follows).
fn wait_log_on(c: &mut redis::Connection, ed: Ed, queues: &[&str], archiver: &mut Archiver) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for q in queues {
        loop {
            archiver.assert_alive();
            let v: Vec<String> = rmq_cmd(ed, "config", Some(q), &[b"GET", b"log"]).query(c).unwrap();
            if v[1] == "1" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the archiver did not turn the log of {q} on:\n{}", archiver.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn seed() -> u64 {
    std::env::var("RMQ_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261202)
}

fn random_workload_matches_the_queue_history(b: Backend) {
    let redis = redis(Ed::Module);
    let adb = ArchiveDb::start(b);
    let queues = ["wl-a", "wl-b"];
    let mut arch = Archiver::start(&redis.url(), &adb.url, &["--queues", "wl-a,wl-b", "--consumer", "c1", "--batch", "300"]);
    let mut c = redis.sync_conn();
    wait_log_on(&mut c, Ed::Module, &queues, &mut arch);
    let mut w = Workload::new(Ed::Module, &queues, seed());
    w.configure(&mut c);
    w.run(&mut c, 700);
    w.settle(&mut c);
    let snap = w.snapshot(&mut c);
    rt().block_on(async {
        caught_up(&redis.url(), &queues, &mut [&mut arch], Duration::from_secs(60)).await;
        let db = adb.db().await;
        compare(&db, &w, &snap).await;
    });
    // The events table holds the whole story of a message: at least its push.
    let out = run_ok(rmq_archive(&redis.url(), &["status", "--db", &adb.url]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wl-a") && text.contains("wl-b"), "{text}");
}

fn search_replay_and_retention(b: Backend) {
    let redis = redis(Ed::Module);
    let url = redis.url();
    let adb = ArchiveDb::start(b);
    // migrate creates the tables; running it again changes nothing.
    let out = run_ok(rmq_archive(&url, &["migrate", "--db", &adb.url]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied schema version 1"));
    let out = run_ok(rmq_archive(&url, &["migrate", "--db", &adb.url]));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("applied"));

    let mut arch = Archiver::start(&url, &adb.url, &["--queues", "shop", "--consumer", "c1"]);
    let mut c = redis.sync_conn();
    wait_log_on(&mut c, Ed::Module, &["shop"], &mut arch);
    let push = |c: &mut redis::Connection, args: &[&[u8]]| -> String { rmq_cmd(Ed::Module, "push", Some("shop"), args).query(c).unwrap() };
    push(&mut c, &[b"hello world", b"ID", b"order-1", b"TAG", b"created", b"KEY", b"cust-1", b"HEADER", b"trace", b"t1"]);
    push(&mut c, &[b"goodbye", b"ID", b"order-2", b"TAG", b"paid", b"KEY", b"cust-2"]);
    std::thread::sleep(Duration::from_millis(30));
    let since = rmq_archive::when::now_ms();
    std::thread::sleep(Duration::from_millis(30));
    push(&mut c, &[b"\x00\xffbinary", b"ID", b"order-3", b"TAG", b"created", b"KEY", b"cust-1"]);
    // order-1 is acked, order-2 fails with a reason, order-3 stays ready.
    for (want, outcome) in [("order-1", "ack"), ("order-2", "fail")] {
        let v: Value = rmq_cmd(Ed::Module, "fetch", Some("shop"), &[b"CONSUMER", b"billing"]).query(&mut c).unwrap();
        let Value::Array(items) = v else { panic!("fetch gave {v:?}") };
        let f = fields(items.into_iter().next().unwrap());
        assert_eq!(text(&f["id"]), want);
        let receipt = bytes(&f["receipt"]);
        if outcome == "ack" {
            let _: i64 = rmq_cmd(Ed::Module, "ack", Some("shop"), &[&receipt]).query(&mut c).unwrap();
        } else {
            let _: i64 =
                rmq_cmd(Ed::Module, "nack", Some("shop"), &[&receipt, b"FAIL", b"REASON", b"card declined"]).query(&mut c).unwrap();
        }
    }
    rt().block_on(caught_up(&url, &["shop"], &mut [&mut arch], Duration::from_secs(60)));

    let search = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["search", "--db", &adb.url, "--queue", "shop"];
        a.extend_from_slice(args);
        let out = run_ok(rmq_archive(&url, &a));
        String::from_utf8_lossy(&out.stdout).lines().map(|s| s.to_string()).collect()
    };
    let ids = |lines: &[String]| -> Vec<String> { lines.iter().map(|l| l.split_whitespace().nth(1).unwrap().to_string()).collect() };
    assert_eq!(ids(&search(&[])), ["order-1", "order-2", "order-3"]);
    let one = search(&["--id", "order-1"]);
    assert_eq!(ids(&one), ["order-1"]);
    assert!(one[0].contains("acked") && one[0].contains("consumer=billing") && one[0].contains("trace=t1"), "{}", one[0]);
    assert_eq!(ids(&search(&["--key", "cust-1"])), ["order-1", "order-3"]);
    assert_eq!(ids(&search(&["--tag", "paid"])), ["order-2"]);
    assert_eq!(ids(&search(&["--status", "failed,acked"])), ["order-1", "order-2"]);
    assert_eq!(ids(&search(&["--status", "ready"])), ["order-3"]);
    assert_eq!(ids(&search(&["--body-contains", "world"])), ["order-1"]);
    assert!(search(&["--body-contains", "WORLD"]).is_empty(), "body search is case-sensitive");
    assert_eq!(ids(&search(&["--since", &since.to_string()])), ["order-3"]);
    assert_eq!(ids(&search(&["--until", &since.to_string()])), ["order-1", "order-2"]);
    assert_eq!(ids(&search(&["--limit", "1"])), ["order-1"]);
    assert_eq!(ids(&search(&["--from-offset", "2", "--to-offset", "2"])), ["order-2"]);
    let failed = search(&["--status", "failed"]);
    assert!(failed[0].contains("error=\"card declined\""), "{}", failed[0]);
    // JSON: one object per line, a binary body as base64.
    let json: Vec<serde_json::Value> = search(&["--json", "--key", "cust-1"]).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(json[0]["body"], "hello world");
    assert_eq!(json[0]["body_encoding"], "text");
    assert_eq!(json[0]["headers"]["trace"], "t1");
    assert_eq!(json[0]["status"], "acked");
    assert_eq!(json[0]["attempts"], 1);
    assert_eq!(json[1]["body_encoding"], "base64");
    assert_eq!(json[1]["body"], "AP9iaW5hcnk=");
    let bad = rmq_archive(&url, &["search", "--db", &adb.url, "--queue", "shop", "--status", "lost"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--status \"lost\" is not one of"));

    // Replay: a dry run pushes nothing.
    let stat = |c: &mut redis::Connection, q: &str, name: &str| -> i64 {
        let f = fields(rmq_cmd(Ed::Module, "stats", Some(q), &[]).query(c).unwrap());
        text(&f[name]).parse().unwrap()
    };
    let replay = |args: &[&str]| -> String {
        let mut a = vec!["replay", "--db", &adb.url, "--queue", "shop"];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&run_ok(rmq_archive(&url, &a)).stdout).into_owned()
    };
    let out = replay(&["--status", "failed", "--to", "shop-retry", "--dry-run"]);
    assert!(out.contains("would push: 2  order-2"), "{out}");
    assert_eq!(stat(&mut c, "shop-retry", "pushed"), 0);
    // For real: the copy carries the message and says where it came from.
    let out = replay(&["--status", "failed", "--to", "shop-retry"]);
    assert!(out.contains("pushed 1 messages to shop-retry"), "{out}");
    let v: Value = rmq_cmd(Ed::Module, "peek", Some("shop-retry"), &[]).query(&mut c).unwrap();
    let Value::Array(items) = v else { panic!() };
    assert_eq!(items.len(), 1);
    let f = fields(items.into_iter().next().unwrap());
    assert_eq!(bytes(&f["body"]), b"goodbye");
    assert_eq!(text(&f["tag"]), "paid");
    assert_eq!(text(&f["key"]), "cust-2");
    let h = fields(f["headers"].clone());
    assert_eq!(text(&h["replay-of"]), "order-2");
    assert_eq!(text(&h["replay-of-queue"]), "shop");
    assert_eq!(text(&h["replay-of-offset"]), "2");
    // Twice: nothing pushed again.
    let out = replay(&["--status", "failed", "--to", "shop-retry"]);
    assert!(out.contains("pushed 0 messages") && out.contains("1 were already there"), "{out}");
    assert_eq!(stat(&mut c, "shop-retry", "pushed"), 1);
    // An offset range, in offset order, binary body intact; and back into the same queue.
    let out = replay(&["--from-offset", "1", "--to-offset", "3", "--to", "shop-copy"]);
    assert!(out.contains("pushed 3 messages to shop-copy"), "{out}");
    let v: Value = rmq_cmd(Ed::Module, "peek", Some("shop-copy"), &[b"COUNT", b"10"]).query(&mut c).unwrap();
    let Value::Array(items) = v else { panic!() };
    let bodies: Vec<Vec<u8>> = items.into_iter().map(|m| bytes(&fields(m)["body"])).collect();
    assert_eq!(bodies, [b"hello world".to_vec(), b"goodbye".to_vec(), b"\x00\xffbinary".to_vec()]);
    let out = replay(&["--id", "order-3"]);
    assert!(out.contains("pushed 1 messages to shop"), "{out}");
    assert_eq!(stat(&mut c, "shop", "ready"), 2);
    let json = replay(&["--id", "order-3", "--json"]);
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["already_there"], 1);

    // Retention: rows untouched for longer than --retain go, with their events; newer stay.
    arch.stop();
    std::thread::sleep(Duration::from_millis(1200));
    let mut arch = Archiver::start(&url, &adb.url, &["--queues", "shop", "--consumer", "c1", "--retain", "1s"]);
    rt().block_on(async {
        caught_up(&url, &["shop"], &mut [&mut arch], Duration::from_secs(60)).await;
        let db = adb.db().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = rows(&db, "shop").await;
            let old: Vec<&str> = rows.iter().filter(|m| m.id.starts_with("order-")).map(|m| m.id.as_str()).collect();
            if old.is_empty() {
                // The replayed copy pushed a moment ago is younger than a second... or gone by
                // now too; the events of the deleted rows went with them.
                let (n,): (i64,) = rmq_archive::sqlx::query_as(rmq_archive::sqlx::AssertSqlSafe(
                    "SELECT COUNT(*) FROM redismq_message_event WHERE message_id LIKE 'order-%'".to_string(),
                ))
                .fetch_one(&db.pool)
                .await
                .unwrap();
                assert_eq!(n, 0);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "retention did not delete {old:?}:\n{}", arch.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

on_every_backend!(random_workload_matches_the_queue_history, search_replay_and_retention);

/// Queue discovery does not depend on the database: SQLite only.
#[test]
fn new_queues_are_found_and_only_matching_logs_turned_on() {
    let redis = redis(Ed::Module);
    let url = redis.url();
    let adb = ArchiveDb::start(Backend::Sqlite);
    let mut c = redis.sync_conn();
    let push = |c: &mut redis::Connection, q: &str, body: &str| -> String {
        rmq_cmd(Ed::Module, "push", Some(q), &[body.as_bytes()]).query(c).unwrap()
    };
    push(&mut c, "pay-eu", "before");
    push(&mut c, "other", "x");
    let mut arch = Archiver::start(&url, &adb.url, &["--queues", "pay*,orders", "--consumer", "c1"]);
    wait_log_on(&mut c, Ed::Module, &["pay-eu", "orders"], &mut arch);
    // A queue that appears later is found; its first message, pushed while its log was
    // still off, is not in the log.
    push(&mut c, "pay-us", "first");
    wait_log_on(&mut c, Ed::Module, &["pay-us"], &mut arch);
    let second = push(&mut c, "pay-us", "second");
    let kept = push(&mut c, "pay-eu", "after");
    push(&mut c, "orders", "o");
    rt().block_on(async {
        caught_up(&url, &["pay-eu", "pay-us", "orders"], &mut [&mut arch], Duration::from_secs(60)).await;
        let db = adb.db().await;
        let ids = |rows: Vec<rmq_archive::store::Message>| rows.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(rows(&db, "pay-us").await), [second]);
        assert_eq!(ids(rows(&db, "pay-eu").await), [kept]);
        assert_eq!(rows(&db, "orders").await.len(), 1);
        assert!(rows(&db, "other").await.is_empty());
    });
    let v: Vec<String> = rmq_cmd(Ed::Module, "config", Some("other"), &[b"GET", b"log"]).query(&mut c).unwrap();
    assert_eq!(v[1], "0", "a queue that matches no pattern keeps its log off");
    arch.stop();

    // Without --queues: every queue whose log is on, and no log is turned on.
    let _: Value = rmq_cmd(Ed::Module, "config", Some("logged"), &[b"SET", b"log", b"1"]).query(&mut c).unwrap();
    let logged = push(&mut c, "logged", "l");
    push(&mut c, "other", "y");
    let mut arch = Archiver::start(&url, &adb.url, &["--consumer", "c2"]);
    rt().block_on(async {
        caught_up(&url, &["logged"], &mut [&mut arch], Duration::from_secs(60)).await;
        let db = adb.db().await;
        assert_eq!(rows(&db, "logged").await.into_iter().map(|m| m.id).collect::<Vec<_>>(), [logged]);
    });
    let v: Vec<String> = rmq_cmd(Ed::Module, "config", Some("other"), &[b"GET", b"log"]).query(&mut c).unwrap();
    assert_eq!(v[1], "0");
    let status = run_ok(rmq_archive(&url, &["--json", "status", "--db", &adb.url]));
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let queues: Vec<&str> = st.as_array().unwrap().iter().map(|q| q["queue"].as_str().unwrap()).collect();
    assert_eq!(queues, ["logged", "orders", "pay-eu", "pay-us"]);
}

/// The Lua edition writes the same log: the same workload, archived the same (SQLite).
#[test]
fn lua_edition_is_archived_the_same() {
    let redis = redis(Ed::Lua);
    let adb = ArchiveDb::start(Backend::Sqlite);
    let queues = ["lua-a", "lua-b"];
    let mut arch = Archiver::start(&redis.url(), &adb.url, &["--queues", "lua-a,lua-b", "--consumer", "c1", "--batch", "200"]);
    let mut c = redis.sync_conn();
    wait_log_on(&mut c, Ed::Lua, &queues, &mut arch);
    let mut w = Workload::new(Ed::Lua, &queues, seed() + 1);
    w.configure(&mut c);
    w.run(&mut c, 500);
    w.settle(&mut c);
    let snap = w.snapshot(&mut c);
    rt().block_on(async {
        caught_up(&redis.url(), &queues, &mut [&mut arch], Duration::from_secs(60)).await;
        let db = adb.db().await;
        compare(&db, &w, &snap).await;
    });
}
