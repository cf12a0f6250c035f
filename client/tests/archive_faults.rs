//! The archive when things go wrong, on every backend: archivers killed with -9 in the middle
//! of batches, the database away under load, the log trimmed past the archiver, Redis
//! restarted without its data.

mod archive_support;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use archive_support::*;
use common::Ed;
use rand::{Rng, SeedableRng};
use redis::Value;

fn wait_log_on(c: &mut redis::Connection, queues: &[&str], archivers: &mut [&mut Archiver]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for q in queues {
        loop {
            for a in archivers.iter_mut() {
                a.assert_alive();
            }
            let v: Vec<String> = rmq_cmd(Ed::Module, "config", Some(q), &[b"GET", b"log"]).query(c).unwrap();
            if v[1] == "1" {
                break;
            }
            assert!(Instant::now() < deadline, "the log of {q} was not turned on");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The workload in a thread of its own, while the test does harm to the archiver.
fn workload_in_background(url: String, queues: &'static [&'static str], seed: u64, ops: usize) -> std::thread::JoinHandle<Workload> {
    std::thread::spawn(move || {
        let c = redis::Client::open(url).unwrap();
        let mut con = c.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        let mut w = Workload::new(Ed::Module, queues, seed);
        w.configure(&mut con);
        w.run(&mut con, ops);
        w.settle(&mut con);
        w
    })
}

fn finish(redis_url: &str, adb: &ArchiveDb, w: Workload, queues: &[&str], archivers: &mut [&mut Archiver]) {
    let c = redis::Client::open(redis_url).unwrap();
    let mut con = c.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
    let snap = w.snapshot(&mut con);
    rt().block_on(async {
        caught_up(redis_url, queues, archivers, Duration::from_secs(90)).await;
        let db = adb.db().await;
        compare(&db, &w, &snap).await;
    });
}

/// Two archivers share the queues; each is killed with -9 again and again (mid-batch, since
/// the workload never stops) and started again under its name: every message is there once,
/// with its final state.
fn killed_archivers_lose_nothing(b: Backend) {
    const QUEUES: &[&str] = &["kill-a", "kill-b"];
    let redis = redis(Ed::Module);
    let url = redis.url();
    let adb = ArchiveDb::start(b);
    let args = |name: &'static str| ["--queues", "kill-a,kill-b", "--consumer", name, "--batch", "50", "--batch-time", "20ms"];
    let mut a1 = Archiver::start(&url, &adb.url, &args("c1"));
    let mut a2 = Archiver::start(&url, &adb.url, &args("c2"));
    let mut c = redis.sync_conn();
    wait_log_on(&mut c, QUEUES, &mut [&mut a1, &mut a2]);
    let work = workload_in_background(url.clone(), QUEUES, 7, 1200);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let mut kills = 0;
    while !work.is_finished() || kills < 6 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(80..300)));
        let a = if kills % 2 == 0 { &mut a1 } else { &mut a2 };
        a.assert_alive();
        a.kill9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..100)));
        a.restart();
        if kills > 40 {
            break;
        }
    }
    let w = work.join().unwrap();
    assert!(kills >= 6);
    finish(&url, &adb, w, QUEUES, &mut [&mut a1, &mut a2]);
    // Some kill came between a read and its save: a restarted archiver saved those first.
    let logs = a1.log() + &a2.log();
    assert!(logs.contains("read before it stopped"), "no kill fell in the middle of a batch:\n{logs}");
}

/// The database goes away under load: the archiver stops reading, retries, and once the
/// database is back it catches up with everything the log still holds.
fn database_away_under_load_then_caught_up(b: Backend) {
    const QUEUES: &[&str] = &["db-a"];
    let redis = redis(Ed::Module);
    let url = redis.url();
    let mut adb = ArchiveDb::start(b);
    let mut arch = Archiver::start(&url, &adb.url, &["--queues", "db-a", "--consumer", "c1", "--batch", "100"]);
    let mut c = redis.sync_conn();
    wait_log_on(&mut c, QUEUES, &mut [&mut arch]);
    let work = workload_in_background(url.clone(), QUEUES, 21, 900);
    std::thread::sleep(Duration::from_millis(400));
    adb.outage_begin();
    // While the database is away, entries wait in the log (the group's pending + lag grow),
    // and a write that cannot get a connection within 3 s fails and is tried again, which
    // the archiver says. The outage lasts until both are seen (at most 15 s).
    let away = Instant::now();
    let (waited, said) = rt().block_on(async {
        let client: Arc<dyn rmq_archive::backend::Backend> = Arc::new(common::client_for(&url, Ed::Module));
        let src = rmq_archive::source::Source::new(client, "rmq-archive", "t");
        let (mut waited, mut said) = (false, b == Backend::Sqlite);
        while !(waited && said) && away.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            arch.assert_alive();
            let g = src.group_info("db-a").await.unwrap().unwrap();
            waited |= g.lag.unwrap_or(0) + g.pending > 0;
            said |= arch.log().contains("tried again");
        }
        (waited, said)
    });
    assert!(waited, "nothing waited while the database was away");
    assert!(said, "the archiver said nothing of the outage ({:?}):\n{}", away.elapsed(), arch.log());
    // Longer than the archiver's wait for a connection, so that its writes failed for real.
    std::thread::sleep(Duration::from_millis(4500).saturating_sub(away.elapsed()));
    adb.outage_end();
    let w = work.join().unwrap();
    finish(&url, &adb, w, QUEUES, &mut [&mut arch]);
}

fn status_of(url: &str, db: &str, queue: &str) -> serde_json::Value {
    let out = run_ok(rmq_archive(url, &["--json", "status", "--db", db]));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    st.as_array().unwrap().iter().find(|q| q["queue"] == queue).cloned().unwrap_or_else(|| panic!("no status for {queue}: {st}"))
}

/// The log trimmed past the archiver: entries it never read (while it was stopped), and
/// entries it had read but not saved (the database was away, then it was killed). Both are
/// counted, with their number, and shown by status; the rest is archived.
fn log_trimmed_past_the_archiver_is_reported_with_its_size(b: Backend) {
    let redis = redis(Ed::Module);
    let url = redis.url();
    let mut adb = ArchiveDb::start(b);
    let mut arch = Archiver::start(&url, &adb.url, &["--queues", "trim", "--consumer", "c1"]);
    let mut c = redis.sync_conn();
    wait_log_on(&mut c, &["trim"], &mut [&mut arch]);
    let push = |c: &mut redis::Connection, n: usize| {
        for i in 0..n {
            let _: String = rmq_cmd(Ed::Module, "push", Some("trim"), &[format!("m{i}").as_bytes()]).query(c).unwrap();
        }
    };
    push(&mut c, 20);
    rt().block_on(caught_up(&url, &["trim"], &mut [&mut arch], Duration::from_secs(60)));
    arch.stop();
    // Stopped: 50 pushes into a log of 10; 40 are gone before the archiver reads them.
    let _: Value = rmq_cmd(Ed::Module, "config", Some("trim"), &[b"SET", b"log-maxlen", b"10"]).query(&mut c).unwrap();
    push(&mut c, 50);
    arch.restart();
    rt().block_on(caught_up(&url, &["trim"], &mut [&mut arch], Duration::from_secs(60)));
    let st = status_of(&url, &adb.url, "trim");
    assert_eq!(st["gap_entries"], 40, "{st}");
    assert_eq!(st["gaps"], 1, "{st}");
    assert_eq!(st["rows"], 30, "{st}");
    assert!(st["last_warning"].as_str().unwrap().contains("40 log entries were trimmed"), "{st}");
    let human = String::from_utf8_lossy(&run_ok(rmq_archive(&url, &["status", "--db", &adb.url])).stdout).into_owned();
    assert!(human.contains("trim") && human.contains("40 log entries were trimmed"), "{human}");

    // The database away: the archiver reads 5 entries and cannot save them; 20 more pushes
    // trim the log past them. Killed and started again, it finds 15 entries lost in all.
    adb.outage_begin();
    push(&mut c, 5);
    rt().block_on(async {
        let client: Arc<dyn rmq_archive::backend::Backend> = Arc::new(common::client_for(&url, Ed::Module));
        let src = rmq_archive::source::Source::new(client, "rmq-archive", "t");
        let deadline = Instant::now() + Duration::from_secs(30);
        while src.group_info("trim").await.unwrap().unwrap().pending < 5 {
            assert!(Instant::now() < deadline, "the archiver did not read the 5 entries:\n{}", arch.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    push(&mut c, 20);
    arch.kill9();
    adb.outage_end();
    arch.restart();
    rt().block_on(caught_up(&url, &["trim"], &mut [&mut arch], Duration::from_secs(60)));
    let st = status_of(&url, &adb.url, "trim");
    assert_eq!(st["gap_entries"], 40 + 15, "{st}");
    assert_eq!(st["rows"], 30 + 10, "{st}");
    rt().block_on(async {
        let db = adb.db().await;
        let offsets: Vec<i64> = rows(&db, "trim").await.iter().map(|m| m.offset).collect();
        let want: Vec<i64> = (1..=20).chain(61..=70).chain(86..=95).collect();
        assert_eq!(offsets, want);
        // Each gap is a row of its own, and no gap marker is left in Redis.
        let gaps: Vec<(i64,)> = rmq_archive::sqlx::query_as(rmq_archive::sqlx::AssertSqlSafe(
            "SELECT entries FROM redismq_archive_gap WHERE queue = 'trim'".to_string(),
        ))
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(gaps.iter().map(|g| g.0).sum::<i64>(), 55, "{gaps:?}");
        let client: Arc<dyn rmq_archive::backend::Backend> = Arc::new(common::client_for(&url, Ed::Module));
        let src = rmq_archive::source::Source::new(client, "rmq-archive", "t");
        assert_eq!(src.markers("trim").await.unwrap(), vec![]);
    });
}

/// Redis restarts without its data: offsets start again at 1 under new messages. The
/// archiver says so (rewinds, conflicts), keeps the earlier rows aside, and archives the new
/// messages in their place.
fn redis_losing_its_data_is_reported(b: Backend) {
    let mut redis = redis(Ed::Module);
    let url = redis.url();
    let adb = ArchiveDb::start(b);
    let mut arch = Archiver::start(&url, &adb.url, &["--queues", "lost", "--consumer", "c1"]);
    let mut c = redis.sync_conn();
    wait_log_on(&mut c, &["lost"], &mut [&mut arch]);
    for i in 1..=5 {
        let _: String = rmq_cmd(Ed::Module, "push", Some("lost"), &[format!("old {i}").as_bytes(), b"ID", format!("old-{i}").as_bytes()])
            .query(&mut c)
            .unwrap();
    }
    rt().block_on(caught_up(&url, &["lost"], &mut [&mut arch], Duration::from_secs(60)));
    redis.kill9();
    redis.restart();
    let mut c = redis.sync_conn();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("rmq.guard-interval-ms").arg("100").query(&mut c).unwrap();
    wait_log_on(&mut c, &["lost"], &mut [&mut arch]);
    for i in 1..=3 {
        let _: String = rmq_cmd(Ed::Module, "push", Some("lost"), &[format!("new {i}").as_bytes(), b"ID", format!("new-{i}").as_bytes()])
            .query(&mut c)
            .unwrap();
    }
    rt().block_on(caught_up(&url, &["lost"], &mut [&mut arch], Duration::from_secs(60)));
    let st = status_of(&url, &adb.url, "lost");
    assert_eq!(st["rewinds"], 1, "{st}");
    assert_eq!(st["conflicts"], 3, "{st}");
    assert_eq!(st["rows"], 5, "{st}");
    rt().block_on(async {
        let db = adb.db().await;
        let ids: Vec<String> = rows(&db, "lost").await.into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["new-1", "new-2", "new-3", "old-4", "old-5"]);
        let replaced: Vec<(String,)> = rmq_archive::sqlx::query_as(rmq_archive::sqlx::AssertSqlSafe(
            "SELECT id FROM redismq_message_replaced WHERE queue = 'lost' ORDER BY id".to_string(),
        ))
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let replaced: Vec<String> = replaced.into_iter().map(|r| r.0).collect();
        assert_eq!(replaced, ["old-1", "old-2", "old-3"]);
    });
    assert!(arch.log().contains("offsets went back"), "{}", arch.log());
}

on_every_backend!(
    killed_archivers_lose_nothing,
    database_away_under_load_then_caught_up,
    log_trimmed_past_the_archiver_is_reported_with_its_size,
    redis_losing_its_data_is_reported,
);
