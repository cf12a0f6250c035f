//! Resharding under load: a stock `redis-cli --cluster reshard` moves the slots of several
//! queues from one master to another and back, again and again, while a producer pushes to
//! them and workers drain them. Nothing may be lost or handled twice, and no queue may end up
//! with keys on two nodes: while a queue's slot migrates, its commands are refused with a
//! retryable error (TRYAGAIN) and the client tries again.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, client_for, editions, start_cluster};
use rmq_client::cluster::queue_slot;
use rmq_client::{Producer, ProducerConfig, Push, Worker, WorkerConfig};

/// `redis-cli --cluster reshard` moves a source's lowest slots first: the queues live there.
const MOVED_SLOTS: u32 = 40;
const QUEUES: usize = 6;
const PRODUCERS: usize = 3;
const ROUNDS: usize = 3;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resharding_under_load_loses_nothing_duplicates_nothing_and_splits_no_queue() {
    for ed in editions() {
        let started = Instant::now();
        let mut c = start_cluster(ed);
        let url = c.url();
        let masters = c.master_ports();
        let (a, b) = (masters[0], masters[1]);
        let queues: Vec<String> =
            (0..).map(|i| format!("reshard-{i}")).filter(|q| queue_slot(q) < MOVED_SLOTS as u16).take(QUEUES).collect();
        for q in &queues {
            assert_eq!(c.owner(queue_slot(q)), a, "{q} starts on the first master");
        }

        let handled: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for q in &queues {
            let handled = handled.clone();
            let cfg = WorkerConfig { concurrency: 2, startup_timeout: Duration::from_secs(10), ..Default::default() };
            let mut stop = stop_rx.clone();
            let worker = Worker::new(client_for(&url, ed), q.clone(), cfg).handle_any(move |m| {
                let handled = handled.clone();
                async move {
                    *handled.lock().unwrap().entry(m.id.clone()).or_default() += 1;
                    Ok(())
                }
            });
            workers.push(tokio::spawn(worker.run_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            })));
        }

        let spool = tempfile::tempdir().unwrap();
        let cfg = ProducerConfig { spool_dir: Some(spool.path().to_path_buf()), ..Default::default() };
        let producer = Producer::new(client_for(&url, ed), cfg).await.unwrap();
        let producing = Arc::new(AtomicBool::new(true));
        let pushed: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        // Several producers at full speed, so that commands keep arriving while slots move.
        let mut feeders = Vec::new();
        for f in 0..PRODUCERS {
            let (producer, producing, pushed, queues) = (producer.clone(), producing.clone(), pushed.clone(), queues.clone());
            feeders.push(tokio::spawn(async move {
                let mut i = f;
                while producing.load(Ordering::Relaxed) {
                    let q = &queues[i % queues.len()];
                    let id = format!("m-{i}");
                    producer.push(Push::new(q.as_str(), "x").id(&id)).await.expect("pushed or spooled");
                    pushed.lock().unwrap().insert(id, q.clone());
                    i += PRODUCERS;
                }
            }));
        }

        tokio::time::sleep(Duration::from_millis(500)).await;
        for round in 0..ROUNDS {
            for (from, to) in [(a, b), (b, a)] {
                blocking(|| c.reshard(from, to, MOVED_SLOTS));
                for q in &queues {
                    let slot = queue_slot(q);
                    let owner = blocking(|| c.owner(slot));
                    assert_eq!(owner, to, "{ed:?} round {round}: {q} moved to {to}");
                    for m in &masters {
                        let keys = blocking(|| c.keys_in_slot(*m, slot));
                        assert!(*m == to || keys == 0, "{ed:?} round {round}: {q} has {keys} keys on {m}, not its master {to}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        producing.store(false, Ordering::Relaxed);
        for f in feeders {
            bounded(Duration::from_secs(60), "producers stop", f).await.unwrap();
        }
        let report = bounded(Duration::from_secs(60), "the spool drains", producer.drain()).await.unwrap();
        assert_eq!(report.remaining, 0, "{ed:?}: {report:?}");
        let total = pushed.lock().unwrap().len();
        bounded(Duration::from_secs(120), "every message handled", async {
            while handled.lock().unwrap().len() < total {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        stop_tx.send(true).unwrap();
        for w in workers {
            let r = bounded(Duration::from_secs(60), "workers stop", w).await.unwrap().unwrap();
            assert_eq!((r.retried, r.errored, r.failed, r.stale), (0, 0, 0, 0), "{ed:?}: {r:?}");
        }
        let handled = handled.lock().unwrap().clone();
        let pushed = pushed.lock().unwrap().clone();
        let lost: Vec<_> = pushed.keys().filter(|id| !handled.contains_key(*id)).collect();
        let twice: Vec<_> = handled.iter().filter(|(_, &n)| n > 1).collect();
        assert!(lost.is_empty(), "{ed:?}: lost {} of {total}: {lost:?}", lost.len());
        assert!(twice.is_empty(), "{ed:?}: handled twice: {twice:?}");
        assert_eq!(handled.len(), total);
        // The counters agree: every push counted once, on the one copy of each queue.
        let client = client_for(&url, ed);
        for q in &queues {
            let st = client.stats(q).await.unwrap();
            let expected = pushed.values().filter(|p| *p == q).count() as i64;
            assert_eq!((st["pushed"], st["acked"]), (expected, expected), "{ed:?} {q}: {st:?}");
        }
        // The load did meet the moves: commands were redirected (ASK) or refused (TRYAGAIN).
        let (ask, tryagain) = blocking(|| (errors(&mut c, "ASK"), errors(&mut c, "TRYAGAIN")));
        assert!(ask + tryagain > 0, "{ed:?}: no command met a moving slot");
        println!(
            "{ed:?}: {} reshards of {MOVED_SLOTS} slots holding {QUEUES} queues under load: {total} messages, 0 lost, 0 twice, \
             no queue on two nodes ({ask} ASK redirects and {tryagain} TRYAGAIN refusals on the way); {:.1} s",
            2 * ROUNDS,
            started.elapsed().as_secs_f64()
        );
    }
}

/// How many `code` error replies the masters gave (INFO errorstats).
fn errors(c: &mut common::cluster::TestCluster, code: &str) -> u64 {
    let mut n = 0;
    for port in c.master_ports() {
        let mut con = c.node(port).conn();
        let info: String = redis::cmd("INFO").arg("errorstats").query(&mut con).unwrap();
        n += info
            .lines()
            .find_map(|l| l.strip_prefix(&format!("errorstat_{code}:count=")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    n
}
