//! The worker against a real redis-server.
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rmq_client::{Fetch, HandlerError, Push, Worker, WorkerConfig};
use tokio::sync::oneshot;

fn wcfg(lock_ms: u64) -> WorkerConfig {
    WorkerConfig {
        lock: Duration::from_millis(lock_ms),
        concurrency: 4,
        grace: Duration::from_secs(5),
        block: Duration::from_millis(300),
        ..Default::default()
    }
}

/// A stop signal that a test fires.
fn stopper() -> (oneshot::Sender<()>, impl std::future::Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    bounded(limit, what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_by_tag_ack_retry_error_drop() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        c.config_set("jobs", &[("backoff-ms", "0")]).await.unwrap();
        for (tag, body) in [("ok", "1"), ("flaky", "2"), ("bad", "3"), ("", "4"), ("nobody", "5")] {
            c.push(&Push::new("jobs", body).tag(tag).id(format!("m{body}"))).await.unwrap();
        }
        let flaky_runs = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop) = stopper();
        let fr = flaky_runs.clone();
        let (d1, d2, d3, d4) = (done.clone(), done.clone(), done.clone(), done.clone());
        let w = Worker::new(c.clone(), "jobs", wcfg(5000))
            .handle("ok", move |_m| {
                let d = d1.clone();
                async move {
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .handle("flaky", move |m| {
                let fr = fr.clone();
                let d = d2.clone();
                async move {
                    let n = fr.fetch_add(1, Ordering::SeqCst);
                    d.fetch_add(1, Ordering::SeqCst);
                    if n == 0 {
                        assert_eq!(m.attempt, 1);
                        Err(HandlerError::retry("try later"))
                    } else {
                        assert_eq!(m.attempt, 2);
                        Ok(())
                    }
                }
            })
            .handle("bad", move |_m| {
                let d = d3.clone();
                async move {
                    d.fetch_add(1, Ordering::SeqCst);
                    // Any std error converts, via `?`, into an error: NACK ERROR with its text.
                    let n: u32 = "x".parse()?;
                    let _ = n;
                    Ok(())
                }
            })
            .handle("", move |_m| {
                let d = d4.clone();
                async move {
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            });
        let h = tokio::spawn(w.run_until(stop));
        let d = done.clone();
        wait_for("handlers", Duration::from_secs(10), || d.load(Ordering::SeqCst) >= 5).await;
        // The message without a handler goes to errors: wait for the worker to move it.
        bounded(Duration::from_secs(10), "no-handler message in errors", async {
            while c.stats("jobs").await.unwrap()["errors"] < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop_tx.send(()).unwrap();
        let report = bounded(Duration::from_secs(10), "worker stop", h).await.unwrap().unwrap();
        assert_eq!((report.acked, report.retried, report.errored), (3, 1, 2), "{ed:?}: {report:?}");
        let st = c.stats("jobs").await.unwrap();
        assert_eq!((st["ready"], st["inflight"], st["errors"], st["acked"]), (0, 0, 2, 3), "{st:?}");
        let errs = c.peek("jobs", Some("ERRORS"), None, None).await.unwrap();
        let by_id: std::collections::HashMap<_, _> = errs.iter().map(|m| (m.id.as_str(), m.error.as_str())).collect();
        assert_eq!(by_id["m3"], "invalid digit found in string");
        assert_eq!(by_id["m5"], "no handler for tag 'nobody'");

        // failed_is_error, and no_handler_is_error off (drop).
        c.push(&Push::new("jobs2", "a").tag("flaky").id("f")).await.unwrap();
        c.push(&Push::new("jobs2", "b").tag("nobody").id("n")).await.unwrap();
        let (stop_tx, stop) = stopper();
        let cfg = WorkerConfig { failed_is_error: true, no_handler_is_error: false, ..wcfg(5000) };
        let w = Worker::new(c.clone(), "jobs2", cfg).handle("flaky", |_m| async { Err(HandlerError::retry("nope")) });
        let h = tokio::spawn(w.run_until(stop));
        bounded(Duration::from_secs(10), "jobs2 handled", async {
            loop {
                let st = c.stats("jobs2").await.unwrap();
                if st["errors"] == 1 && st["acked"] == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop_tx.send(()).unwrap();
        let report = bounded(Duration::from_secs(10), "worker stop", h).await.unwrap().unwrap();
        assert_eq!((report.errored, report.dropped, report.retried), (1, 1, 0), "{report:?}");
        let errs = c.peek("jobs2", Some("ERRORS"), None, None).await.unwrap();
        assert_eq!((errs[0].id.as_str(), errs[0].error.as_str()), ("f", "nope"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_handler_sends_the_message_to_errors_with_the_panic_text() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        c.push(&Push::new("p", "boom").id("p1")).await.unwrap();
        let (stop_tx, stop) = stopper();
        let w = Worker::new(c.clone(), "p", wcfg(5000)).handle("", |m| async move {
            if m.body == b"boom" {
                panic!("handler exploded on {}", m.id);
            }
            Ok(())
        });
        let h = tokio::spawn(w.run_until(stop));
        bounded(Duration::from_secs(10), "message in errors", async {
            while c.stats("p").await.unwrap()["errors"] != 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop_tx.send(()).unwrap();
        let report = bounded(Duration::from_secs(10), "stop", h).await.unwrap().unwrap();
        assert_eq!(report.errored, 1);
        let errs = c.peek("p", Some("ERRORS"), None, None).await.unwrap();
        assert_eq!(errs[0].error, "panic: handler exploded on p1", "{ed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_handler_gets_its_message_redelivered_to_another() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        c.push(&Push::new("k", "work").id("k1")).await.unwrap();
        // Worker A takes the message and hangs in its handler; then it is killed (its task
        // aborted: no ACK, no NACK, no more TOUCH, as with kill -9).
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let a = Worker::new(c.clone(), "k", wcfg(600)).handle("", move |_m| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        });
        let ha = tokio::spawn(a.run_until(std::future::pending()));
        let s = started.clone();
        wait_for("A started", Duration::from_secs(10), || s.load(Ordering::SeqCst) == 1).await;
        ha.abort();
        let _ = ha.await;
        // Worker B gets it once A's lock ran out, as attempt 2.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sn = seen.clone();
        let (stop_tx, stop) = stopper();
        let b = Worker::new(c.clone(), "k", wcfg(5000)).handle("", move |m| {
            let sn = sn.clone();
            async move {
                sn.lock().unwrap().push((m.id.clone(), m.attempt));
                Ok(())
            }
        });
        let hb = tokio::spawn(b.run_until(stop));
        let sn = seen.clone();
        wait_for("redelivery to B", Duration::from_secs(10), || !sn.lock().unwrap().is_empty()).await;
        stop_tx.send(()).unwrap();
        bounded(Duration::from_secs(10), "stop", hb).await.unwrap().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![("k1".to_string(), 2)], "{ed:?}");
        assert_eq!(started.load(Ordering::SeqCst), 1, "A's handler was stopped with A");
        let st = c.stats("k").await.unwrap();
        assert_eq!((st["acked"], st["inflight"], st["ready"]), (1, 0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn touch_keeps_a_handler_running_three_locks_from_redelivery() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        c.push(&Push::new("t", "slow").id("t1")).await.unwrap();
        let lock = 1000u64;
        let (stop_tx, stop) = stopper();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let w = Worker::new(c.clone(), "t", wcfg(lock)).handle("", move |m| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                assert_eq!(m.attempt, 1);
                tokio::time::sleep(Duration::from_millis(3 * lock)).await;
                Ok(())
            }
        });
        let h = tokio::spawn(w.run_until(stop));
        let r = runs.clone();
        wait_for("handler started", Duration::from_secs(10), || r.load(Ordering::SeqCst) == 1).await;
        // Meanwhile a rival consumer keeps trying to take it: it must find nothing.
        let rival = c.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(3 * lock - 100);
        while tokio::time::Instant::now() < deadline {
            let got = rival.fetch("t", &Fetch { lock: Some(Duration::from_secs(60)), ..Default::default() }).await.unwrap();
            assert!(got.is_empty(), "{ed:?}: redelivered while its handler still ran: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bounded(Duration::from_secs(10), "acked", async {
            while c.stats("t").await.unwrap()["acked"] != 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop_tx.send(()).unwrap();
        let report = bounded(Duration::from_secs(10), "stop", h).await.unwrap().unwrap();
        assert_eq!((report.acked, report.stale), (1, 0), "{report:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_loses_nothing() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        const N: usize = 60;
        for i in 0..N {
            c.push(&Push::new("g", format!("{i}")).id(format!("g{i}"))).await.unwrap();
        }
        let handled = Arc::new(Mutex::new(Vec::<String>::new()));
        let run = |h: Arc<Mutex<Vec<String>>>| {
            Worker::new(c.clone(), "g", WorkerConfig { concurrency: 5, ..wcfg(10_000) }).handle("", move |m| {
                let h = h.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(80)).await;
                    h.lock().unwrap().push(m.id.clone());
                    Ok(())
                }
            })
        };
        let (stop_tx, stop) = stopper();
        let h1 = tokio::spawn(run(handled.clone()).run_until(stop));
        let hd = handled.clone();
        wait_for("some handled", Duration::from_secs(10), || hd.lock().unwrap().len() >= 10).await;
        stop_tx.send(()).unwrap();
        let report = bounded(Duration::from_secs(10), "stop", h1).await.unwrap().unwrap();
        let first: Vec<String> = handled.lock().unwrap().clone();
        assert_eq!(report.acked as usize, first.len(), "{ed:?}: every finished handler was ACKed");
        assert_eq!(report.abandoned, 0);
        let st = c.stats("g").await.unwrap();
        assert_eq!(st["inflight"], 0, "{ed:?}: nothing left in flight after a graceful stop: {st:?}");
        assert_eq!(st["ready"] as usize, N - first.len());
        // A new worker takes the rest: every message handled exactly once.
        let (stop_tx, stop) = stopper();
        let h2 = tokio::spawn(run(handled.clone()).run_until(stop));
        let hd = handled.clone();
        wait_for("all handled", Duration::from_secs(20), || hd.lock().unwrap().len() >= N).await;
        stop_tx.send(()).unwrap();
        bounded(Duration::from_secs(10), "stop", h2).await.unwrap().unwrap();
        let all = handled.lock().unwrap().clone();
        assert_eq!(all.len(), N);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), N);
        let st = c.stats("g").await.unwrap();
        assert_eq!((st["acked"], st["ready"], st["inflight"]), (N as i64, 0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grace_period_over_abandons_handlers_and_their_messages_come_back() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        c.push(&Push::new("a", "x").id("a1")).await.unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let (stop_tx, stop) = stopper();
        let cfg = WorkerConfig { grace: Duration::from_millis(200), ..wcfg(700) };
        let w = Worker::new(c.clone(), "a", cfg).handle("", move |_m| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        });
        let h = tokio::spawn(w.run_until(stop));
        let s = started.clone();
        wait_for("started", Duration::from_secs(10), || s.load(Ordering::SeqCst) == 1).await;
        stop_tx.send(()).unwrap();
        let report = bounded(Duration::from_secs(5), "stop", h).await.unwrap().unwrap();
        assert_eq!(report.abandoned, 1);
        // After the lock runs out the message is fetchable again.
        let got = c.fetch("a", &Fetch { block: Some(Duration::from_secs(3)), ..Default::default() }).await.unwrap();
        assert_eq!(got.len(), 1, "{ed:?}");
        assert_eq!((got[0].id.as_str(), got[0].attempt), ("a1", 2));
    }
}

#[test]
fn a_misspelled_edition_list_fails_instead_of_testing_nothing() {
    assert_eq!(parse_editions("lua, module"), Ok(vec![Ed::Lua, Ed::Module]));
    assert!(parse_editions("modul").is_err());
    assert!(parse_editions("lua,modules").is_err());
    assert!(parse_editions("").is_err());
    assert!(parse_editions(" , ").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_pointed_at_a_dead_server_returns_an_error_in_bounded_time() {
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let c = client_for(&url, Ed::Lua);
    let cfg = WorkerConfig { startup_timeout: Duration::from_millis(500), ..wcfg(1000) };
    let w = Worker::new(c, "q", cfg).handle("", |_m| async { Ok(()) });
    let res = bounded(Duration::from_secs(20), "run against a dead server", w.run_until(std::future::pending())).await;
    match res {
        Err(rmq_client::Error::Unavailable(why)) => assert!(why.contains(&url), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Sets a flag when dropped: tells that a handler's future was stopped.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_past_its_timeout_is_stopped_and_its_message_retried() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        c.config_set("to", &[("backoff-ms", "0")]).await.unwrap();
        c.push(&Push::new("to", "hang").id("h1")).await.unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (d, a) = (dropped.clone(), attempts.clone());
        let cfg = WorkerConfig { timeout: Some(Duration::from_millis(300)), ..wcfg(5000) };
        let (stop_tx, stop) = stopper();
        let w = Worker::new(c.clone(), "to", cfg).handle("", move |m| {
            let flag = DropFlag(d.clone());
            a.lock().unwrap().push(m.attempt);
            async move {
                let _flag = flag;
                if m.attempt == 1 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok(())
            }
        });
        let h = tokio::spawn(w.run_until(stop));
        bounded(Duration::from_secs(20), "retried after the timeout, then acked", async {
            while c.stats("to").await.unwrap()["acked"] != 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop_tx.send(()).unwrap();
        let report = bounded(Duration::from_secs(10), "stop", h).await.unwrap().unwrap();
        assert_eq!((report.retried, report.acked), (1, 1), "{ed:?}: {report:?}");
        assert_eq!(*attempts.lock().unwrap(), vec![1, 2], "{ed:?}");
        assert_eq!(dropped.load(Ordering::SeqCst), 2, "{ed:?}: the hung handler was stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_fault_gives_the_message_back_and_stops_the_worker() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        // Its last attempt: a plain retry would dead-letter it.
        c.config_set("wf", &[("max-attempts", "1")]).await.unwrap();
        c.push(&Push::new("wf", "x").id("w1")).await.unwrap();
        c.push(&Push::new("wf", "y").id("w2")).await.unwrap();
        let cfg = WorkerConfig { concurrency: 1, ..wcfg(5000) };
        let w = Worker::new(c.clone(), "wf", cfg).handle("", |_m| async { Err(HandlerError::worker_fault("no disk")) });
        let res = bounded(Duration::from_secs(20), "worker stops by itself", w.run_until(std::future::pending())).await;
        match res {
            Err(rmq_client::Error::WorkerFault(why)) => assert_eq!(why, "no disk"),
            other => panic!("{ed:?}: expected WorkerFault, got {other:?}"),
        }
        let st = c.stats("wf").await.unwrap();
        assert_eq!((st["ready"], st["inflight"], st["failed"], st["errors"]), (2, 0, 0, 0), "{ed:?}: {st:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letter_sends_the_message_to_failed_at_once() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        c.push(&Push::new("dl", "x").id("d1")).await.unwrap();
        let (stop_tx, stop) = stopper();
        let w = Worker::new(c.clone(), "dl", wcfg(5000)).handle("", |_m| async { Err(HandlerError::dead_letter("bad order")) });
        let h = tokio::spawn(w.run_until(stop));
        bounded(Duration::from_secs(10), "in failed", async {
            while c.stats("dl").await.unwrap()["failed"] != 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop_tx.send(()).unwrap();
        let report = bounded(Duration::from_secs(10), "stop", h).await.unwrap().unwrap();
        assert_eq!(report.failed, 1);
        let failed = c.peek("dl", Some("FAILED"), None, None).await.unwrap();
        assert_eq!((failed[0].attempt, failed[0].error.as_str()), (1, "bad order"), "{ed:?}");
    }
}

/// `block` is the length of one blocking FETCH, as documented (it used to be cut to 1 s
/// without a word).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_block_setting_is_the_length_of_one_blocking_fetch() {
    // Only the module blocks on the server; this test needs it (and fails without it).
    let srv = Server::start(Ed::Module, &[]);
    let c = srv.client();
    let mut con = srv.sync_conn();
    let (stop_tx, stop) = stopper();
    let cfg = WorkerConfig { block: Duration::from_secs(4), grace: Duration::from_secs(10), ..wcfg(5000) };
    let h = tokio::spawn(Worker::new(c, "idle", cfg).handle("", |_m| async { Ok(()) }).run_until(stop));
    let info = |con: &mut redis::Connection, section: &str| -> String { redis::cmd("INFO").arg(section).query(con).unwrap() };
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !info(&mut con, "clients").contains("blocked_clients:1") {
        assert!(std::time::Instant::now() < until, "the worker never blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let stats = info(&mut con, "commandstats");
    let calls: u64 = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_rmq.fetch:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    assert!(calls <= 1, "the worker's FETCH came back early ({calls} calls in 2.5 s with block 4 s)");
    stop_tx.send(()).unwrap();
    bounded(Duration::from_secs(20), "stop", h).await.unwrap().unwrap();
}

/// The shared scenario "a poison message" (docs/client.md): a message whose handler always
/// asks for a retry reaches failed after max-attempts, while the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_reaches_failed_after_max_attempts() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let c = srv.client();
        c.config_set("pq", &[("backoff-ms", "0"), ("max-attempts", "3")]).await.unwrap();
        c.push(&Push::new("pq", "poison").id("poison")).await.unwrap();
        c.push(&Push::new("pq", "fine").id("fine")).await.unwrap();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let seen = attempts.clone();
        let (stop_tx, stop) = stopper();
        let w = Worker::new(c.clone(), "pq", wcfg(5000)).handle("", move |m| {
            let seen = seen.clone();
            async move {
                if m.id == "poison" {
                    seen.lock().unwrap().push(m.attempt);
                    return Err(HandlerError::retry("cannot parse"));
                }
                Ok(())
            }
        });
        let h = tokio::spawn(w.run_until(stop));
        bounded(Duration::from_secs(20), "poison in failed", async {
            loop {
                let s = c.stats("pq").await.unwrap();
                if s["dead"] == 1 && s["acked"] == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop_tx.send(()).unwrap();
        bounded(Duration::from_secs(10), "stop", h).await.unwrap().unwrap();
        assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3], "{ed:?}");
        let m = c.get("pq", "poison").await.unwrap().unwrap();
        assert_eq!(m.state, "failed", "{ed:?}");
        assert!(m.error.contains("max attempts"), "{ed:?}: {}", m.error);
    }
}
