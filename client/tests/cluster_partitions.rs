//! A partitioned queue on a real Redis Cluster: 12 ordered partitions over 3 masters, 10,000
//! messages over 100 keys, 8 workers: every message handled once, each key's messages in
//! order and in one partition, every partition used.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, client_for, editions, start_cluster};
use rmq_client::cluster::queue_slot;
use rmq_client::{HandlerError, Producer, ProducerConfig, Push, Worker, WorkerConfig};

const PARTITIONS: usize = 12;
const MESSAGES: usize = 10_000;
const KEYS: usize = 100;
const WORKERS: usize = 8;
const PRODUCERS: usize = 4;

/// What a worker saw: per key, the sequence numbers in the order handled, and the partition.
#[derive(Default)]
struct Seen {
    by_key: BTreeMap<String, Vec<usize>>,
    partition_of_key: BTreeMap<String, BTreeSet<String>>,
    ids: BTreeMap<String, usize>,
    per_partition: BTreeMap<String, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ordered_partitioned_queue_keeps_each_keys_order_over_three_masters() {
    for ed in editions() {
        let started = Instant::now();
        let mut c = start_cluster(ed);
        let url = c.url();
        let client = client_for(&url, ed);
        let (p, created) = client.partition_create("orders", PARTITIONS, true).await.unwrap();
        assert!(created);
        assert_eq!(p.count(), PARTITIONS);
        // The partitions spread over the masters: 4 each, on distinct slots.
        let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
        for q in &p.partitions {
            *per_master.entry(c.owner(queue_slot(q))).or_default() += 1;
        }
        assert_eq!(per_master.len(), 3, "{ed:?}: {per_master:?}");
        assert!(per_master.values().all(|&n| n == PARTITIONS / 3), "{ed:?}: {per_master:?}");
        let slots: BTreeSet<u16> = p.partitions.iter().map(|q| queue_slot(q)).collect();
        assert_eq!(slots.len(), PARTITIONS);
        // Every client reads the same record.
        let again = client_for(&url, ed).partitioned("orders").await.unwrap().unwrap();
        assert_eq!(again, p);

        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let seen = seen.clone();
            let cfg = WorkerConfig {
                concurrency: 1,
                lock: Duration::from_secs(60),
                consumer: Some(format!("w{w}")),
                startup_timeout: Duration::from_secs(10),
                ..Default::default()
            };
            let mut stop = stop_rx.clone();
            let worker = Worker::new(client_for(&url, ed), "orders", cfg).handle_any(move |m| {
                let seen = seen.clone();
                async move {
                    let body = m.body_str().to_string();
                    let (key, seq) = body.split_once(':').ok_or_else(|| HandlerError::dead_letter("bad body"))?;
                    let mut s = seen.lock().unwrap();
                    s.by_key.entry(key.to_string()).or_default().push(seq.parse().unwrap());
                    s.partition_of_key.entry(key.to_string()).or_default().insert(m.queue.clone());
                    *s.ids.entry(m.id.clone()).or_default() += 1;
                    *s.per_partition.entry(m.queue.clone()).or_default() += 1;
                    Ok(())
                }
            });
            workers.push(tokio::spawn(worker.run_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            })));
        }

        // Producers: each owns some keys and pushes each key's messages in order.
        let spool = tempfile::tempdir().unwrap();
        let mut producers = Vec::new();
        for pi in 0..PRODUCERS {
            let cfg = ProducerConfig { spool_dir: Some(spool.path().join(format!("p{pi}"))), ..Default::default() };
            let producer = Producer::new(client_for(&url, ed), cfg).await.unwrap();
            producers.push(tokio::spawn(async move {
                let mut spooled = 0;
                for i in (pi..MESSAGES).step_by(PRODUCERS) {
                    let key = format!("k{}", i % KEYS);
                    let seq = i / KEYS;
                    let r = producer.push(Push::new("orders", format!("{key}:{seq}")).key(&key)).await.unwrap();
                    spooled += r.spooled as usize;
                }
                spooled
            }));
        }
        for p in producers {
            assert_eq!(p.await.unwrap(), 0, "{ed:?}: nothing spooled while the cluster is up");
        }
        bounded(Duration::from_secs(240), "every message handled", async {
            loop {
                let n: usize = seen.lock().unwrap().ids.len();
                if n >= MESSAGES {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        stop_tx.send(true).unwrap();
        let mut acked = 0;
        for w in workers {
            let report = bounded(Duration::from_secs(60), "workers stop", w).await.unwrap().unwrap();
            assert_eq!((report.retried, report.errored, report.failed, report.stale), (0, 0, 0, 0), "{ed:?}: {report:?}");
            acked += report.acked;
        }

        let stats = client.partition_stats(&p).await.unwrap();
        let total = rmq_client::partition::total(&stats);
        assert_eq!((total["pushed"], total["acked"], total["ready"], total["inflight"]), (MESSAGES as i64, MESSAGES as i64, 0, 0));
        let s = seen.lock().unwrap();
        assert_eq!(s.ids.len(), MESSAGES, "{ed:?}: every message handled");
        let twice: Vec<_> = s.ids.iter().filter(|(_, &n)| n != 1).collect();
        assert!(twice.is_empty(), "{ed:?}: handled more than once: {twice:?}");
        assert_eq!(acked as usize, MESSAGES);
        assert_eq!(s.by_key.len(), KEYS);
        for (key, seqs) in &s.by_key {
            let expected: Vec<usize> = (0..MESSAGES / KEYS).collect();
            assert_eq!(seqs, &expected, "{ed:?}: key {key} out of order");
            let parts = &s.partition_of_key[key];
            assert_eq!(parts.len(), 1, "{ed:?}: key {key} in several partitions: {parts:?}");
            assert_eq!(parts.iter().next().unwrap(), p.partition_for_key(key.as_bytes()));
        }
        assert_eq!(s.per_partition.len(), PARTITIONS, "{ed:?}: every partition used: {:?}", s.per_partition);
        println!(
            "{ed:?}: {MESSAGES} messages over {KEYS} keys, {PARTITIONS} ordered partitions on 3 masters, {WORKERS} workers: \
             each handled once, in order per key; per partition {:?}; {:.1} s",
            s.per_partition.values().collect::<Vec<_>>(),
            started.elapsed().as_secs_f64()
        );
    }
}
