//! One batch → one transaction (`write::apply`), on every backend (SQLite in a temp file,
//! PostgreSQL and MariaDB started by the test): a batch written twice changes nothing, an
//! older event that comes after a newer one does not take the row back, and every column
//! reads back as written (text that needs quoting, NULLs, binary bodies, headers). Then what
//! PostgreSQL's COPY of new rows must survive: any bytes in any column, an entry twice in
//! one batch, batches bigger than one COPY, and queue records behind the tables.

use rmq_archive::event::{self, LogEvent, Payload, StreamId};
use rmq_archive::store::{self, Message, EVENTS, MESSAGES};
use rmq_archive::testdb::{DbServer, Kind};
use rmq_archive::write::{self, Batch, Entry, Item};
use rmq_archive::{Backend, Db};

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

/// A `push` log entry as Redis holds it (raw field bytes), read as the archiver reads it.
fn raw_push(offset: i64, seq: i64, body: &[u8], tag: &[u8], headers: &[(&[u8], &[u8])]) -> LogEvent {
    let mut h = Vec::new();
    rmp::encode::write_array_len(&mut h, 2 * headers.len() as u32).unwrap();
    for (k, v) in headers {
        rmp::encode::write_bin(&mut h, k).unwrap();
        rmp::encode::write_bin(&mut h, v).unwrap();
    }
    let f = |k: &str, v: &[u8]| (k.as_bytes().to_vec(), v.to_vec());
    let fields = vec![
        f("offset", offset.to_string().as_bytes()),
        f("event", b"push"),
        f("id", format!("m{offset}\\t\t\"'").as_bytes()),
        f("time", (T0 + seq).to_string().as_bytes()),
        f("body", body),
        f("tag", tag),
        f("key", b"k\0\xff\\N"),
        f("headers", &h),
    ];
    event::parse(StreamId::new(T0, seq), &fields).unwrap()
}

/// A delivery entry with odd bytes in its text fields.
fn raw_event(offset: i64, seq: i64, name: &str, consumer: &[u8], error: &[u8]) -> LogEvent {
    let f = |k: &str, v: &[u8]| (k.as_bytes().to_vec(), v.to_vec());
    let fields = vec![
        f("offset", offset.to_string().as_bytes()),
        f("event", name.as_bytes()),
        f("id", format!("m{offset}\\t\t\"'").as_bytes()),
        f("time", (T0 + seq).to_string().as_bytes()),
        f("consumer", consumer),
        f("attempt", b"1"),
        f("deadline", (T0 + 30_000).to_string().as_bytes()),
        f("error", error),
    ];
    event::parse(StreamId::new(T0, seq), &fields).unwrap()
}

/// Bytes that every way of sending text must survive: COPY's and array literals' escapes,
/// quotes, braces, control characters, UTF-8 of every length, invalid UTF-8 and NUL (both
/// made U+FFFD in text columns; a body that has them goes as base64).
async fn odd_values(url: &str) {
    let db = Db::open(url, true).await.unwrap();
    db.migrate().await.unwrap();
    let odd: &[u8] = b"tab\\there\tnew\nline\r\\N \\. \"q\" 'a' {x,y} \xe2\x82\xac \xf0\x9f\x98\x80 \x01\x7f";
    let bodies: Vec<Vec<u8>> = vec![
        odd.to_vec(),
        b"\\".to_vec(),
        b"".to_vec(),
        b"not utf-8 \xc3\x28 \xff".to_vec(),
        b"nul \x00 inside".to_vec(),
        "ünïcödé \u{10FFFF}".as_bytes().to_vec(),
        b"\\x41 \\\\ \\\\N".to_vec(),
        b"{\"json\": [1, \"\\u0000\"]}".to_vec(),
    ];
    let mut evs = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let o = i as i64 + 1;
        let headers: [(&[u8], &[u8]); 3] = [(b"t\tab", odd), (b"nul\0", b"\0\xff"), (b"\"\\", b"}{][")];
        evs.push(raw_push(o, 3 * o, body, odd, &headers));
        evs.push(raw_event(o, 3 * o + 1, "fetch", odd, b""));
        evs.push(raw_event(o, 3 * o + 2, "fail", b"c\0\xfe", odd));
    }
    let out = write::apply(&db, &batch(evs.clone())).await.unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    let got = rows(&db).await;
    assert_eq!(got.len(), bodies.len());
    assert_eq!(event_count(&db).await, 3 * bodies.len() as i64);
    let text = event::sql_text(odd);
    for (m, body) in got.iter().zip(&bodies) {
        assert_eq!(&m.body_bytes().unwrap().unwrap(), body, "offset {}", m.offset);
        assert_eq!(m.id, format!("m{}\\t\t\"'", m.offset));
        assert_eq!(m.tag, text);
        assert_eq!(m.key, "k\u{FFFD}\u{FFFD}\\N");
        let mut h = m.headers.clone();
        h.sort();
        let mut want = vec![
            ("t\tab".to_string(), text.clone()),
            ("nul\u{FFFD}".to_string(), "\u{FFFD}\u{FFFD}".to_string()),
            ("\"\\".to_string(), "}{][".to_string()),
        ];
        want.sort();
        assert_eq!(h, want);
        assert_eq!(m.status, "failed");
        assert_eq!(m.consumer.as_deref(), Some(text.as_str()));
        assert_eq!(m.error.as_deref(), Some(text.as_str()));
    }
    // The events read back as written, the odd ones too.
    let back = rmq_archive::search::history(&db, "q,1", 1, 10).await.unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back[1].consumer.as_deref(), Some(text.as_str()));
    assert_eq!(back[1].deadline_ms, Some(T0 + 30_000));
    assert_eq!(back[2].consumer.as_deref(), Some("c\u{FFFD}\u{FFFD}"));
    assert_eq!(back[2].error.as_deref(), Some(text.as_str()));
    // And again: nothing changes.
    write::apply(&db, &batch(evs)).await.unwrap();
    assert_eq!(show(&rows(&db).await), show(&got));
    assert_eq!(event_count(&db).await, 3 * bodies.len() as i64);
}

async fn set_queue_record(db: &Db, set: &str) {
    let mut s = db.sql();
    s.push(&format!("UPDATE redismq_archive_queue SET {set}"));
    s.query().execute(&db.pool).await.unwrap();
}

/// Entries read twice within one batch (a pending entry read again, or claimed), a batch
/// bigger than one statement or COPY, and queue records that lag the tables.
async fn duplicates_big_batches_and_lagging_records(url: &str) {
    let db = Db::open(url, true).await.unwrap();
    db.migrate().await.unwrap();

    // 1 and 2 are in the batch twice: each entry is saved once.
    let twice = batch(vec![ev(1, 0, "push"), ev(2, 1, "push"), ev(1, 0, "push"), ev(1, 2, "fetch"), ev(2, 1, "push"), ev(1, 2, "fetch")]);
    let out = write::apply(&db, &twice).await.unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(event_count(&db).await, 3);
    let m: Vec<(String, i64)> = rows(&db).await.iter().map(|m| (m.status.clone(), m.deliveries)).collect();
    assert_eq!(m, [("inflight".to_string(), 1), ("ready".to_string(), 0)]);

    // 3,000 messages with 4 KiB bodies (12 MB: more than one COPY or statement of 4 MB) and
    // 9,000 events in one batch, two of them stored already.
    let n = 3000i64;
    let mut evs = vec![ev(1, 0, "push"), ev(1, 2, "fetch")];
    for o in 10..10 + n {
        let mut p = ev(o, 10 * o, "push");
        p.payload.as_mut().unwrap().body = vec![b'a' + (o % 26) as u8; 4096];
        evs.push(p);
        evs.push(ev(o, 10 * o + 1, "fetch"));
        evs.push(ev(o, 10 * o + 2, "ack"));
    }
    let big = batch(evs);
    assert!(big.bytes > 12 << 20);
    let out = write::apply(&db, &big).await.unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(out.rows, n as u64 + 1);
    assert_eq!(event_count(&db).await, 3 + 3 * n);
    let all = rows(&db).await;
    assert_eq!(all.len(), 2 + n as usize);
    assert!(all[2..].iter().all(|m| m.status == "acked" && m.body_bytes().unwrap().unwrap().len() == 4096));
    assert_eq!(all.last().unwrap().body_bytes().unwrap().unwrap()[0], b'a' + ((9 + n) % 26) as u8);

    // The queue's record set back (restored from an older backup than the tables, say): its
    // marks of what cannot be stored yet are wrong, and the batch is written all the same,
    // changing nothing (PostgreSQL says that COPY could not be used).
    let said = |out: &write::Outcome| out.warnings.iter().any(|w| w.contains("written without COPY"));
    set_queue_record(&db, "last_log_ms = 0, last_log_seq = 0, max_offset = 0").await;
    let out = write::apply(&db, &big).await.unwrap();
    assert_eq!(said(&out), db.backend == Backend::Postgres, "{:?}", out.warnings);
    assert_eq!(event_count(&db).await, 3 + 3 * n);
    assert_eq!(show(&rows(&db).await), show(&all));
    set_queue_record(&db, "max_offset = 5").await;
    let out = write::apply(&db, &big).await.unwrap();
    assert_eq!(said(&out), db.backend == Backend::Postgres, "{:?}", out.warnings);
    assert_eq!(show(&rows(&db).await), show(&all));

    // New events and rows still go in, next to stored ones.
    let o = n + 20;
    let out = write::apply(&db, &batch(vec![ev(2, 10 * o, "fetch"), ev(o, 10 * o + 1, "push"), ev(o, 10 * o + 2, "fetch")])).await.unwrap();
    assert_eq!(out.warnings, Vec::<String>::new());
    let now = rows(&db).await;
    assert_eq!(now.len(), all.len() + 1);
    assert_eq!((now[1].status.as_str(), now[1].deliveries), ("inflight", 1));
    assert_eq!((now.last().unwrap().status.as_str(), now.last().unwrap().offset), ("inflight", o));
    assert_eq!(event_count(&db).await, 6 + 3 * n);
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

#[test]
fn sqlite_takes_any_bytes_in_any_column() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(odd_values(&format!("sqlite://{}", dir.path().join("a.db").display())));
}

#[test]
fn postgres_takes_any_bytes_in_any_column() {
    let s = DbServer::start(Kind::Postgres, false).unwrap();
    rt().block_on(odd_values(&s.url()));
}

#[test]
fn mariadb_takes_any_bytes_in_any_column() {
    let s = DbServer::start(Kind::MariaDb, false).unwrap();
    rt().block_on(odd_values(&s.url()));
}

#[test]
fn sqlite_saves_each_entry_once_big_batches_whole_and_despite_lagging_records() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(duplicates_big_batches_and_lagging_records(&format!("sqlite://{}", dir.path().join("a.db").display())));
}

#[test]
fn postgres_saves_each_entry_once_big_batches_whole_and_despite_lagging_records() {
    let s = DbServer::start(Kind::Postgres, false).unwrap();
    rt().block_on(duplicates_big_batches_and_lagging_records(&s.url()));
}

#[test]
fn mariadb_saves_each_entry_once_big_batches_whole_and_despite_lagging_records() {
    let s = DbServer::start(Kind::MariaDb, false).unwrap();
    rt().block_on(duplicates_big_batches_and_lagging_records(&s.url()));
}
