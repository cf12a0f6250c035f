//! The client on a real Redis Cluster (3 masters, 3 replicas), both editions: every command
//! reaches the master of its queue's slot, and the queue's keys live there alone.

mod common;

use std::time::Duration;

use common::{bounded, client_for, editions, queues_per_master, start_cluster, Ed};
use rmq_client::client::QUEUE_KEY_PREFIXES;
use rmq_client::cluster::queue_slot;
use rmq_client::{Fetch, NackKind, Push};

fn fetch1(lock_ms: u64) -> Fetch {
    Fetch { count: Some(1), lock: Some(Duration::from_millis(lock_ms)), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_reaches_the_master_of_its_queue_in_both_editions() {
    for ed in editions() {
        let mut c = start_cluster(ed);
        let client = client_for(&c.url(), ed);
        assert!(client.is_cluster().await.unwrap(), "{ed:?}: the client must see a cluster");
        let per_master = queues_per_master(&mut c, "route", 2);
        let all: Vec<String> = per_master.iter().flat_map(|(_, qs)| qs.clone()).collect();
        bounded(Duration::from_secs(120), "every command on every queue", async {
            for q in &all {
                exercise_every_command(&client, q).await;
            }
        })
        .await;
        // Every queue's keys are on its slot's master, and on no other master.
        let masters = c.master_ports();
        for (master, qs) in &per_master {
            for q in qs {
                let slot = queue_slot(q);
                assert!(c.keys_in_slot(*master, slot) > 0, "{ed:?}: {q} has no key on its master {master}");
                for other in masters.iter().filter(|m| *m != master) {
                    assert_eq!(c.keys_in_slot(*other, slot), 0, "{ed:?}: {q} has keys on {other} too");
                }
            }
        }
        // QUEUES covers every master.
        let listed = client.queues().await.unwrap();
        for q in &all {
            assert!(listed.contains(q), "{ed:?}: {q} missing from {listed:?}");
        }
        if ed == Ed::Lua {
            lua_calls_declare_every_key(&mut c, &client).await;
        }
    }
}

/// A Lua-edition cluster client declares every key of the queue (`FCALL rmq_x 11 q msg:{q} …
/// log:{q} …`), so that Redis itself refuses while the queue's slot migrates. The slow log
/// with a threshold of 0 keeps every command with its arguments.
async fn lua_calls_declare_every_key(c: &mut common::cluster::TestCluster, client: &rmq_client::Client) {
    let port = c.owner(queue_slot("declared"));
    let mut con = c.node(port).conn();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(0).query(&mut con).unwrap();
    client.push(&Push::new("declared", "x").id("d1")).await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(10000).query(&mut con).unwrap();
    let log: redis::Value = redis::cmd("SLOWLOG").arg("GET").arg(50).query(&mut con).unwrap();
    let mut words = Vec::new();
    flatten(&log, &mut words);
    let expected: Vec<String> = ["rmq_push", "11", "declared"]
        .iter()
        .map(|s| s.to_string())
        .chain(QUEUE_KEY_PREFIXES.iter().map(|p| format!("{p}:{{declared}}")))
        .collect();
    assert!(words.windows(expected.len()).any(|w| w == expected.as_slice()), "FCALL {expected:?} … not in the slow log: {words:?}");
    assert_eq!(client.stats("declared").await.unwrap()["ready"], 1);
}

/// Every command of the contract on queue `q`, with the answers a single server gives.
async fn exercise_every_command(client: &rmq_client::Client, q: &str) {
    let id = format!("{q}-m1");
    assert_eq!(client.push(&Push::new(q, "one").id(&id).key("k")).await.unwrap(), id);
    // A second push of the same id is a duplicate.
    assert_eq!(client.push(&Push::new(q, "one again").id(&id)).await.unwrap(), id);
    client.push(&Push::new(q, "two").id(format!("{q}-m2"))).await.unwrap();
    client.push(&Push::new(q, "later").id(format!("{q}-m3")).delay(Duration::from_secs(3600))).await.unwrap();
    let st = client.stats(q).await.unwrap();
    assert_eq!((st["ready"], st["delayed"], st["pushed"], st["dups"]), (2, 1, 3, 1), "{q}: {st:?}");

    let m = client.fetch(q, &fetch1(60_000)).await.unwrap().remove(0);
    assert_eq!((m.id.as_str(), m.body.as_slice(), m.key.as_str()), (id.as_str(), b"one".as_slice(), "k"));
    assert!(client.touch(q, &m.receipt, Some(Duration::from_secs(120))).await.unwrap() > 0);
    assert!(client.nack(q, &m.receipt, NackKind::Retry { delay: Some(Duration::ZERO) }, Some("again")).await.unwrap());
    let peeked = client.peek(q, Some("ready"), None, None).await.unwrap();
    assert_eq!(peeked.len(), 2, "{q}: {peeked:?}");

    let m = client.fetch(q, &fetch1(60_000)).await.unwrap().remove(0);
    assert_eq!(client.ack(q, &[m.receipt.as_str()]).await.unwrap(), 1);
    assert_eq!(client.ack(q, &[m.receipt.as_str()]).await.unwrap(), 0, "a second ACK changes nothing");

    let m = client.fetch(q, &fetch1(60_000)).await.unwrap().remove(0);
    assert!(client.nack(q, &m.receipt, NackKind::Error, Some("bad")).await.unwrap());
    assert_eq!(client.get(q, &m.id).await.unwrap().unwrap().state, "errors");
    assert_eq!(client.recover(q, &["ERRORS"]).await.unwrap(), [0, 0, 1]);
    let m = client.fetch(q, &fetch1(60_000)).await.unwrap().remove(0);
    assert!(client.nack(q, &m.receipt, NackKind::Fail, Some("dead")).await.unwrap());
    assert_eq!(client.peek(q, Some("failed"), None, None).await.unwrap().len(), 1);
    assert_eq!(client.requeue(q, &[m.id.as_str()]).await.unwrap(), 1);
    assert_eq!(client.requeue(q, &[format!("{q}-m3").as_str()]).await.unwrap(), 1, "delayed → ready");
    assert_eq!(client.del(q, &[m.id.as_str()]).await.unwrap(), 1);

    client.config_set(q, &[("log", "1"), ("lock-ms", "45000")]).await.unwrap();
    let cfg = client.config_get(q, Some("lock-ms")).await.unwrap();
    assert_eq!(cfg, vec![("lock-ms".to_string(), "45000".to_string())]);
    client.push(&Push::new(q, "logged").id(format!("{q}-m4"))).await.unwrap();
    let log = client.log(q, None, None).await.unwrap();
    assert!(!log.is_empty(), "{q}: the log has the push");
    assert_eq!(client.replay(q, 0, None).await.unwrap(), 1);
    let st = client.stats(q).await.unwrap();
    assert_eq!(st["ready"], 3, "{q}: m3, m4 and the replayed copy: {st:?}");
    assert_eq!(client.purge(q, "READY").await.unwrap(), 3);
    // Something left on the queue so that it shows in QUEUES and its keys stay.
    client.push(&Push::new(q, "stays").id(format!("{q}-m5"))).await.unwrap();
}

/// Every string of a reply, depth first.
fn flatten(v: &redis::Value, out: &mut Vec<String>) {
    match v {
        redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(t) => out.push(t.clone()),
        redis::Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_fetch_holds_up_no_other_command_and_a_lost_ack_is_not_sent_again() {
    for ed in editions() {
        let mut c = start_cluster(ed);
        let client = client_for(&c.url(), ed);
        let per_master = queues_per_master(&mut c, "hold", 2);
        let (_, qs) = &per_master[0];
        let (waiting, other) = (qs[0].clone(), qs[1].clone());

        // A FETCH blocking on an empty queue; meanwhile the same client pushes to, and reads,
        // another queue of the same master: those answer while the FETCH still waits.
        let fetch = {
            let (client, q) = (client.clone(), waiting.clone());
            tokio::spawn(async move {
                let f = Fetch { count: Some(1), block: Some(Duration::from_secs(30)), ..Default::default() };
                client.fetch(&q, &f).await.unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..20 {
            client.push(&Push::new(other.as_str(), "x").id(format!("o{i}"))).await.unwrap();
            assert_eq!(client.stats(&other).await.unwrap()["ready"], i + 1);
        }
        assert!(!fetch.is_finished(), "{ed:?}: the FETCH is still waiting");
        client.push(&Push::new(waiting.as_str(), "wake").id("w1")).await.unwrap();
        let got = bounded(Duration::from_secs(30), "the blocking fetch", fetch).await.unwrap();
        assert_eq!(got[0].id, "w1", "{ed:?}");

        // An ACK whose answer does not come in time (the master is paused) is reported as
        // unavailable and never sent again by the client: the server sees it at most once (not
        // at all when the client's dropped connection takes the queued command with it). ACK
        // being idempotent, the caller may send it again: the message is acked once.
        let m = client.fetch(&other, &fetch1(60_000)).await.unwrap().remove(0);
        let acked_before = client.stats(&other).await.unwrap()["acked"];
        let stat = if ed == Ed::Module { "rmq.ack" } else { "fcall" };
        // The queue's master now (a busy machine may have failed one over since the start).
        let owner = c.owner(queue_slot(&other));
        let mut con = c.node(owner).conn();
        let mut cfg = rmq_client::Config::new(c.url());
        cfg.command_timeout = Duration::from_millis(500);
        cfg.edition = if ed == Ed::Module { rmq_client::EditionChoice::Module } else { rmq_client::EditionChoice::Lua };
        let impatient = rmq_client::Client::new(cfg).unwrap();
        impatient.stats(&other).await.unwrap();
        let before = command_calls(&mut con, stat);
        let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("ALL").query(&mut con).unwrap();
        let err = impatient.ack(&other, &[m.receipt.as_str()]).await.unwrap_err();
        assert!(err.is_unavailable(), "{ed:?}: {err}");
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let sent = command_calls(&mut con, stat) - before;
        assert!(sent <= 1, "{ed:?}: the lost ACK reached the server {sent} times");
        let again = client.ack(&other, &[m.receipt.as_str()]).await.unwrap();
        assert_eq!(again + sent, 1, "{ed:?}: applied once, by the first ACK or by the second");
        assert!(client.get(&other, &m.id).await.unwrap().is_none());
        assert_eq!(client.stats(&other).await.unwrap()["acked"], acked_before + 1, "{ed:?}");
    }
}

/// How many times the server ran `command` (INFO commandstats).
fn command_calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
