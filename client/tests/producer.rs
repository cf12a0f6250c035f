//! The producer against a real redis-server: kill -9 during a burst, spool repair, the
//! catastrophic case.
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use futures_util::stream::{self, StreamExt};
use rmq_client::spool::{frame, scan, Item, Spool, SpoolRecord, HEADER};
use rmq_client::{Edition, Error, Fetch, Producer, ProducerConfig, Push};

fn pcfg(dir: &std::path::Path) -> ProducerConfig {
    ProducerConfig {
        spool_dir: Some(dir.to_path_buf()),
        retries: 2,
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(100),
        drain_interval: Duration::from_millis(100),
        background_drain: true,
        confirm: None,
    }
}

/// Fetches and ACKs everything in `q`; returns the ids in delivery order.
async fn take_all(c: &rmq_client::Client, q: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let msgs = c.fetch(q, &Fetch { count: Some(1000), ..Default::default() }).await.unwrap();
        if msgs.is_empty() {
            return ids;
        }
        let receipts: Vec<&str> = msgs.iter().map(|m| m.receipt.as_str()).collect();
        assert_eq!(c.ack(q, &receipts).await.unwrap(), receipts.len() as u64);
        ids.extend(msgs.iter().map(|m| m.id.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_10k_pushes_delivers_each_exactly_once() {
    for ed in editions() {
        let mut srv = Server::start(ed, &[("appendonly", "yes"), ("appendfsync", "always")]);
        let spool_dir = tempfile::tempdir().unwrap();
        let client = srv.client();
        let producer = Producer::new(client.clone(), pcfg(spool_dir.path())).await.unwrap();
        let want = match ed {
            Ed::Lua => Edition::Lua,
            Ed::Module => Edition::Module,
        };
        assert_eq!(client.edition().await.unwrap(), want);

        const N: usize = 10_000;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p2 = producer.clone();
        let d2 = done.clone();
        let sender = tokio::spawn(async move {
            stream::iter(0..N)
                .map(|i| {
                    let p = p2.clone();
                    let d = d2.clone();
                    async move {
                        let r = p.push(Push::new("burst", format!("m{i}")).header("n", i.to_string())).await;
                        d.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        r
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
        });
        // Kill Redis part way through, keep it down a moment, start it again (AOF kept).
        bounded(Duration::from_secs(30), "first 2000 pushes", async {
            while done.load(std::sync::atomic::Ordering::Relaxed) < 2000 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        srv.kill9();
        tokio::time::sleep(Duration::from_millis(400)).await;
        srv.restart();
        let results = bounded(Duration::from_secs(90), "10 000 pushes", sender).await.unwrap();
        let mut pushed = HashSet::new();
        let mut spooled = 0;
        for r in results {
            let r = r.expect("no push may fail: Redis or the spool takes it");
            spooled += r.spooled as usize;
            assert!(pushed.insert(r.id));
        }
        assert_eq!(pushed.len(), N);
        eprintln!("{ed:?}: {spooled} of {N} messages went through the spool");
        assert!(spooled > 0, "{ed:?}: the outage should have spooled some messages");
        // The background task re-sends the spool; wait until it is empty.
        bounded(Duration::from_secs(30), "spool drained", async {
            loop {
                if producer.spool_status().await.unwrap().records == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let ids = take_all(&client, "burst").await;
        let distinct: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(ids.len(), N, "{ed:?}: delivered {} messages, {} distinct ({} spooled)", ids.len(), distinct.len(), spooled);
        assert_eq!(distinct, pushed, "{ed:?}");
        let st = client.stats("burst").await.unwrap();
        assert_eq!(st["pushed"], N as i64, "{ed:?}: {st:?}");
        assert_eq!(st["acked"], N as i64);
        producer.close().await;
    }
}

fn rec(i: usize) -> SpoolRecord {
    SpoolRecord {
        queue: "spooled".into(),
        id: format!("rec-{i}"),
        body: format!("body-{i}").into_bytes(),
        tag: "t".into(),
        key: String::new(),
        headers: vec![("i".into(), i.to_string())],
        at: None,
        spooled_at: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_spool_delivers_every_good_record_and_quarantines_the_bad_one() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Spool::open(dir.path()).unwrap();
            s.append(&(0..20).map(rec).collect::<Vec<_>>()).unwrap();
        }
        // One flipped byte in record 7, and a torn tail after the last record.
        let seg =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "seg")).unwrap();
        let mut buf = std::fs::read(&seg).unwrap();
        let starts: Vec<usize> = scan(&buf, 0)
            .into_iter()
            .map(|i| match i {
                Item::Frame { start, .. } => start,
                other => panic!("{other:?}"),
            })
            .collect();
        buf[starts[7] + HEADER + 5] ^= 0x01;
        let mut torn = Vec::new();
        frame(&rec(99).encode(), &mut torn);
        torn.truncate(torn.len() - 3);
        buf.extend_from_slice(&torn);
        std::fs::write(&seg, &buf).unwrap();

        let client = srv.client();
        let mut cfg = pcfg(dir.path());
        cfg.background_drain = false;
        let producer = Producer::new(client.clone(), cfg).await.unwrap();
        let st = producer.spool_status().await.unwrap();
        assert_eq!((st.records, st.corrupt), (19, 1), "{st:?}");
        let report = producer.drain().await.unwrap();
        assert_eq!(report.sent, 19);
        assert_eq!(report.corrupt, 1, "the bad record is reported");
        assert!(report.stopped.is_none());
        let st = producer.spool_status().await.unwrap();
        assert_eq!((st.records, st.quarantined), (0, 1));
        let (s, _) = Spool::open(dir.path()).unwrap();
        let q = s.quarantine().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].reason, "CRC mismatch");
        assert_eq!(q[0].offset, starts[7] as u64);

        let ids = take_all(&client, "spooled").await;
        let want: Vec<String> = (0..20).filter(|&i| i != 7).map(|i| format!("rec-{i}")).collect();
        assert_eq!(ids, want, "{ed:?}: every good record, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_and_spool_unwritable_is_an_error() {
    let ed = editions()[0];
    let mut srv = Server::start(ed, &[]);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("spool");
    let client = srv.client();
    let producer = Producer::new(client.clone(), pcfg(&dir)).await.unwrap();
    // Redis up: pushed.
    let ok = producer.push(Push::new("cat", "a")).await.unwrap();
    assert!(!ok.spooled);
    srv.kill9();
    // Redis down, spool fine: spooled.
    let sp = producer.push(Push::new("cat", "b")).await.unwrap();
    assert!(sp.spooled);
    // Redis down, spool unwritable (its directory replaced by a file: fails even as root).
    std::fs::rename(&dir, root.path().join("moved")).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let err = producer.push(Push::new("cat", "c")).await.unwrap_err();
    assert!(matches!(err, Error::NotStored { .. }), "{err:?}");
    // Invalid messages are refused at once, Redis or not, and never spooled.
    let err = producer.push(Push::new("bad name", "x")).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    // Without a spool, Redis down is an error too.
    let mut cfg = pcfg(&dir);
    cfg.spool_dir = None;
    let bare = Producer::new(client.clone(), cfg).await.unwrap();
    let err = bare.push(Push::new("cat", "d")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_returned_not_spooled_and_duplicates_dropped() {
    for ed in editions() {
        let srv = Server::start(ed, &[]);
        let dir = tempfile::tempdir().unwrap();
        let client = srv.client();
        let producer = Producer::new(client.clone(), pcfg(dir.path())).await.unwrap();
        client.config_set("full", &[("maxlen", "1")]).await.unwrap();
        producer.push(Push::new("full", "1")).await.unwrap();
        let err = producer.push(Push::new("full", "2")).await.unwrap_err();
        assert!(matches!(&err, Error::Refused(t) if t.contains("queue full")), "{err:?}");
        assert_eq!(producer.spool_status().await.unwrap().records, 0);
        // The same id twice: one message.
        let a = producer.push(Push::new("dups", "x").id("same")).await.unwrap();
        let b = producer.push(Push::new("dups", "x").id("same")).await.unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("same", "same"));
        let st = client.stats("dups").await.unwrap();
        assert_eq!((st["ready"], st["dups"]), (1, 1));
        // Delay and headers arrive.
        producer.push(Push::new("meta", "b").tag("t").key("k").header("h1", "v1").delay(Duration::from_secs(60))).await.unwrap();
        let d = client.peek("meta", Some("DELAYED"), None, None).await.unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].tag.as_str(), d[0].key.as_str(), d[0].header("h1")), ("t", "k", Some("v1")));
        assert!(d[0].due > d[0].created + 50_000);
        let mut qs = client.queues().await.unwrap();
        qs.sort();
        assert_eq!(qs, ["dups", "full", "meta"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_library_is_reloaded_after_a_restart_without_persistence() {
    if !editions().contains(&Ed::Lua) {
        return;
    }
    let mut srv = Server::start(Ed::Lua, &[]);
    let client = srv.client();
    client.push(&Push::new("q", "1").id("a")).await.unwrap();
    srv.kill9();
    srv.restart();
    // The server forgot the library; the client loads it again by itself.
    let id = bounded(Duration::from_secs(10), "push after restart", async {
        loop {
            match client.push(&Push::new("q", "2").id("b")).await {
                Ok(id) => break id,
                Err(e) if e.is_unavailable() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert_eq!(id, "b");
}
