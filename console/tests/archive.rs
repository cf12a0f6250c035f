//! The console's Archive page and archive metrics over HTTP, against a real redis-server with
//! the module and a real SQLite archive filled by the real archiver (`rmq archive run`'s own
//! loop, run in the test process): search by every criterion, a message's history, replay
//! (confirmation, cross-site and read-only refusal, the audit entry, and the copies back in the
//! queue), and the archive's lag and gaps in /metrics parsed by a Prometheus text parser.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::archive::{caught_up, Archiver};
use common::{eventually, rows, texts, Console, Ed, Redis};
use redis::Value;
use rmq_archive::source::Source;
use rmq_archive::Db;

/// FETCH one message; its id and receipt.
fn fetch_one(r: &Redis, q: &str) -> (String, String) {
    let Value::Array(items) = r.run("fetch", q, &["CONSUMER", "billing"]) else { panic!("nothing to fetch from {q}") };
    let fields = rmq_console::reply::pairs(items.into_iter().next().unwrap()).unwrap();
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| rmq_console::reply::as_string(v.clone()).unwrap()).unwrap();
    (get("id"), get("receipt"))
}

fn now_ms() -> i64 {
    rmq_archive::when::now_ms()
}

/// The archived queue `shop`: order-1 acked, order-2 failed ("card declined"), order-3
/// (binary) and order-4 ready, and 21 more ready `bulk-…` messages. Returns the time between
/// order-2 and order-3.
async fn fill(r: &Redis, db_url: &str) -> (Archiver, i64) {
    r.run("config", "shop", &["SET", "log", "1"]);
    let arch = Archiver::start(r, db_url, "shop").await;
    r.push(
        "shop",
        "{\"sku\":\"A1\",\"note\":\"refund please\"}",
        &["ID", "order-1", "TAG", "created", "KEY", "cust-1", "HEADER", "trace", "t1"],
    );
    r.push("shop", "goodbye", &["ID", "order-2", "TAG", "paid", "KEY", "cust-2"]);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = now_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    r.push_bytes("shop", b"\x00\xffbinary", &["ID", "order-3", "TAG", "created", "KEY", "cust-1"]);
    r.push("shop", "refund for cust-3", &["ID", "order-4", "TAG", "paid", "KEY", "cust-3"]);
    for i in 1..=21 {
        r.push("shop", &format!("bulk {i}"), &["ID", &format!("bulk-{i:02}"), "TAG", "bulk"]);
    }
    let (id, receipt) = fetch_one(r, "shop");
    assert_eq!(id, "order-1");
    assert_eq!(r.run("ack", "shop", &[&receipt]), Value::Int(1));
    assert_eq!(r.fail_one("shop", "FAIL", "card declined"), "order-2");
    caught_up(r, "shop").await;
    (arch, between)
}

fn archive_args(db_url: &str) -> (rmq_console::ConsoleArgs, tempfile::TempDir) {
    let (mut a, dir) = common::args();
    a.archive.archive_db = Some(db_url.to_string());
    (a, dir)
}

/// The ids of a search result page, in order.
fn ids(html: &str) -> Vec<String> {
    rows(html, "table.archive").into_iter().filter(|r| r.len() > 1).map(|r| r[1].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_history_and_replay_from_the_archive_page() {
    let r = Redis::start(Ed::Module);
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("archive.db").display());
    let (_arch, between) = fill(&r, &db_url).await;
    let (a, d) = archive_args(&db_url);
    let c = Console::start(&r, a, d).await;

    // The menu names the page; the page lists the archived queue with its lag and gaps.
    let overview = c.get("/", 200).await;
    assert!(texts(&overview, "header nav a").contains(&"Archive".to_string()));
    let list = c.get("/archive", 200).await;
    let shop = rows(&list, "table.archived").into_iter().find(|row| row[0] == "shop").expect("shop is listed");
    assert_eq!((shop[2].as_str(), shop[3].as_str(), shop[4].as_str()), ("0", "0", "0"), "lag, gaps, entries lost: {shop:?}");
    assert!(shop[1].replace(',', "").parse::<u64>().unwrap() >= 29, "entries saved: {shop:?}");

    // Search by each criterion.
    let search = |q: String| {
        let c = &c;
        async move { ids(&c.get(&format!("/archive?queue=shop{q}"), 200).await) }
    };
    assert_eq!(search("&id=order-2".into()).await, ["order-2"]);
    assert_eq!(search("&key=cust-1".into()).await, ["order-1", "order-3"]);
    assert_eq!(search("&tag=paid".into()).await, ["order-2", "order-4"]);
    assert_eq!(search("&status=failed".into()).await, ["order-2"]);
    assert_eq!(search("&status=acked&status=failed".into()).await, ["order-1", "order-2"]);
    assert_eq!(search(format!("&since={between}&tag=created")).await, ["order-3"]);
    assert_eq!(search(format!("&until={between}")).await, ["order-1", "order-2"]);
    assert_eq!(search("&body=refund".into()).await, ["order-1", "order-4"]);
    assert_eq!(search("&from_offset=2&to_offset=3".into()).await, ["order-2", "order-3"]);
    // The row shows what the archive knows.
    let failed = c.get("/archive?queue=shop&status=failed", 200).await;
    let row = &rows(&failed, "table.archive")[0];
    assert_eq!((row[2].as_str(), row[7].as_str(), row[8].as_str()), ("failed", "card declined", "goodbye"), "{row:?}");
    // Paged by offset: 25 messages, 20 a page.
    let p1 = c.get("/archive?queue=shop&size=20", 200).await;
    assert_eq!(ids(&p1).len(), 20);
    let doc = scraper::Html::parse_document(&p1);
    let next = doc
        .select(&scraper::Selector::parse("nav.pager a").unwrap())
        .find(|a| a.text().collect::<String>().contains("next"))
        .expect("a next page")
        .value()
        .attr("href")
        .unwrap()
        .to_string();
    let p2 = c.get(&next, 200).await;
    assert_eq!(ids(&p2), ["bulk-17", "bulk-18", "bulk-19", "bulk-20", "bulk-21"]);
    assert!(!texts(&p2, "nav.pager a").iter().any(|t| t.contains("next")));
    // A bad criterion says what is wrong.
    let bad = c.get("/archive?queue=shop&status=lost", 400).await;
    assert!(texts(&bad, "p.error")[0].contains("is not one of"), "{bad}");
    c.get("/archive?queue=shop&since=whenever", 400).await;

    // A message's history: its fields, body and every log entry in order.
    let m = c.get("/archive/messages/order-2?queue=shop", 200).await;
    let fields = texts(&m, "table.fields tr");
    assert!(fields.contains(&"Status failed".to_string()) && fields.contains(&"Last error card declined".to_string()), "{fields:?}");
    let events: Vec<String> = rows(&m, "table.history").into_iter().map(|r| r[2].clone()).collect();
    assert_eq!(events, ["push", "fetch", "fail"]);
    let acked = c.get("/archive/messages/order-1?queue=shop&offset=1", 200).await;
    assert_eq!(rows(&acked, "table.history").into_iter().map(|r| r[2].clone()).collect::<Vec<_>>(), ["push", "fetch", "ack"]);
    assert!(rows(&acked, "table.history")[1][4] == "billing", "the consumer of the fetch");
    assert!(texts(&acked, "pre.body")[0].contains("\"note\": \"refund please\""), "pretty JSON");
    assert!(texts(&acked, "table.fields tr").contains(&"trace t1".to_string()), "headers");
    let bin = c.get("/archive/messages/order-3?queue=shop", 200).await;
    assert_eq!(texts(&bin, "nav.tabs.small a.on"), ["Hex"]);
    c.get("/archive/messages/nope?queue=shop", 404).await;
    c.get("/archive/messages/order-2", 400).await;
    // The live message page links to its history.
    let live = c.get("/queues/shop/find?id=order-3", 200).await;
    assert!(live.contains("/archive/messages/order-3?queue=shop&amp;offset=3"), "link to the archive");

    // Replay: refused without the form token, or from another site.
    let csrf = c.csrf().await;
    let ready_before = r.stats("shop")["ready"];
    assert_eq!(c.post("/archive/replay", &[("queue", "shop"), ("status", "failed"), ("confirmed", "1")]).await.0, 403);
    let from_evil = c
        .http
        .post(c.url("/archive/replay"))
        .header("Origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str()), ("queue", "shop"), ("status", "failed"), ("confirmed", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(from_evil.status().as_u16(), 403);
    c.get("/archive/replay?queue=shop&status=failed&confirmed=1", 405).await;
    // Confirmed with its count; nothing is pushed before.
    let form = [("csrf", csrf.as_str()), ("queue", "shop"), ("status", "failed")];
    let (s, _, confirm) = c.post("/archive/replay", &form).await;
    assert_eq!(s, 200);
    assert!(texts(&confirm, "p.confirm")[0].starts_with("Replay 1 archived message of shop to shop"), "{confirm}");
    assert_eq!(r.stats("shop")["ready"], ready_before, "nothing is pushed before the confirmation");
    // A count that no longer holds asks again.
    let (s, _, again) = c.post("/archive/replay", &[("csrf", &csrf), ("queue", "shop"), ("status", "failed"), ("confirmed", "7")]).await;
    assert_eq!(s, 200);
    assert!(texts(&again, "div.banner.bad")[0].contains("changed"), "{again}");
    assert_eq!(r.stats("shop")["ready"], ready_before);
    // Confirmed: the copy is in the queue again, with its body and the replay-of headers.
    let done = c.act("/archive/replay", &form).await;
    assert!(texts(&done, "div.banner.good")[0].starts_with("Replay: 1 message"), "{done}");
    assert_eq!(r.stats("shop")["ready"], ready_before + 1, "RMQ.STATS counts the copy");
    let newest = r.run("peek", "shop", &["READY", "START", &ready_before.to_string(), "COUNT", "1"]);
    let copy = rmq_console::reply::messages(newest).unwrap().pop().expect("the copy");
    assert_eq!(copy.body, b"goodbye");
    assert_eq!((copy.tag.as_str(), copy.key.as_str()), ("paid", "cust-2"));
    assert!(copy.headers.contains(&("replay-of".to_string(), "order-2".to_string())), "{:?}", copy.headers);
    // The same replay again pushes nothing twice (within the dedup window).
    c.act("/archive/replay", &form).await;
    assert_eq!(r.stats("shop")["ready"], ready_before + 1);
    // To another queue: the binary one too.
    c.act("/archive/replay", &[("csrf", &csrf), ("queue", "shop"), ("key", "cust-1"), ("to", "shop-retry")]).await;
    assert_eq!(r.stats("shop-retry")["ready"], 2);
    let bodies: Vec<Vec<u8>> =
        rmq_console::reply::messages(r.run("peek", "shop-retry", &["READY", "COUNT", "10"])).unwrap().into_iter().map(|m| m.body).collect();
    assert!(bodies.contains(&b"\x00\xffbinary".to_vec()), "binary bodies are replayed byte for byte");
    // From the message page.
    c.act(
        "/archive/replay",
        &[("csrf", &csrf), ("queue", "shop"), ("id", "order-4"), ("from_offset", "4"), ("to_offset", "4"), ("to", "shop-retry")],
    )
    .await;
    assert_eq!(r.stats("shop-retry")["ready"], 3);
    // Nothing to replay, and a bad target, are refused.
    assert_eq!(c.post("/archive/replay", &[("csrf", &csrf), ("queue", "shop"), ("id", "nope")]).await.0, 400);
    assert_eq!(c.post("/archive/replay", &[("csrf", &csrf), ("queue", "shop"), ("to", "bad name")]).await.0, 400);

    // The audit log: who replayed what, confirmed and changed.
    let file = std::fs::read_to_string(&c.audit).unwrap();
    let entries: Vec<serde_json::Value> = file.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 4);
    let first = &entries[0];
    assert_eq!(
        (first["action"].as_str(), first["queue"].as_str(), first["who"].as_str()),
        (Some("replay"), Some("shop"), Some("anonymous"))
    );
    assert_eq!((first["confirmed"].as_u64(), first["affected"].as_u64()), (Some(1), Some(1)));
    assert_eq!(first["ids"], serde_json::json!(["order-2"]));
    assert!(first["detail"].as_str().unwrap().contains("status=failed"), "{first}");
    assert_eq!(entries[1]["affected"].as_u64(), Some(0), "the second run pushed nothing: {}", entries[1]);
    assert_eq!(entries[2]["affected"].as_u64(), Some(2));
    let audit = c.get("/audit", 200).await;
    assert_eq!(rows(&audit, "table.audit").iter().filter(|e| e[3] == "replay").count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_console_shows_the_archive_and_refuses_replay() {
    let r = Redis::start(Ed::Module);
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("archive.db").display());
    let (_arch, _) = fill(&r, &db_url).await;
    let (mut a, d) = archive_args(&db_url);
    a.read_only = true;
    let c = Console::start(&r, a, d).await;
    let page = c.get("/archive?queue=shop&status=failed", 200).await;
    assert_eq!(ids(&page), ["order-2"]);
    assert!(texts(&page, "form[method=post]").is_empty(), "no replay form");
    let m = c.get("/archive/messages/order-2?queue=shop", 200).await;
    assert!(texts(&m, "form[method=post]").is_empty());
    let ready = r.stats("shop")["ready"];
    let (s, _, _) = c.post("/archive/replay", &[("queue", "shop"), ("status", "failed"), ("confirmed", "1")]).await;
    assert_eq!(s, 403);
    assert_eq!(r.stats("shop")["ready"], ready);
    assert!(!c.audit.exists());

    // Without --archive-db there is no archive page and no menu entry.
    let (a, d) = common::args();
    let plain = Console::start(&r, a, d).await;
    plain.get("/archive", 404).await;
    assert!(!texts(&plain.get("/", 200).await, "header nav a").contains(&"Archive".to_string()));
    // A database that holds no archive is refused at start, saying so.
    let backend: Arc<dyn rmq_console::Backend> = Arc::new(r.client());
    let (mut a, _d) = common::args();
    a.archive.archive_db = Some(format!("sqlite://{}", dir.path().join("missing.db").display()));
    let err = rmq_console::start_console(backend, &a).await.err().expect("refused");
    assert!(err.to_string().contains("--archive-db") && err.to_string().contains("missing.db"), "{err}");
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// The value of `name{queue=q}` (None: no such sample), and whether it is a counter.
fn metric(s: &prometheus_parse::Scrape, name: &str, q: Option<&str>) -> Option<(f64, bool)> {
    s.samples.iter().find(|x| x.metric == name && q.is_none_or(|q| x.labels.get("queue") == Some(q))).map(|x| match x.value {
        prometheus_parse::Value::Counter(v) => (v, true),
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => (v, false),
        _ => panic!("{name} is not a plain value"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_archive_lag_and_gaps() {
    let r = Redis::start(Ed::Module);
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("archive.db").display());
    let (mut arch, _) = fill(&r, &db_url).await;
    let (a, d) = archive_args(&db_url);
    let c = Console::start(&r, a, d).await;
    let s = scrape(&c.get("/metrics", 200).await);
    assert_eq!(metric(&s, "rmq_archive_up", None), Some((1.0, false)));
    assert_eq!(metric(&s, "rmq_archive_lag_entries", Some("shop")), Some((0.0, false)));
    assert_eq!(metric(&s, "rmq_archive_gaps_total", Some("shop")), Some((0.0, true)));
    assert_eq!(metric(&s, "rmq_archive_lost_entries_total", Some("shop")), Some((0.0, true)));
    assert_eq!(metric(&s, "rmq_scrape_round_trips", None), Some((2.0, false)), "the archive's read runs beside the queues'");
    for x in &s.samples {
        assert_eq!(matches!(x.value, prometheus_parse::Value::Counter(_)), x.metric.ends_with("_total"), "{}", x.metric);
        assert!(s.docs.contains_key(&x.metric), "HELP of {}", x.metric);
    }

    // The archive alerts of the example rules use only these families.
    let given: std::collections::BTreeSet<&str> = s.samples.iter().map(|x| x.metric.as_str()).collect();
    let rules = std::fs::read_to_string(common::root().join("docs/rmq-alerts.yml")).unwrap();
    let used: std::collections::BTreeSet<String> = rules
        .match_indices("rmq_archive_")
        .map(|(i, _)| rules[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect())
        .collect();
    assert!(used.len() >= 3, "the rules alert on the archive: {used:?}");
    for name in &used {
        assert!(given.contains(name.as_str()), "docs/rmq-alerts.yml uses {name}, which the exporter does not give");
    }

    // The archiver stopped: 5 pushes wait in the log, as `rmq archive status` counts them.
    arch.stop().await;
    for i in 0..5 {
        r.push("shop", &format!("late {i}"), &[]);
    }
    let s = scrape(&c.get("/metrics", 200).await);
    assert_eq!(metric(&s, "rmq_archive_lag_entries", Some("shop")), Some((5.0, false)));
    let db = Db::open(&db_url, false).await.unwrap();
    let backend: Arc<dyn rmq_console::Backend> = Arc::new(r.client());
    let st = rmq_archive::status::status(&db, Some(&Source::new(backend, "rmq-archive", "test"))).await.unwrap();
    assert_eq!(st.iter().find(|q| q.queue == "shop").unwrap().lag, Some(5), "the same as rmq archive status");

    // 50 more into a log of 10 while it is stopped: 45 entries are gone before it reads them.
    r.run("config", "shop", &["SET", "log-maxlen", "10"]);
    for i in 0..50 {
        r.push("shop", &format!("lost {i}"), &[]);
    }
    let _arch = Archiver::start(&r, &db_url, "shop").await;
    caught_up(&r, "shop").await;
    eventually(Duration::from_secs(60), "the gap is counted", async || {
        let s = scrape(&c.get("/metrics", 200).await);
        metric(&s, "rmq_archive_gaps_total", Some("shop")) == Some((1.0, true))
    })
    .await;
    let s = scrape(&c.get("/metrics", 200).await);
    assert_eq!(metric(&s, "rmq_archive_lost_entries_total", Some("shop")), Some((45.0, true)));
    assert_eq!(metric(&s, "rmq_archive_lag_entries", Some("shop")), Some((0.0, false)));
    let list = c.get("/archive", 200).await;
    let shop = rows(&list, "table.archived").into_iter().find(|row| row[0] == "shop").unwrap();
    assert_eq!((shop[3].as_str(), shop[4].as_str()), ("1", "45"), "{shop:?}");
    assert!(shop[6].contains("45 log entries were trimmed"), "{shop:?}");

    // `rmq metrics --archive-db` gives the same families.
    let backend: Arc<dyn rmq_console::Backend> = Arc::new(r.client());
    let mut m = rmq_console::MetricsArgs::new("127.0.0.1:0");
    m.archive.archive_db = Some(db_url.clone());
    let exporter = rmq_console::start_metrics(backend, &m).await.unwrap();
    let text = common::http().get(format!("http://{}/metrics", exporter.addr())).send().await.unwrap().text().await.unwrap();
    let e = scrape(&text);
    assert_eq!(metric(&e, "rmq_archive_gaps_total", Some("shop")), Some((1.0, true)));
    assert_eq!(metric(&e, "rmq_archive_lag_entries", Some("shop")), Some((0.0, false)));
    exporter.stop().await.unwrap();
    drop(db);
}
