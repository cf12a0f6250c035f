//! The console over HTTP against a real redis-server: every page and every action, in both
//! editions (the module, and the Lua library), then authentication, read-only, cross-site
//! refusal, and the metrics parsed by a Prometheus text parser.

mod common;

use std::time::Duration;

use common::{eventually, rows, texts, Console, Ed, Redis};
use redis::Value;

/// A queue with messages in every state: 24 ready (o-4 … o-25 JSON, one binary, one text),
/// one delayed (later-1), one in flight (o-3), one failed (o-1), one errored (o-2); and a queue
/// with an odd name.
fn fill(r: &Redis) {
    for i in 1..=25 {
        let id = format!("o-{i}");
        let body = format!("{{\"n\":{i},\"sku\":\"A{i}\"}}");
        r.push("orders", &body, &["ID", &id, "TAG", "created", "KEY", &format!("cust-{i}"), "HEADER", "trace", &format!("t{i}")]);
    }
    // o-1 failed, o-2 errored, o-3 in flight (FIFO order).
    assert_eq!(r.fail_one("orders", "FAIL", "payment declined"), "o-1");
    assert_eq!(r.fail_one("orders", "ERROR", "bad input"), "o-2");
    r.run("fetch", "orders", &["CONSUMER", "worker-7", "LOCK", "600000"]);
    r.push_bytes("orders", &[0, 1, 0xff, 0xfe, b'b', b'i', b'n'], &["ID", "bin-1"]);
    r.push("orders", "plain words", &["ID", "text-1"]);
    r.push("orders", "{\"later\":true}", &["ID", "later-1", "DELAY", "600000"]);
    r.push("a/b:c#d", "odd name", &["ID", "odd-1"]);
}

fn config_get(r: &Redis, q: &str, name: &str) -> String {
    let v = r.run("config", q, &["GET", name]);
    let p = rmq_console::reply::pairs(v).unwrap();
    rmq_console::reply::as_string(p.into_iter().next().unwrap().1).unwrap()
}

fn fetch_gives_nothing(r: &Redis, q: &str) -> bool {
    matches!(r.run("fetch", q, &[]), Value::Nil) || r.run("fetch", q, &[]) == Value::Array(vec![])
}

/// Every page and action once, on one edition.
async fn tour(ed: Ed) {
    let r = Redis::start(ed);
    fill(&r);
    let c = Console::default(&r).await;

    // Overview: every queue, its counts, a working link even for an odd name.
    let page = c.get("/", 200).await;
    let table = rows(&page, "table.queues");
    let orders = table.iter().find(|row| row[0] == "orders").expect("orders row");
    assert_eq!(&orders[1..6], ["24", "1", "1", "1", "1"], "ready delayed inflight failed errors: {orders:?}");
    assert!(table.iter().any(|row| row[0] == "a/b:c#d"));
    let odd = c.get("/queues/a%2Fb%3Ac%23d", 200).await;
    assert!(texts(&odd, "h1")[0].contains("a/b:c#d"));
    // Sorted and filtered.
    let sorted = c.get("/?sort=ready&desc=1", 200).await;
    assert_eq!(rows(&sorted, "table.queues")[0][0], "orders");
    let filtered = c.get("/?filter=a%2Fb", 200).await;
    assert_eq!(rows(&filtered, "table.queues").iter().map(|r| r[0].clone()).collect::<Vec<_>>(), ["a/b:c#d"]);
    // The live part alone.
    let live = c.get("/live/overview", 200).await;
    assert!(live.contains("table") && !live.contains("<html"));

    // Queue page: tabs with counts, paged PEEK in both orders.
    let q = c.get("/queues/orders", 200).await;
    assert_eq!(texts(&q, "nav.tabs a"), ["Ready 24", "Delayed 1", "In flight 1", "Failed 1", "Errors 1"]);
    let ids = |html: &str| rows(html, "table.messages").into_iter().map(|r| r[1].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&q).len(), 20);
    assert_eq!(ids(&q)[0], "o-4");
    let p2 = c.get("/queues/orders?size=10&page=2", 200).await;
    assert_eq!(ids(&p2), ["o-24", "o-25", "bin-1", "text-1"]);
    let newest = c.get("/queues/orders?order=newest&size=10", 200).await;
    assert_eq!(ids(&newest)[..3], ["text-1", "bin-1", "o-25"]);
    let failed = c.get("/queues/orders?state=failed", 200).await;
    assert_eq!(ids(&failed), ["o-1"]);
    assert!(failed.contains("payment declined"));
    let inflight = c.get("/queues/orders?state=inflight", 200).await;
    assert!(inflight.contains("worker-7") && inflight.contains("left"), "lock and consumer shown");
    let delayed = c.get("/queues/orders?state=delayed", 200).await;
    assert_eq!(ids(&delayed), ["later-1"]);
    assert!(c.get("/live/queues/orders", 200).await.contains("Oldest ready"));

    // Message page: fields, headers, body as pretty JSON, text or hex.
    let m = c.get("/queues/orders/message?state=failed&at=0&id=o-1", 200).await;
    assert!(texts(&m, "table.fields tr").iter().any(|t| t == "Last error payment declined"));
    assert!(texts(&m, "table.fields tr").iter().any(|t| t == "Attempts 1"));
    assert!(texts(&m, "table.fields tr").iter().any(|t| t == "trace t1"), "headers");
    assert!(texts(&m, "pre.body")[0].contains("\"sku\": \"A1\""), "pretty JSON");
    let hex = c.get("/queues/orders/message?state=failed&at=0&id=o-1&view=hex", 200).await;
    assert!(texts(&hex, "pre.body")[0].starts_with("00000000 7b 22 6e 22"), "hex dump");
    let bin = c.get("/queues/orders/message?state=ready&at=22&id=bin-1", 200).await;
    assert!(texts(&bin, "nav.tabs.small a.on")[0] == "Hex", "binary shows as hex");
    let text = c.get("/queues/orders/message?state=ready&at=23&id=text-1", 200).await;
    assert_eq!(texts(&text, "pre.body")[0], "plain words");
    // A stale place is looked for nearby; a message that is gone says so.
    c.get("/queues/orders/message?state=ready&at=15&id=o-10", 200).await;
    c.get("/queues/orders/message?state=ready&at=0&id=nope", 404).await;
    // Find by id, in any state.
    let found = c.get("/queues/orders/find?id=o-2", 200).await;
    assert!(texts(&found, "table.fields tr").iter().any(|t| t == "State Errors"));
    c.get("/queues/orders/find?id=nope", 404).await;

    // Requeue: confirmed with its count, then the message is back in ready.
    let csrf = c.csrf().await;
    let (s, _, confirm) = c.post("/queues/orders/requeue", &[("csrf", &csrf), ("id", "o-1"), ("back", "failed")]).await;
    assert_eq!(s, 200);
    assert!(texts(&confirm, "p.confirm")[0].starts_with("Requeue 1 message"), "{confirm}");
    assert_eq!(r.stats("orders")["failed"], 1, "nothing happens before the confirmation");
    let after = c.act("/queues/orders/requeue", &[("csrf", &csrf), ("id", "o-1"), ("back", "failed")]).await;
    assert!(texts(&after, "div.banner.good")[0].starts_with("Requeue: 1 message"), "{after}");
    let st = r.stats("orders");
    assert_eq!((st["failed"], st["ready"]), (0, 25));

    // Delete two ready messages.
    let (_, _, confirm) = c.post("/queues/orders/delete", &[("csrf", &csrf), ("id", "o-4"), ("id", "o-5")]).await;
    assert!(texts(&confirm, "p.confirm")[0].starts_with("Delete 2 messages"));
    c.act("/queues/orders/delete", &[("csrf", &csrf), ("id", "o-4"), ("id", "o-5")]).await;
    assert_eq!(r.stats("orders")["ready"], 23);

    // Recover errors.
    let (_, _, confirm) = c.post("/queues/orders/recover", &[("csrf", &csrf), ("part", "errors")]).await;
    assert!(texts(&confirm, "p.confirm")[0].contains("1 errors"), "{confirm}");
    c.act("/queues/orders/recover", &[("csrf", &csrf), ("part", "errors")]).await;
    assert_eq!((r.stats("orders")["errors"], r.stats("orders")["ready"]), (0, 24));

    // Purge delayed.
    let (_, _, confirm) = c.post("/queues/orders/purge", &[("csrf", &csrf), ("state", "delayed")]).await;
    assert!(texts(&confirm, "button")[0].contains("1 message"), "{confirm}");
    c.act("/queues/orders/purge", &[("csrf", &csrf), ("state", "delayed")]).await;
    assert_eq!(r.stats("orders")["delayed"], 0);

    // Push a test message (no confirmation).
    let pushed = c
        .act(
            "/queues/orders/push",
            &[("csrf", &csrf), ("body", "{\"test\":1}"), ("tag", "probe"), ("headers", "from=console\n"), ("delay", "")],
        )
        .await;
    assert!(texts(&pushed, "div.banner.good")[0].starts_with("Pushed message "));
    assert_eq!(r.stats("orders")["ready"], 25);

    // Settings: only the changed one is written; a bad value changes nothing and says why.
    let qp = c.get("/queues/orders", 200).await;
    let doc = scraper::Html::parse_document(&qp);
    let sel = scraper::Selector::parse("form[action$='/settings'] input").unwrap();
    let mut form: Vec<(String, String)> =
        doc.select(&sel).map(|e| (e.value().attr("name").unwrap().to_string(), e.value().attr("value").unwrap().to_string())).collect();
    for (k, v) in form.iter_mut() {
        if k == "set.max-attempts" {
            *v = "7".into();
        }
    }
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let done = c.act("/queues/orders/settings", &pairs).await;
    assert!(texts(&done, "div.banner.good")[0].contains("max-attempts=7"), "{done}");
    assert_eq!(config_get(&r, "orders", "max-attempts"), "7");
    let overrides: Vec<String> = redis::cmd("HKEYS").arg("cfg:{orders}").query(&mut r.conn()).unwrap();
    assert_eq!(overrides, ["max-attempts"], "unchanged settings stay defaults");
    let refused = c.act("/queues/orders/settings", &[("csrf", &csrf), ("set.lock-ms", "0"), ("was.lock-ms", "30000")]).await;
    assert!(texts(&refused, "div.banner.bad")[0].contains("lock-ms"), "{refused}");
    assert_eq!(config_get(&r, "orders", "lock-ms"), "30000");

    // Pause: FETCH hands out nothing, the page says so; resume.
    let paused = c.act("/queues/orders/pause", &[("csrf", &csrf)]).await;
    assert!(texts(&paused, ".qhead .badge.paused").len() == 1, "{paused}");
    assert!(texts(&paused, ".qhead button")[0] == "Resume");
    assert_eq!(config_get(&r, "orders", "paused"), "1");
    assert!(fetch_gives_nothing(&r, "orders"));
    eventually(Duration::from_secs(30), "overview shows paused", async || {
        let p = c.get("/", 200).await;
        rows(&p, "table.queues").iter().any(|row| row[0] == "orders" && row[9].contains("paused"))
    })
    .await;
    c.act("/queues/orders/resume", &[("csrf", &csrf)]).await;
    assert_eq!(config_get(&r, "orders", "paused"), "0");
    assert!(!fetch_gives_nothing(&r, "orders"));

    // The audit log: every action, who, what, how many.
    let audit = c.get("/audit", 200).await;
    let entries = rows(&audit, "table.audit");
    let actions: Vec<&str> = entries.iter().map(|e| e[3].as_str()).collect();
    assert_eq!(actions, ["resume", "pause", "settings", "settings", "push", "purge", "recover", "delete", "requeue"]);
    let requeue = entries.last().unwrap();
    assert!(requeue[2].starts_with("anonymous 127.0.0.1:"), "{requeue:?}");
    assert_eq!((requeue[4].as_str(), requeue[5].as_str(), requeue[7].as_str(), requeue[8].as_str()), ("orders", "o-1", "1", "1"));
    assert!(entries[2][9].contains("lock-ms"), "the refused settings are audited with Redis's error");
    let file = std::fs::read_to_string(&c.audit).unwrap();
    assert_eq!(file.lines().count(), 9);

    // Unknown pages and bad requests.
    c.get("/nope", 404).await;
    c.get("/queues/orders/message?state=bogus&id=x", 400).await;
    c.get("/queues/bad%20name", 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_action_with_the_module() {
    tour(Ed::Module).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_action_with_the_lua_edition() {
    tour(Ed::Lua).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_hides_and_refuses_every_action() {
    let r = Redis::start(Ed::Module);
    fill(&r);
    let (mut a, dir) = common::args();
    a.read_only = true;
    let c = Console::start(&r, a, dir).await;
    let page = c.get("/queues/orders?state=failed", 200).await;
    assert!(texts(&page, "form[method=post]").is_empty(), "no action form");
    assert!(texts(&page, "header .badge.ro") == ["read-only"]);
    let m = c.get("/queues/orders/message?state=failed&at=0&id=o-1", 200).await;
    assert!(texts(&m, "form[method=post]").is_empty());
    for action in ["requeue", "delete", "purge", "recover", "push", "settings", "pause", "resume"] {
        let (s, _, _) = c.post(&format!("/queues/orders/{action}"), &[("id", "o-1"), ("state", "failed"), ("confirmed", "1")]).await;
        assert_eq!(s, 403, "{action}");
    }
    assert_eq!(r.stats("orders")["failed"], 1);
    assert!(!c.audit.exists(), "a read-only console writes no audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_actions_are_refused() {
    let r = Redis::start(Ed::Module);
    fill(&r);
    let c = Console::default(&r).await;
    let csrf = c.csrf().await;
    let form = |t: &'static str| vec![("csrf", t), ("id", "o-1"), ("back", "failed"), ("confirmed", "1")];
    // No token, a wrong token.
    assert_eq!(c.post("/queues/orders/requeue", &form("")[1..]).await.0, 403);
    assert_eq!(c.post("/queues/orders/requeue", &form("0000")).await.0, 403);
    // The right token, but the browser says another site sent it.
    let good: Vec<(&str, &str)> = vec![("csrf", &csrf), ("id", "o-1"), ("back", "failed"), ("confirmed", "1")];
    let r1 = c.http.post(c.url("/queues/orders/requeue")).header("Origin", "http://evil.example").form(&good).send().await.unwrap();
    assert_eq!(r1.status().as_u16(), 403);
    let r2 = c.http.post(c.url("/queues/orders/requeue")).header("Sec-Fetch-Site", "cross-site").form(&good).send().await.unwrap();
    assert_eq!(r2.status().as_u16(), 403);
    // A GET never acts.
    c.get("/queues/orders/requeue?id=o-1", 405).await;
    assert_eq!(r.stats("orders")["failed"], 1, "nothing moved");
    // From the console itself it works.
    let origin = c.base.clone();
    let ok = c
        .http
        .post(c.url("/queues/orders/requeue"))
        .header("Origin", origin)
        .header("Sec-Fetch-Site", "same-origin")
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 303);
    assert_eq!(r.stats("orders")["failed"], 0);
    // Pages name no other origin's scripts and cannot be framed.
    let resp = c.http.get(c.url("/")).send().await.unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    // A DNS-rebinding page (another host name pointing at 127.0.0.1) is refused.
    let rebind = c.http.get(c.url("/")).header("Host", "evil.example").send().await.unwrap();
    assert_eq!(rebind.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_needs_authentication() {
    let r = Redis::start(Ed::Module);
    let backend: std::sync::Arc<dyn rmq_console::Backend> = std::sync::Arc::new(r.client());
    let (mut a, _dir) = common::args();
    a.listen = "0.0.0.0:0".into();
    let err = rmq_console::start_console(backend.clone(), &a).await.err().expect("refused without auth");
    assert!(err.to_string().contains("without authentication"), "{err}");
    a.auth = Some("nouser".into());
    assert!(rmq_console::start_console(backend.clone(), &a).await.is_err(), "--auth wants user:password");

    // With --auth and --token: every request must authenticate (tested on loopback: the tests
    // never listen on a public address).
    a.listen = "127.0.0.1:0".into();
    a.auth = Some("ann:s3cret".into());
    a.token = Some("tok-123".into());
    let running = rmq_console::start_console(backend, &a).await.expect("starts with auth");
    let port = running.addr().port();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let http = common::http();
    let none = http.get(url("/")).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    assert!(none.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(http.get(url("/")).basic_auth("ann", Some("wrong")).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(http.get(url("/")).basic_auth("bob", Some("s3cret")).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(http.get(url("/")).basic_auth("ann", Some("s3cret")).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(http.get(url("/metrics")).bearer_auth("tok-123").send().await.unwrap().status().as_u16(), 200);
    assert_eq!(http.get(url("/metrics")).bearer_auth("tok-12").send().await.unwrap().status().as_u16(), 401);
    assert_eq!(http.get(url("/")).basic_auth("anyone", Some("tok-123")).send().await.unwrap().status().as_u16(), 200);
    // With authentication any Host is served (it is no longer only on loopback).
    let other = http.get(url("/")).basic_auth("ann", Some("s3cret")).header("Host", "queues.example:8080").send().await.unwrap();
    assert_eq!(other.status().as_u16(), 200);

    // Actions name the user in the audit log.
    r.push("jobs", "x", &["ID", "j-1"]);
    let page = http.get(url("/queues/jobs")).basic_auth("ann", Some("s3cret")).send().await.unwrap().text().await.unwrap();
    let doc = scraper::Html::parse_document(&page);
    let csrf =
        doc.select(&scraper::Selector::parse("input[name=csrf]").unwrap()).next().unwrap().value().attr("value").unwrap().to_string();
    let resp = http
        .post(url("/queues/jobs/delete"))
        .basic_auth("ann", Some("s3cret"))
        .form(&[("csrf", csrf.as_str()), ("id", "j-1"), ("confirmed", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let audit = std::fs::read_to_string(a.audit_log.as_ref().unwrap()).unwrap();
    let e: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!((e["who"].as_str(), e["action"].as_str(), e["affected"].as_u64()), (Some("ann"), Some("delete"), Some(1)));
    running.stop().await.unwrap();
}

/// The exposition as (metric{labels} → value), parsed by a Prometheus text parser.
fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

fn sample<'a>(s: &'a prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> &'a prometheus_parse::Sample {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{} is not a plain value", s.metric),
    }
}

fn is_counter(s: &prometheus_parse::Sample) -> bool {
    matches!(s.value, prometheus_parse::Value::Counter(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_with_the_servers_counts() {
    let r = Redis::start(Ed::Module);
    fill(&r);
    r.push("orders", "dup", &["ID", "o-9"]); // a duplicate
    r.run("config", "emails", &["SET", "paused", "1"]);
    r.push("emails", "hi", &[]);
    let c = Console::default(&r).await;
    let resp = c.http.get(c.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = resp.text().await.unwrap();
    let s = scrape(&text);
    let st = r.stats("orders");
    for (state, key) in [("ready", "ready"), ("delayed", "delayed"), ("inflight", "inflight"), ("failed", "failed"), ("errors", "errors")] {
        let m = sample(&s, "rmq_queue_messages", &[("queue", "orders"), ("state", state)]);
        assert_eq!(value(m), st[key] as f64, "{state}");
        assert!(!is_counter(m));
    }
    for (metric, key) in [
        ("rmq_queue_pushed_total", "pushed"),
        ("rmq_queue_acked_total", "acked"),
        ("rmq_queue_retried_total", "retried"),
        ("rmq_queue_dead_total", "dead"),
        ("rmq_queue_errored_total", "errored"),
        ("rmq_queue_duplicates_total", "dups"),
    ] {
        let m = sample(&s, metric, &[("queue", "orders")]);
        assert!(is_counter(m), "{metric} is a counter");
        assert_eq!(value(m), st[key] as f64, "{metric}");
    }
    assert_eq!(value(sample(&s, "rmq_queue_duplicates_total", &[("queue", "orders")])), 1.0);
    assert!(value(sample(&s, "rmq_queue_oldest_ready_seconds", &[("queue", "orders")])) >= 0.0);
    assert_eq!(value(sample(&s, "rmq_queue_paused", &[("queue", "emails")])), 1.0);
    assert_eq!(value(sample(&s, "rmq_queue_paused", &[("queue", "orders")])), 0.0);
    assert_eq!(value(sample(&s, "rmq_queue_messages", &[("queue", "a/b:c#d"), ("state", "ready")])), 1.0);
    for g in ["rmq_guard_runs_total", "rmq_guard_reclaimed_total", "rmq_guard_promoted_total"] {
        assert!(is_counter(sample(&s, g, &[])), "{g}");
    }
    assert!(value(sample(&s, "rmq_guard_last_tick_duration_seconds", &[])) >= 0.0);
    assert!(
        value(sample(&s, "rmq_guard_longest_tick_duration_seconds", &[])) >= value(sample(&s, "rmq_guard_last_tick_duration_seconds", &[]))
    );
    assert_eq!(value(sample(&s, "rmq_up", &[])), 1.0);
    assert_eq!(value(sample(&s, "rmq_queues", &[])), 3.0);
    assert_eq!(value(sample(&s, "rmq_scrape_round_trips", &[])), 2.0);
    // Conventions: `_total` exactly on counters; every family has HELP and TYPE.
    for x in &s.samples {
        assert_eq!(is_counter(x), x.metric.ends_with("_total"), "{}", x.metric);
        assert!(s.docs.contains_key(&x.metric), "HELP of {}", x.metric);
    }

    // The headless exporter serves the same families.
    let backend: std::sync::Arc<dyn rmq_console::Backend> = std::sync::Arc::new(r.client());
    let exporter = rmq_console::start_metrics(backend, &rmq_console::MetricsArgs::new("127.0.0.1:0")).await.unwrap();
    let text = common::http().get(format!("http://{}/metrics", exporter.addr())).send().await.unwrap().text().await.unwrap();
    let e = scrape(&text);
    assert_eq!(value(sample(&e, "rmq_queue_messages", &[("queue", "orders"), ("state", "failed")])), st["failed"] as f64);
    exporter.stop().await.unwrap();

    // Redis gone: the scrape still answers, with rmq_up 0.
    drop(r);
    let text = c.get("/metrics", 200).await;
    assert_eq!(value(sample(&scrape(&text), "rmq_up", &[])), 0.0);
    // And the pages say Redis does not answer.
    eventually(Duration::from_secs(60), "the overview reports Redis down", async || c.get("/", 200).await.contains("Reading Redis failed"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_the_lua_edition() {
    let r = Redis::start(Ed::Lua);
    fill(&r);
    let c = Console::default(&r).await;
    let s = scrape(&c.get("/metrics", 200).await);
    assert_eq!(value(sample(&s, "rmq_queue_messages", &[("queue", "orders"), ("state", "failed")])), 1.0);
    assert_eq!(value(sample(&s, "rmq_edition_info", &[("edition", "lua")])), 1.0);
    assert!(!s.samples.iter().any(|x| x.metric.starts_with("rmq_guard")), "the Lua edition has no guard");
}

/// 10,000 queues: the overview pages them, every page and scrape reads Redis in a fixed number
/// of round trips, and a big queue's pages read one page of it.
async fn ten_thousand_queues_and_a_big_queue(ed: Ed) {
    let r = Redis::start(ed);
    let mut con = r.conn();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.add_command(r.cmd("push", &format!("q{i:05}"), &["x"])).ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    // One queue of 200,000 messages (more than the console looks up by id).
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.add_command(r.cmd("push", "big", &[&format!("{{\"n\":{}}}", chunk * 10_000 + i)])).ignore();
        }
        pipe.query::<()>(&mut con).unwrap();
    }
    // A reading every 5 s, as by default (a faster one would keep Redis busy with 20,000
    // commands at every turn).
    let (mut a, dir) = common::args();
    a.refresh = 5000;
    let c = Console::start(&r, a, dir).await;
    let page = c.get("/", 200).await;
    assert_eq!(rows(&page, "table.queues").len(), 100, "a page of queues: {}", &page[..page.len().min(3000)]);
    assert!(texts(&page, "nav.pager span")[0].contains("10,001 queues"));
    let last = c.get("/?page=100", 200).await;
    assert_eq!(rows(&last, "table.queues").len(), 1);
    let sorted = c.get("/?sort=ready&desc=1", 200).await;
    assert_eq!(rows(&sorted, "table.queues")[0][0], "big");
    let s = scrape(&c.get("/metrics", 200).await);
    assert_eq!(value(sample(&s, "rmq_queues", &[])), 10_001.0);
    assert_eq!(value(sample(&s, "rmq_scrape_round_trips", &[])), 2.0);
    assert_eq!(s.samples.iter().filter(|x| x.metric == "rmq_queue_messages").count(), 10_001 * 5);
    // The big queue: the last page, newest first, and a page deep inside.
    let big = c.get("/queues/big?order=newest&size=10", 200).await;
    let ids = rows(&big, "table.messages");
    assert_eq!(ids.len(), 10);
    assert!(ids[0][6].contains("199999"), "{:?}", ids[0]);
    let deep = c.get("/queues/big?page=9000&size=10", 200).await;
    assert!(rows(&deep, "table.messages")[0][6].contains("90000"));
    // Lookup by id: the module reads a big queue in slices, so it looks; the Lua edition would
    // scan it in one call, so it is refused.
    if ed == Ed::Module {
        c.get("/queues/big/find?id=x", 404).await;
    } else {
        let find = c.get("/queues/big/find?id=x", 422).await;
        assert!(find.contains("200,000"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_queues_with_the_module() {
    ten_thousand_queues_and_a_big_queue(Ed::Module).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_queues_with_the_lua_edition() {
    ten_thousand_queues_and_a_big_queue(Ed::Lua).await;
}

/// Every metric the example alert rules and Grafana dashboard in docs/ use is one the exporter
/// gives (`rmq_queue_removed_total` as soon as the server's STATS reports `removed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_and_the_dashboard_use_only_metrics_the_exporter_gives() {
    let r = Redis::start(Ed::Module);
    fill(&r);
    let c = Console::default(&r).await;
    let s = scrape(&c.get("/metrics", 200).await);
    let given: std::collections::BTreeSet<&str> = s.samples.iter().map(|x| x.metric.as_str()).collect();
    let stats_has_removed = r.stats("orders").contains_key("removed");
    for file in ["docs/rmq-alerts.yml", "docs/grafana-rmq.json"] {
        let text = std::fs::read_to_string(common::root().join(file)).unwrap();
        let mut used = std::collections::BTreeSet::new();
        for (i, _) in text.match_indices("rmq_") {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            used.insert(name);
        }
        assert!(used.len() > 5, "{file} names metrics");
        for name in used {
            // The archive's families come with --archive-db (console/tests/archive.rs).
            if name.starts_with("rmq_archive_") || (name == "rmq_queue_removed_total" && !stats_has_removed) {
                continue;
            }
            assert!(given.contains(name.as_str()), "{file} uses {name}, which the exporter does not give");
        }
    }
}
