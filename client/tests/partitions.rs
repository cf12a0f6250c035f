//! Partitioned queues on a single server, both editions: the registry, routing by key, a
//! worker over every partition with each key in order, and the CLI-free library calls.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bounded, editions, Server};
use rmq_client::partition::{partition_index, REGISTRY_KEY};
use rmq_client::{Producer, ProducerConfig, Push, Worker, WorkerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_on_one_server_keeps_each_keys_order() {
    for ed in editions() {
        // The Lua edition starts without the library: creating loads it (ordered partitions
        // are configured, a write).
        let srv = Server::start(ed, &[]);
        let client = srv.client();
        assert!(!client.is_cluster().await.unwrap());
        assert_eq!(client.partitioned("jobs").await.unwrap(), None, "{ed:?}: an ordinary queue");
        let (p, created) = client.partition_create("jobs", 4, true).await.unwrap();
        assert!(created);
        let (again, created) = client.partition_create("jobs", 4, true).await.unwrap();
        assert!(!created && again == p, "{ed:?}: creating again changes nothing");
        assert!(client.partition_create("jobs", 5, true).await.is_err(), "{ed:?}: a count is fixed");
        for q in &p.partitions {
            assert_eq!(client.config_get(q, Some("ordered")).await.unwrap()[0].1, "1", "{ed:?}: {q} is ordered");
        }
        let mut con = srv.sync_conn();
        let rec: String = redis::cmd("HGET").arg(REGISTRY_KEY).arg("jobs").query(&mut con).unwrap();
        assert!(rec.starts_with("v=1 count=4 ordered=1 created="), "{rec}");
        assert_eq!(client.partition_list().await.unwrap(), vec![p.clone()]);
        // The registry key is not a queue.
        assert!(!client.queues().await.unwrap().contains(&REGISTRY_KEY.to_string()));
        // A queue holding messages cannot become a partitioned queue.
        client.push(&Push::new("busy", "x")).await.unwrap();
        assert!(client.partition_create("busy", 2, false).await.is_err(), "{ed:?}");

        let dir = tempfile::tempdir().unwrap();
        let producer =
            Producer::new(client.clone(), ProducerConfig { spool_dir: Some(dir.path().into()), ..Default::default() }).await.unwrap();
        for seq in 0..10 {
            for key in ["a", "b", "c", "d", "e", "f"] {
                let r = producer.push(Push::new("jobs", format!("{key}:{seq}")).key(key)).await.unwrap();
                assert_eq!(r.queue, p.partitions[partition_index(key.as_bytes(), 4)], "{ed:?}: {key}");
            }
        }
        let seen: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let s2 = seen.clone();
        let worker = Worker::new(srv.client(), "jobs", WorkerConfig { concurrency: 3, ..Default::default() }).handle_any(move |m| {
            let seen = s2.clone();
            async move {
                let body = m.body_str().to_string();
                let (k, seq) = body.split_once(':').unwrap();
                seen.lock().unwrap().entry(k.to_string()).or_default().push(seq.parse().unwrap());
                Ok(())
            }
        });
        let run = tokio::spawn(worker.run_until(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        bounded(Duration::from_secs(60), "every message handled", async {
            while seen.lock().unwrap().values().map(Vec::len).sum::<usize>() < 60 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        stop_tx.send(true).unwrap();
        let report = run.await.unwrap().unwrap();
        assert_eq!(report.acked, 60, "{ed:?}: {report:?}");
        for (k, seqs) in seen.lock().unwrap().iter() {
            assert_eq!(seqs, &(0..10).collect::<Vec<u32>>(), "{ed:?}: key {k} in order");
        }
        let total = rmq_client::partition::total(&client.partition_stats(&p).await.unwrap());
        assert_eq!((total["pushed"], total["acked"]), (60, 60), "{ed:?}");
    }
}
