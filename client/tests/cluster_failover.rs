//! kill -9 of a master in the middle of a steady producer and workers, on a real Redis
//! Cluster: its replica takes over, producers and workers carry on. Counted: acknowledged
//! pushes that are gone, and messages handled twice (acks that came back, deliveries whose
//! answer died with the master). Without confirms, Redis's asynchronous replication may lose
//! the last pushes; with confirms (WAIT for a replica), no acknowledged push is lost and every
//! message is handled at least once. Both figures are printed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::ClusterOptions;
use common::{bounded, editions, start_cluster_with, Ed};
use rmq_client::cluster::queue_slot;
use rmq_client::{Client, Config, Confirm, EditionChoice, Producer, ProducerConfig, Push, Worker, WorkerConfig};

/// What one run counted.
#[derive(Debug, Default)]
struct Tally {
    /// Pushes acknowledged by Redis (not spooled).
    acknowledged: usize,
    /// Pushes that went to the spool (sent later).
    spooled: usize,
    /// Acknowledged pushes never handled: lost with the master.
    lost_acknowledged: usize,
    /// Spooled pushes never handled.
    lost_spooled: usize,
    /// Messages handled more than once.
    handled_twice: usize,
}

fn client(url: &str, ed: Ed) -> Client {
    let mut cfg = Config::new(url);
    cfg.connect_timeout = Duration::from_millis(500);
    // Long enough to ride out most of a failover inside one command, short enough that a
    // producer spools rather than stalls.
    cfg.command_timeout = Duration::from_secs(3);
    cfg.edition = if ed == Ed::Module { EditionChoice::Module } else { EditionChoice::Auto };
    Client::new(cfg).unwrap()
}

/// Runs the cluster's blocking helpers off the async workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// How long the replica is stopped before its master is killed.
const LAG_MS: u64 = 1000;
/// Bodies large enough that a second of pushes overflows the socket buffers between master
/// and replica (a few MB on loopback): what did not leave the master dies with it.
const BODY: usize = 32 * 1024;
/// How long a handler takes.
const HANDLER_MS: u64 = 5;

async fn run(ed: Ed, confirm: bool) -> Tally {
    let mut c = start_cluster_with(ed, ClusterOptions::default());
    let url = c.url();
    let victim = c.master_ports()[0];
    let q = (0..).map(|i| format!("failover-{i}")).find(|q| c.owner(queue_slot(q)) == victim).unwrap();

    let handled: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for w in 0..2 {
        let handled = handled.clone();
        // A short lock: deliveries whose answer died with the master come back soon. Workers
        // slower than the producer, so that a backlog is waiting when the master dies (a
        // message consumed before the crash cannot be missed after it).
        let cfg = WorkerConfig {
            concurrency: 2,
            lock: Duration::from_secs(3),
            consumer: Some(format!("w{w}")),
            startup_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let mut stop = stop_rx.clone();
        let worker = Worker::new(client(&url, ed), q.clone(), cfg).handle_any(move |m| {
            let handled = handled.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(HANDLER_MS)).await;
                *handled.lock().unwrap().entry(m.id.clone()).or_default() += 1;
                Ok(())
            }
        });
        workers.push(tokio::spawn(worker.run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }

    let spool = tempfile::tempdir().unwrap();
    let cfg = ProducerConfig {
        spool_dir: Some(spool.path().to_path_buf()),
        confirm: confirm.then(|| Confirm { replicas: 1, timeout: Duration::from_millis(500) }),
        drain_interval: Duration::from_millis(500),
        ..Default::default()
    };
    let producer = Producer::new(client(&url, ed), cfg).await.unwrap();
    let producing = Arc::new(AtomicBool::new(true));
    let pushed: Arc<Mutex<(BTreeSet<String>, BTreeSet<String>)>> = Arc::default();
    let feeder = {
        let (producer, producing, pushed, q) = (producer.clone(), producing.clone(), pushed.clone(), q.clone());
        tokio::spawn(async move {
            let body = vec![b'x'; BODY];
            let mut i = 0;
            while producing.load(Ordering::Relaxed) {
                let id = format!("m-{i}");
                let r = producer.push(Push::new(q.as_str(), body.clone()).id(&id)).await.expect("never lost by the producer");
                let mut p = pushed.lock().unwrap();
                if r.spooled {
                    p.1.insert(id);
                } else {
                    p.0.insert(id);
                }
                i += 1;
            }
        })
    };

    // Steady state; then the replica falls behind (stopped, as if cut off: it reads nothing
    // of the replication stream), and the master crashes while it is behind.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let replica = blocking(|| c.replicas_of(victim))[0];
    blocking(|| c.node(replica).signal("STOP"));
    tokio::time::sleep(Duration::from_millis(LAG_MS)).await;
    blocking(|| {
        c.node(victim).kill9();
        c.node(replica).signal("CONT");
    });
    let killed_at = Instant::now();
    blocking(|| c.wait_failover(victim, Duration::from_secs(60)));
    let failover = killed_at.elapsed();
    // The dead node comes back as a replica of the new master (so that confirms can be had
    // again), and the load goes on a while.
    blocking(|| {
        c.node(victim).restart();
        c.wait_ok(Duration::from_secs(60));
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    producing.store(false, Ordering::Relaxed);
    bounded(Duration::from_secs(60), "producer stops", feeder).await.unwrap();
    bounded(Duration::from_secs(60), "the spool empties", async {
        loop {
            let r = producer.drain().await;
            if r.is_ok_and(|r| r.remaining == 0 && r.stopped.is_none()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // Done when the queue holds nothing (messages in flight come back when their lock runs
    // out; nothing is delayed here).
    let watcher = client(&url, ed);
    bounded(Duration::from_secs(90), "the queue empties", async {
        loop {
            if let Ok(st) = watcher.stats(&q).await {
                if st["ready"] + st["inflight"] + st["delayed"] == 0 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    stop_tx.send(true).unwrap();
    for w in workers {
        bounded(Duration::from_secs(60), "workers stop", w).await.unwrap().unwrap();
    }
    producer.close().await;

    let handled = handled.lock().unwrap();
    let (acked, spooled) = &*pushed.lock().unwrap();
    let tally = Tally {
        acknowledged: acked.len(),
        spooled: spooled.len(),
        lost_acknowledged: acked.iter().filter(|id| !handled.contains_key(*id)).count(),
        lost_spooled: spooled.iter().filter(|id| !handled.contains_key(*id)).count(),
        handled_twice: handled.values().filter(|&&n| n > 1).count(),
    };
    println!(
        "failover ({ed:?}, confirms {}, replica {LAG_MS} ms behind): replica took over in {:.1} s; {} pushes acknowledged, {} spooled and sent later; \
         LOST acknowledged: {}, lost spooled: {}; handled twice: {}",
        if confirm { "on" } else { "off" },
        failover.as_secs_f64(),
        tally.acknowledged,
        tally.spooled,
        tally.lost_acknowledged,
        tally.lost_spooled,
        tally.handled_twice
    );
    drop(c);
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_mid_run_loses_no_confirmed_push() {
    // The module edition: the Lua edition's failover is the same Redis replication.
    let ed = if editions().contains(&Ed::Module) { Ed::Module } else { Ed::Lua };
    let off = run(ed, false).await;
    let on = run(ed, true).await;
    println!(
        "failover summary ({ed:?}): acknowledged pushes lost — confirms off: {} of {}, confirms on: {} of {}",
        off.lost_acknowledged, off.acknowledged, on.lost_acknowledged, on.acknowledged
    );
    assert!(off.acknowledged > 0 && on.acknowledged > 0, "the producers ran: {off:?} {on:?}");
    assert_eq!(on.lost_acknowledged, 0, "with confirms, no acknowledged push is lost: {on:?}");
    assert_eq!(on.lost_spooled, 0, "with confirms, every message is handled at least once: {on:?}");
}
