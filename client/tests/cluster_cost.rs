//! Measurements for docs/cluster.md, not checks: run by hand with
//! `cargo nextest run -p rmq-client --test cluster_cost --run-ignored only --no-capture`
//! (RMQ_MODULE set, the module built in release). It prints:
//! - the CPU time each server spends per message (PUSH + FETCH + ACK), on a server alone and
//!   on the masters of a cluster, with one queue and with a queue per master;
//! - what a confirm (WAIT for a replica) adds to a push;
//! - what idle workers of a partitioned queue cost (FETCHes per second).
//!
//! No figure is asserted: the machine is shared; the docs quote the figures of one run.

mod common;

use std::time::{Duration, Instant};

use common::{client_for, module_path, start_cluster, Ed, Server};
use rmq_client::{Client, Fetch, Push, Worker, WorkerConfig};

const MESSAGES: usize = 20_000;
const TASKS: usize = 8;

/// used_cpu_user + used_cpu_sys of the server on `port`, in seconds.
fn cpu(port: u16) -> f64 {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("cpu").query(&mut c).unwrap();
    let field = |name: &str| -> f64 {
        info.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    };
    field("used_cpu_user") + field("used_cpu_sys")
}

/// How many times the server on `port` ran `command` (INFO commandstats).
fn calls(port: u16, command: &str) -> u64 {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// PUSH, FETCH, ACK of MESSAGES messages over `queues`, from TASKS tasks at once.
async fn workload(client: &Client, queues: &[String]) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (client, queues) = (client.clone(), queues.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in (t..MESSAGES).step_by(TASKS) {
                let q = &queues[i % queues.len()];
                client.push(&Push::new(q.as_str(), "0123456789abcdef").id(format!("m{i}"))).await.unwrap();
                let m = client.fetch(q, &Fetch { count: Some(1), ..Default::default() }).await.unwrap();
                // Another task may have taken this one (and this task, the other's).
                let receipts: Vec<&str> = m.iter().map(|m| m.receipt.as_str()).collect();
                if !receipts.is_empty() {
                    client.ack(q, &receipts).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn per_message_us(cpu_s: f64) -> f64 {
    cpu_s * 1e6 / MESSAGES as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement for docs/cluster.md, run by hand"]
async fn cost_per_node_alone_and_in_a_cluster() {
    assert!(module_path().is_some(), "RMQ_MODULE or target/release/librmq.so is needed");
    // A server alone, with a replica as each master of the cluster has.
    let alone = Server::start(Ed::Module, &[]);
    let replica = Server::start(Ed::Module, &[("replicaof", &format!("127.0.0.1 {}", alone.port))]);
    let client = client_for(&alone.url(), Ed::Module);
    let before = cpu(alone.port);
    let t = workload(&client, &["cost".to_string()]).await;
    let used = cpu(alone.port) - before;
    println!(
        "alone (with a replica): {:.1} µs of server CPU per message (PUSH+FETCH+ACK), {:.0} messages/s",
        per_message_us(used),
        MESSAGES as f64 / t.as_secs_f64()
    );
    drop(replica);
    drop(alone);

    let mut c = start_cluster(Ed::Module);
    let url = c.url();
    let masters = c.master_ports();
    let client = client_for(&url, Ed::Module);
    let per_master = common::queues_per_master(&mut c, "cost", 1);
    // One queue: one master does all the work.
    let one = vec![per_master[0].1[0].clone()];
    let before: Vec<f64> = masters.iter().map(|&m| cpu(m)).collect();
    let t = workload(&client, &one).await;
    let used: Vec<f64> = masters.iter().zip(&before).map(|(&m, b)| cpu(m) - b).collect();
    println!(
        "cluster, one queue: {:.1} µs per message on its master (the other masters, cluster bus only: {:.1} and {:.1} µs), \
         {:.0} messages/s",
        per_message_us(used[0]),
        per_message_us(used[1]),
        per_message_us(used[2]),
        MESSAGES as f64 / t.as_secs_f64()
    );
    // A queue per master: each master does a third.
    let spread: Vec<String> = per_master.iter().map(|(_, q)| q[0].clone()).collect();
    let before: Vec<f64> = masters.iter().map(|&m| cpu(m)).collect();
    let t = workload(&client, &spread).await;
    let used: Vec<f64> = masters.iter().zip(&before).map(|(&m, b)| cpu(m) - b).collect();
    println!(
        "cluster, a queue per master: {:.1} / {:.1} / {:.1} µs per message (of all messages) on the three masters, \
         {:.1} µs in all, {:.0} messages/s",
        per_message_us(used[0]),
        per_message_us(used[1]),
        per_message_us(used[2]),
        per_message_us(used.iter().sum()),
        MESSAGES as f64 / t.as_secs_f64()
    );

    // What a confirm costs: one push at a time, without and with WAIT for a replica.
    let q = per_master[0].1[0].clone();
    for confirm in [None, Some(rmq_client::Confirm::default())] {
        let started = Instant::now();
        for i in 0..2000 {
            let p = Push::new(q.as_str(), "0123456789abcdef").id(format!("c{}-{i}", confirm.is_some()));
            match confirm {
                None => drop(client.push(&p).await.unwrap()),
                Some(c) => assert_eq!(client.push_confirmed(&p, c).await.unwrap().1, 1),
            }
        }
        println!(
            "one push at a time, confirms {}: {:.0} µs per push",
            if confirm.is_some() { "on (WAIT 1)" } else { "off" },
            started.elapsed().as_secs_f64() * 1e6 / 2000.0
        );
    }

    // Idle workers of a partitioned queue poll every partition.
    let (p, _) = client.partition_create("idle", 12, true).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let mut stop = stop_rx.clone();
        let w = Worker::new(client_for(&url, Ed::Module), "idle", WorkerConfig { concurrency: 1, ..Default::default() })
            .handle_any(|_| async { Ok(()) });
        workers.push(tokio::spawn(w.run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: u64 = masters.iter().map(|&m| calls(m, "rmq.fetch")).sum();
    let window = Duration::from_secs(5);
    tokio::time::sleep(window).await;
    let after: u64 = masters.iter().map(|&m| calls(m, "rmq.fetch")).sum();
    stop_tx.send(true).unwrap();
    for w in workers {
        w.await.unwrap().unwrap();
    }
    println!(
        "8 idle workers of a queue of {} partitions: {:.0} FETCH/s over the cluster ({:.1} per worker and partition)",
        p.count(),
        (after - before) as f64 / window.as_secs_f64(),
        (after - before) as f64 / window.as_secs_f64() / 8.0 / p.count() as f64
    );
}
