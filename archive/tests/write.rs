//! One batch → one transaction (`write::apply`), on every backend (SQLite in a temp file,
//! PostgreSQL and MariaDB started by the test): a batch written twice changes nothing, an
//! older event that comes after a newer one does not take the row back, and every column
//! reads back as written (text that needs quoting, NULLs, binary bodies, headers).

use rmq_archive::event::{LogEvent, Payload, StreamId};
use rmq_archive::store::{self, Message, EVENTS, MESSAGES};
use rmq_archive::testdb::{DbServer, Kind};
use rmq_archive::write::{self, Batch, Entry, Item};
use rmq_archive::Db;

const T0: i64 = 1_764_669_600_000;

fn ev(offset: i64, seq: i64, event: &str) -> LogEvent {
    LogEvent {
        pos: StreamId::new(T0, seq),
        offset,
        event: event.into(),
        id: format!("m{offset}"),
        time_ms: T0 + seq,
        consumer: (event == "fetch").then(|| "worker \"1\", {a\\b}".to_string()),
        attempt: (event == "fetch").then_some(1),
        deadline_ms: (event == "fetch").then_some(T0 + 30_000 + seq),
        due_ms: None,
        error: (event == "fail").then(|| "it's \"bad\"\\n, {x}".to_string()),
        payload: (event == "push").then(|| Payload {
            body: if offset % 2 == 0 { b"\x00\xffbinary".to_vec() } else { format!("body, \"{offset}\" {{}} \\").into_bytes() },
            tag: "t,\"1\"".into(),
            key: format!("k{offset}"),
            headers: vec![("trace".into(), "a\"b".into())],
        }),
    }
}

fn batch(events: Vec<LogEvent>) -> Batch {
    let mut b = Batch::default();
    for e in events {
        b.push(Entry { queue: "q,1".into(), pos: e.pos, item: Item::Event(Box::new(e)) });
    }
    b
}

async fn rows(db: &Db) -> Vec<Message> {
    let sql = format!("SELECT {} FROM {MESSAGES} ORDER BY {}", store::message_select(db.backend), db.backend.col("offset"));
    let recs = rmq_archive::sqlx::query(rmq_archive::sqlx::AssertSqlSafe(sql)).fetch_all(&db.pool).await.unwrap();
    recs.iter().map(|r| store::message_from(r).unwrap()).collect()
}

async fn event_count(db: &Db) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {EVENTS}");
    let (n,): (i64,) = rmq_archive::sqlx::query_as(rmq_archive::sqlx::AssertSqlSafe(sql)).fetch_one(&db.pool).await.unwrap();
    n
}

fn show(m: &[Message]) -> Vec<String> {
    m.iter().map(|m| serde_json::to_string(m).unwrap()).collect()
}

async fn check(url: &str) {
    let db = Db::open(url, true).await.unwrap();
    db.migrate().await.unwrap();

    // 1: pushed, fetched, failed. 2: pushed, fetched. 3: pushed only.
    let first = batch(vec![ev(1, 0, "push"), ev(2, 1, "push"), ev(3, 2, "push"), ev(1, 3, "fetch"), ev(2, 4, "fetch"), ev(1, 5, "fail")]);
    let out = write::apply(&db, &first).await.unwrap();
    assert_eq!((out.events, out.rows), (6, 3));
    let after_first = rows(&db).await;
    assert_eq!(event_count(&db).await, 6);
    let m: Vec<(&str, &str)> = after_first.iter().map(|m| (m.id.as_str(), m.status.as_str())).collect();
    assert_eq!(m, [("m1", "failed"), ("m2", "inflight"), ("m3", "ready")]);
    let one = &after_first[0];
    assert_eq!(one.body.as_deref(), Some("body, \"1\" {} \\"));
    assert_eq!(one.body_encoding.as_deref(), Some("text"));
    assert_eq!(one.tag, "t,\"1\"");
    assert_eq!(one.headers, [("trace".to_string(), "a\"b".to_string())]);
    assert_eq!(one.consumer.as_deref(), Some("worker \"1\", {a\\b}"));
    assert_eq!(one.error.as_deref(), Some("it's \"bad\"\\n, {x}"));
    assert_eq!((one.attempts, one.deliveries), (1, 1));
    assert_eq!(one.deadline_time, None, "a fail ends the delivery");
    assert_eq!(after_first[1].body_bytes().unwrap().unwrap(), b"\x00\xffbinary");
    assert_eq!(after_first[1].deadline_time.as_deref(), Some(rmq_archive::when::format_ms(T0 + 30_004).as_str()));
    assert_eq!(after_first[2].consumer, None);
    assert_eq!(after_first[2].create_ms, T0 + 2);

    // The same batch again (read twice, or written and not acknowledged): nothing changes.
    write::apply(&db, &first).await.unwrap();
    assert_eq!(show(&rows(&db).await), show(&after_first));
    assert_eq!(event_count(&db).await, 6);

    // 2 is acked (a newer event); then its fetch comes again and, older than the ack, does
    // not take it back to inflight; 3's fetch, newer than its row, applies.
    write::apply(&db, &batch(vec![ev(2, 7, "ack")])).await.unwrap();
    write::apply(&db, &batch(vec![ev(2, 4, "fetch"), ev(3, 6, "fetch")])).await.unwrap();
    let now = rows(&db).await;
    let m: Vec<(&str, &str)> = now.iter().map(|m| (m.id.as_str(), m.status.as_str())).collect();
    assert_eq!(m, [("m1", "failed"), ("m2", "acked"), ("m3", "inflight")]);
    assert_eq!(now[1].deliveries, 1, "the fetch of 2 counts once");
    assert_eq!(now[1].body_bytes().unwrap().unwrap(), b"\x00\xffbinary", "a state-only write keeps the message");
    assert_eq!(now[2].tag, "t,\"1\"");
    assert_eq!(event_count(&db).await, 8);

    // An older event arriving alone after the row moved on (another archiver's late batch):
    // the row is rebuilt from all its events and stays where the newest one put it.
    write::apply(&db, &batch(vec![ev(3, 2, "push"), ev(2, 1, "push")])).await.unwrap();
    assert_eq!(show(&rows(&db).await), show(&now));
    assert_eq!(event_count(&db).await, 8);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(check(&format!("sqlite://{}", dir.path().join("a.db").display())));
}

#[test]
fn postgres() {
    let s = DbServer::start(Kind::Postgres, false).unwrap();
    rt().block_on(check(&s.url()));
}

#[test]
fn mariadb() {
    let s = DbServer::start(Kind::MariaDb, false).unwrap();
    rt().block_on(check(&s.url()));
}
