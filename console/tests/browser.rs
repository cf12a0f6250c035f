//! The console in a real browser: headless Chromium driven over WebDriver (chromedriver), against
//! a real redis-server with the module. An operator opens the overview, goes to a queue, opens
//! a failed message, requeues it (with the confirmation), and pauses the queue; the test checks
//! with RMQ.STATS and FETCH that Redis did what the page said; then, on the Archive page (the
//! queue is archived into SQLite by the real archiver), searches the errored messages and opens
//! one's history. It also takes the screenshots of docs/console.md (written to
//! target/console-screenshots/, and to $RMQ_CONSOLE_SCREENSHOTS when set).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::archive::{caught_up, Archiver};
use common::{Console, Ed, Redis};
use fantoccini::{Client, ClientBuilder, Locator};
use redis::Value;
use rmq_client::{Fetch, Push};

/// chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = common::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver could not be started: install Debian's chromium and chromium-driver (make test does)");
        let mut d = Driver { child, port };
        let end = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!("chromedriver exited at start ({status})");
            }
            assert!(Instant::now() < end, "chromedriver did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium with a fresh profile, no network of its own, no sandbox (root in CI).
async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,960",
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

async fn find(b: &Client, css: &str) -> fantoccini::elements::Element {
    b.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Clicks the link with that text.
async fn click_link(b: &Client, text: &str) {
    click(b, Locator::LinkText(text)).await
}

/// Clicks the element. Pages re-render their live parts while they are open, so an element
/// found just before a refresh may be gone by the click: it is found again then.
async fn click(b: &Client, what: Locator<'_>) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let clicked = match b.find(what).await {
            Ok(e) => e.click().await.is_ok(),
            Err(_) => false,
        };
        if clicked {
            return;
        }
        assert!(Instant::now() < end, "nothing to click at {what:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The element's text. Pages re-render their live parts while they are open, so an element
/// found just before a refresh may be gone when its text is read: it is found again then.
async fn text_of(b: &Client, css: &str) -> String {
    text_until(b, css, css, |_| true).await
}

/// Waits until the element's text satisfies `f`.
async fn text_until(b: &Client, css: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if f(&t) {
                    return t;
                }
            }
        }
        assert!(Instant::now() < end, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn save_screenshot(name: &str, png: &[u8]) {
    let mut dirs = vec![common::root().join("target/console-screenshots")];
    if let Ok(d) = std::env::var("RMQ_CONSOLE_SCREENSHOTS") {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), png).unwrap();
    }
}

/// Producers and consumers at work, so the charts and rates have something to show: `rounds`
/// of pushes and acks 0.4 s apart, the load rising and falling.
async fn traffic(r: &Redis, rounds: u32) {
    let c = r.client();
    for round in 0..rounds {
        let wave = 1.0 + (round as f64 / 6.0).sin() * 0.6;
        for (q, base) in [("orders", 40.0), ("emails", 25.0), ("invoices", 10.0)] {
            let n = (base * wave) as u32 + 6;
            for i in 0..n {
                let body = format!("{{\"order\":{},\"sku\":\"A-{i}\",\"qty\":{}}}", round * 100 + i, 1 + i % 3);
                c.push(&Push::new(q, body).tag("created").header("trace", format!("t{round}-{i}"))).await.unwrap();
            }
            let got = c.fetch(q, &Fetch { count: Some(n - 5), ..Default::default() }).await.unwrap();
            let receipts: Vec<&str> = got.iter().map(|m| m.receipt.as_str()).collect();
            c.ack(q, &receipts).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// Rounds of traffic: a longer run when the screenshots for the docs are taken.
fn rounds() -> u32 {
    if std::env::var("RMQ_CONSOLE_SCREENSHOTS").is_ok() {
        120
    } else {
        15
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_requeues_a_failed_message_and_pauses_a_queue_in_chromium() {
    let r = Redis::start(Ed::Module);
    // The orders queue is archived from its first message.
    let archive_dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", archive_dir.path().join("archive.db").display());
    r.run("config", "orders", &["SET", "log", "1"]);
    rmq_archive::Db::open(&db_url, true).await.unwrap().migrate().await.unwrap();
    let _archiver = Archiver::start(&r, &db_url, "orders").await;
    let (mut args, dir) = common::args();
    args.refresh = 500;
    args.history = 1;
    args.stall_after = 8;
    args.archive.archive_db = Some(db_url.clone());
    let console = Console::start(&r, args, dir).await;
    // A queue nobody consumes (flagged stalled once no ack was seen for 8 s).
    for i in 0..12 {
        r.push("reports", &format!("{{\"report\":{i}}}"), &[]);
    }
    // One failed message with its reason and one errored, then traffic, then two in flight.
    r.push("orders", "{\"order\":4711,\"sku\":\"B-7\",\"card\":\"declined\"}", &["ID", "order-4711", "TAG", "charge", "KEY", "cust-42"]);
    assert_eq!(r.fail_one("orders", "FAIL", "payment declined: card expired"), "order-4711");
    r.push("orders", "{\"order\":4712}", &["ID", "order-4712"]);
    assert_eq!(r.fail_one("orders", "ERROR", "address missing"), "order-4712");
    traffic(&r, rounds()).await;
    r.run("fetch", "orders", &["COUNT", "2", "CONSUMER", "worker-3"]);
    r.push("emails", "{\"to\":\"ann@example.com\"}", &["DELAY", "600000"]);
    r.run("config", "invoices", &["SET", "paused", "1"]);

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let b = browser(&driver, profile.path()).await;

    // The overview lists every queue; its figures refresh by themselves.
    b.goto(&console.url("/")).await.unwrap();
    find(&b, "table.queues").await;
    // Rows by name: emails, invoices, orders, reports.
    let orders_ready = "table.queues tbody tr:nth-child(3) td:nth-child(2)";
    assert_eq!(text_of(&b, "table.queues tbody tr:nth-child(3) td.name").await, "orders");
    let before = text_of(&b, orders_ready).await;
    let before_n: u64 = before.replace(',', "").parse().unwrap();
    for i in 0..7 {
        r.push("orders", &format!("{{\"late\":{i}}}"), &[]);
    }
    text_until(&b, orders_ready, "the overview updates itself", |t| t.replace(',', "").parse::<u64>() == Ok(before_n + 7)).await;
    text_until(&b, "table.queues tbody tr:nth-child(4) td:last-child", "a queue nobody consumes is flagged", |t| t.starts_with("stalled"))
        .await;
    text_until(&b, "table.queues tbody tr:nth-child(2) td:last-child", "a paused queue is shown", |t| t == "paused").await;
    save_screenshot("console-overview.png", &b.screenshot().await.unwrap());

    // To the queue, its failed tab, the message.
    click_link(&b, "orders").await;
    find(&b, "nav.tabs").await;
    click(&b, Locator::Css("nav.tabs a[href*='state=failed']")).await;
    assert!(text_of(&b, "table.messages tbody tr").await.contains("payment declined"));
    save_screenshot("console-queue.png", &b.screenshot().await.unwrap());
    click(&b, Locator::LinkText("order-4711")).await;
    let fields = text_of(&b, "table.fields").await;
    assert!(fields.contains("payment declined: card expired") && fields.contains("cust-42"), "{fields}");
    assert!(text_of(&b, "pre.body").await.contains("\"card\": \"declined\""), "pretty JSON");
    save_screenshot("console-message.png", &b.screenshot().await.unwrap());

    // Requeue, confirm, and Redis moved it.
    let failed_before = r.stats("orders")["failed"];
    let ready_before = r.stats("orders")["ready"];
    click(&b, Locator::Css("button.primary")).await;
    let confirm = text_of(&b, "p.confirm").await;
    assert!(confirm.starts_with("Requeue 1 message"), "{confirm}");
    assert_eq!(r.stats("orders")["failed"], failed_before, "nothing moves before the confirmation");
    click(&b, Locator::Css("button.danger.big")).await;
    let notice = text_of(&b, "div.banner.good").await;
    assert!(notice.starts_with("Requeue: 1 message"), "{notice}");
    let st = r.stats("orders");
    assert_eq!((st["failed"], st["ready"]), (failed_before - 1, ready_before + 1), "RMQ.STATS shows the move");

    // Pause from the page: FETCH hands out nothing; PUSH still works.
    click(&b, Locator::Css(".qhead button")).await;
    text_until(&b, ".qhead .badge.paused", "the page shows the queue paused", |t| t == "paused").await;
    assert_eq!(r.run("fetch", "orders", &["COUNT", "10"]), Value::Nil, "a paused queue hands out nothing");
    r.push("orders", "still accepted", &[]);
    let fetched = r.client().fetch("orders", &Fetch { block: Some(Duration::from_millis(300)), ..Default::default() }).await.unwrap();
    assert!(fetched.is_empty(), "a blocking FETCH waits while paused");
    // Resume from the page: FETCH hands out again.
    click(&b, Locator::Css(".qhead button.primary")).await;
    find(&b, ".qhead button:not(.primary)").await;
    assert_ne!(r.run("fetch", "orders", &[]), Value::Nil);

    // The audit page shows what the operator did.
    b.goto(&console.url("/audit")).await.unwrap();
    let audit = text_of(&b, "table.audit tbody").await;
    for a in ["requeue", "pause", "resume"] {
        assert!(audit.contains(a), "{audit}");
    }

    // The Archive: search the queue's errored messages, open one's history.
    caught_up(&r, "orders").await;
    click(&b, Locator::LinkText("Archive")).await;
    find(&b, "form.search input[name=queue]").await.send_keys("orders").await.unwrap();
    click(&b, Locator::Css("form.search input[name=status][value=errored]")).await;
    click(&b, Locator::Css("form.search button.primary")).await;
    let row = text_of(&b, "table.archive tbody tr").await;
    assert!(row.contains("order-4712") && row.contains("address missing"), "{row}");
    save_screenshot("console-archive.png", &b.screenshot().await.unwrap());
    click(&b, Locator::LinkText("order-4712")).await;
    let history = text_of(&b, "table.history tbody").await;
    assert!(history.contains("push") && history.contains("error"), "{history}");
    b.close().await.unwrap();
}
