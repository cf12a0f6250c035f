//! The command contract (docs/commands.md, SPEC.md's precise rules) against a real
//! redis-server. Every scenario takes an [`Edition`]; only the wrappers at the bottom name
//! one, so the same scenarios can run against the module too.

mod common;

use common::{Edition, Server};
use redis::{Connection, RedisResult, Value};
use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------

/// A server of one edition and a RESP2 connection to it.
struct Ctx {
    ed: Edition,
    server: Server,
    c: Connection,
}

impl Ctx {
    fn new(ed: Edition) -> Ctx {
        let server = ed.start();
        let c = server.conn();
        Ctx { ed, server, c }
    }

    fn try_b(&mut self, name: &str, q: &str, args: &[&[u8]]) -> RedisResult<Value> {
        self.ed.cmd(name, q, args).query(&mut self.c)
    }

    fn try_(&mut self, name: &str, q: &str, args: &[&str]) -> RedisResult<Value> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.try_b(name, q, &a)
    }

    /// Runs a command that must succeed.
    fn run(&mut self, name: &str, q: &str, args: &[&str]) -> Value {
        match self.try_(name, q, args) {
            Ok(v) => v,
            Err(e) => panic!("{name} {q} {args:?} failed: {}", err_text(&e)),
        }
    }

    fn int(&mut self, name: &str, q: &str, args: &[&str]) -> i64 {
        int(&self.run(name, q, args))
    }

    fn text(&mut self, name: &str, q: &str, args: &[&str]) -> String {
        text(&self.run(name, q, args))
    }

    /// Runs a command that must fail; gives the whole error text (`ERR …`).
    fn err(&mut self, name: &str, q: &str, args: &[&str]) -> String {
        match self.try_(name, q, args) {
            Ok(v) => panic!("{name} {q} {args:?} should have failed, gave {v:?}"),
            Err(e) => err_text(&e),
        }
    }

    fn push(&mut self, q: &str, body: &str, args: &[&str]) -> String {
        let mut a = vec![body];
        a.extend_from_slice(args);
        self.text("push", q, &a)
    }

    /// FETCH; null becomes an empty vector.
    fn fetch(&mut self, q: &str, args: &[&str]) -> Vec<Msg> {
        msgs(&self.run("fetch", q, args))
    }

    fn fetch1(&mut self, q: &str, args: &[&str]) -> Msg {
        let mut v = self.fetch(q, args);
        assert_eq!(v.len(), 1, "expected one message");
        v.remove(0)
    }

    fn peek(&mut self, q: &str, args: &[&str]) -> Vec<Msg> {
        msgs(&self.run("peek", q, args))
    }

    fn stats(&mut self, q: &str) -> BTreeMap<String, i64> {
        Msg::of(&self.run("stats", q, &[])).0.iter().map(|(k, v)| (k.clone(), int(v))).collect()
    }

    fn stat(&mut self, q: &str, name: &str) -> i64 {
        *self.stats(q).get(name).unwrap_or_else(|| panic!("STATS has no {name}"))
    }

    fn config(&mut self, q: &str, pairs: &[&str]) {
        let mut a = vec!["SET"];
        a.extend_from_slice(pairs);
        assert_eq!(self.run("config", q, &a), Value::Okay);
    }

    /// A plain Redis command.
    fn redis<T: redis::FromRedisValue>(&mut self, args: &[&str]) -> T {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.c).unwrap()
    }

    /// The server's clock in unix ms.
    fn now(&mut self) -> i64 {
        let (s, us): (i64, i64) = redis::cmd("TIME").query(&mut self.c).unwrap();
        s * 1000 + us / 1000
    }

    /// Every key with its DUMP: to check that a refused command changed nothing.
    fn snapshot(&mut self) -> BTreeMap<String, Vec<u8>> {
        let keys: Vec<String> = self.redis(&["KEYS", "*"]);
        keys.into_iter()
            .map(|k| {
                let d: Vec<u8> = self.redis(&["DUMP", &k]);
                (k, d)
            })
            .collect()
    }

    /// Polls FETCH until it gives something, for at most `within`.
    fn fetch_within(&mut self, q: &str, args: &[&str], within: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.fetch(q, args);
            if !got.is_empty() {
                return got;
            }
            assert!(Instant::now() < deadline, "nothing to fetch from {q} within {within:?}");
            sleep(Duration::from_millis(5));
        }
    }
}

fn err_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(c), Some(d)) => format!("{c} {d}"),
        (Some(c), None) => c.to_string(),
        _ => e.to_string(),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("expected an integer reply, got {other:?}"),
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        other => panic!("expected a string reply, got {other:?}"),
    }
}

fn text(v: &Value) -> String {
    String::from_utf8(bytes(v)).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(text).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().map(int).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A map reply (RESP3 map or RESP2 flat array), by field name.
#[derive(Debug, Clone)]
struct Msg(BTreeMap<String, Value>);

impl Msg {
    fn of(v: &Value) -> Msg {
        let mut m = BTreeMap::new();
        match v {
            Value::Map(pairs) => {
                for (k, v) in pairs {
                    assert!(m.insert(text(k), v.clone()).is_none(), "field given twice");
                }
            }
            Value::Array(flat) => {
                assert!(flat.len() % 2 == 0, "odd field-value array {flat:?}");
                for p in flat.chunks(2) {
                    assert!(m.insert(text(&p[0]), p[1].clone()).is_none(), "field given twice");
                }
            }
            other => panic!("expected a map, got {other:?}"),
        }
        Msg(m)
    }
    fn get(&self, f: &str) -> &Value {
        self.0.get(f).unwrap_or_else(|| panic!("no field {f} in {:?}", self.0.keys()))
    }
    fn s(&self, f: &str) -> String {
        text(self.get(f))
    }
    fn b(&self, f: &str) -> Vec<u8> {
        bytes(self.get(f))
    }
    fn i(&self, f: &str) -> i64 {
        int(self.get(f))
    }
    fn fields(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
    fn headers(&self) -> BTreeMap<String, String> {
        Msg::of(self.get("headers")).0.iter().map(|(k, v)| (k.clone(), text(v))).collect()
    }
}

fn msgs(v: &Value) -> Vec<Msg> {
    match v {
        Value::Nil => Vec::new(),
        Value::Array(a) => a.iter().map(Msg::of).collect(),
        other => panic!("expected an array of messages or null, got {other:?}"),
    }
}

fn bodies(m: &[Msg]) -> Vec<String> {
    m.iter().map(|m| m.s("body")).collect()
}

/// A receipt is `<offset>-<deliveries>-<nonce>`, the nonce 12 hex digits.
fn assert_receipt(receipt: &str, offset: u64, deliveries: u64) {
    let prefix = format!("{offset}-{deliveries}-");
    let nonce = receipt.strip_prefix(&prefix).unwrap_or_else(|| panic!("receipt {receipt:?} is not {prefix}<nonce>"));
    assert!(nonce.len() == 12 && nonce.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "nonce of {receipt:?}");
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort();
    v
}

const BASE_FIELDS: [&str; 9] = ["attempt", "body", "created", "headers", "id", "key", "offset", "state", "tag"];

fn with_base(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v: Vec<&str> = BASE_FIELDS.to_vec();
    v.extend_from_slice(extra);
    sorted(v)
}

// ------------------------------------------------------------------------------------
// PUSH, FETCH, ACK
// ------------------------------------------------------------------------------------

fn push_fetch_ack_round_trip_has_all_fields(ed: Edition) {
    let mut t = Ctx::new(ed);
    let before = t.now();
    let body: &[u8] = b"\x00bin\xffary\r\n";
    let id = t
        .try_b(
            "push",
            "jobs",
            &[body, b"ID", b"order-42", b"TAG", b"created", b"KEY", b"cust-7", b"HEADER", b"trace", b"abc", b"HEADER", b"lang", b"fr"],
        )
        .unwrap();
    assert_eq!(text(&id), "order-42");
    let m = t.fetch1("jobs", &["CONSUMER", "worker-1"]);
    let after = t.now();
    assert_eq!(
        sorted(m.fields()),
        sorted(vec!["id", "body", "receipt", "attempt", "tag", "key", "headers", "created", "offset", "deadline"])
    );
    assert_eq!(m.s("id"), "order-42");
    assert_eq!(m.b("body"), body);
    assert_receipt(&m.s("receipt"), 1, 1);
    assert_eq!(m.i("attempt"), 1);
    assert_eq!(m.s("tag"), "created");
    assert_eq!(m.s("key"), "cust-7");
    let h = m.headers();
    assert_eq!(h.len(), 2);
    assert_eq!(h["trace"], "abc");
    assert_eq!(h["lang"], "fr");
    assert!(m.i("created") >= before && m.i("created") <= after);
    assert_eq!(m.i("offset"), 1);
    let lock = m.i("deadline") - m.i("created");
    assert!((30_000..=30_000 + (after - before)).contains(&lock), "default lock-ms is 30000, got {lock}");

    assert_eq!(t.fetch("jobs", &[]).len(), 0, "an in-flight message is invisible");
    assert_eq!(t.int("ack", "jobs", &["1-1"]), 0, "offset and delivery alone are no receipt");
    assert_eq!(t.int("ack", "jobs", &[&m.s("receipt")]), 1);
    assert_eq!(t.int("ack", "jobs", &[&m.s("receipt")]), 0, "a second ACK is stale");
    let st = t.stats("jobs");
    assert_eq!((st["acked"], st["inflight"], st["ready"], st["pushed"]), (1, 0, 0, 1));
    assert_eq!(t.fetch("jobs", &[]).len(), 0);
    let keys: Vec<String> = t.redis(&["KEYS", "*"]);
    assert_eq!(sorted(keys.iter().map(|s| s.as_str()).collect()), vec!["dup:{jobs}", "st:{jobs}"]);
}

fn message_without_tag_key_headers_has_empty_values(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "x", &[]);
    let m = t.fetch1("q", &[]);
    assert_eq!(m.s("tag"), "");
    assert_eq!(m.s("key"), "");
    assert!(m.headers().is_empty());
}

fn server_made_ids_are_created_dash_offset_and_increase(ed: Edition) {
    let mut t = Ctx::new(ed);
    let before = t.now();
    let ids: Vec<String> = (0..3).map(|i| t.push("q", &format!("m{i}"), &[])).collect();
    let after = t.now();
    let mut last = (0i64, 0i64);
    for (i, id) in ids.iter().enumerate() {
        let (ms, off) = id.split_once('-').expect("created-offset");
        assert!(ms.bytes().all(|c| c.is_ascii_digit()) && off.bytes().all(|c| c.is_ascii_digit()), "{id}");
        let (ms, off): (i64, i64) = (ms.parse().unwrap(), off.parse().unwrap());
        assert!(ms >= before && ms <= after);
        assert_eq!(off, i as i64 + 1);
        assert!((ms, off) > last, "ids increase");
        last = (ms, off);
    }
    let got = t.fetch("q", &["COUNT", "3"]);
    for (m, id) in got.iter().zip(&ids) {
        assert_eq!(&m.s("id"), id);
        assert_eq!(format!("{}-{}", m.i("created"), m.i("offset")), *id);
    }
}

fn fetch_is_fifo_and_count_limits(ed: Edition) {
    let mut t = Ctx::new(ed);
    for i in 0..5 {
        t.push("q", &format!("m{i}"), &[]);
    }
    assert_eq!(bodies(&t.fetch("q", &["COUNT", "3"])), vec!["m0", "m1", "m2"]);
    assert_eq!(bodies(&t.fetch("q", &["count", "10"])), vec!["m3", "m4"]);
    assert!(t.fetch("q", &[]).is_empty());
    assert_eq!(t.stat("q", "inflight"), 5);
}

/// FETCH … COMPACT: each message an array of the map's values in the map's order, its
/// headers a flat array; the map form of the same message says the same.
fn fetch_compact_gives_the_values_in_the_maps_order(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "first", &["ID", "order-1", "TAG", "t", "KEY", "k", "HEADER", "trace", "abc", "HEADER", "lang", "fr"]);
    t.push("q", "second", &[]);
    t.push("q", "third", &[]);
    let before = t.now();
    let one = match t.run("fetch", "q", &["CONSUMER", "w", "COMPACT"]) {
        Value::Array(a) => a,
        other => panic!("expected an array of messages, got {other:?}"),
    };
    assert_eq!(one.len(), 1);
    let Value::Array(v) = &one[0] else { panic!("a COMPACT message is an array, got {:?}", one[0]) };
    assert_eq!(v.len(), 10, "id body receipt attempt tag key headers created offset deadline");
    assert_eq!((text(&v[0]), text(&v[1])), ("order-1".into(), "first".into()));
    assert_receipt(&text(&v[2]), 1, 1);
    assert_eq!((int(&v[3]), text(&v[4]), text(&v[5])), (1, "t".into(), "k".into()));
    assert_eq!(strings(&v[6]), vec!["trace", "abc", "lang", "fr"], "headers flat, in the order pushed");
    assert!(int(&v[7]) <= before && int(&v[8]) == 1);
    assert!(int(&v[9]) >= before + 30_000, "the deadline is now + lock-ms");

    let two = match t.run("fetch", "q", &["COUNT", "2", "compact"]) {
        Value::Array(a) => a,
        other => panic!("expected an array of messages, got {other:?}"),
    };
    let rows: Vec<Vec<Value>> = two
        .iter()
        .map(|m| match m {
            Value::Array(v) => v.clone(),
            other => panic!("a COMPACT message is an array, got {other:?}"),
        })
        .collect();
    assert_eq!(rows.iter().map(|v| text(&v[1])).collect::<Vec<_>>(), vec!["second", "third"]);
    for (v, offset) in rows.iter().zip(2..) {
        assert_eq!(text(&v[0]), format!("{}-{offset}", int(&v[7])), "a server-made id is <created>-<offset>");
        assert_eq!(int(&v[8]), offset);
        assert!(strings(&v[6]).is_empty(), "no headers: an empty array");
        assert_eq!(int(&v[3]), 1);
    }
    let receipts: Vec<String> = rows.iter().map(|v| text(&v[2])).chain([text(&v[2])]).collect();
    let r: Vec<&str> = receipts.iter().map(|s| s.as_str()).collect();
    assert_eq!(t.int("ack", "q", &r), 3, "COMPACT receipts ack like any");
    assert_eq!(t.run("fetch", "q", &["COMPACT"]), Value::Nil, "nothing to fetch: null");
    assert_eq!(t.err("fetch", "q", &["COMPACT", "COMPACT"]), "ERR syntax error near 'COMPACT'");
    // COMPACT alone; and the map form of a message holds the same values.
    t.push("q", "again", &["HEADER", "a", "b"]);
    t.push("q", "last", &[]);
    match t.run("fetch", "q", &["COMPACT"]) {
        Value::Array(a) => match &a[..] {
            [Value::Array(v)] => assert_eq!((text(&v[1]), strings(&v[6])), ("again".into(), vec!["a".to_string(), "b".into()])),
            other => panic!("one COMPACT message expected, got {other:?}"),
        },
        other => panic!("expected an array of messages, got {other:?}"),
    }
    let m = t.fetch1("q", &[]);
    assert_eq!(m.s("body"), "last");
}

fn fetch_on_empty_queue_is_null_in_resp2_and_resp3(ed: Edition) {
    let mut t = Ctx::new(ed);
    assert_eq!(t.run("fetch", "q", &[]), Value::Nil);
    let mut c3 = t.server.conn_resp3();
    let v: Value = ed.cmd("fetch", "q", &[]).query(&mut c3).unwrap();
    assert_eq!(v, Value::Nil);
}

fn fetch_block_is_checked_and_answers_null_when_empty(ed: Edition) {
    let mut t = Ctx::new(ed);
    let start = Instant::now();
    assert_eq!(t.run("fetch", "q", &["BLOCK", "50"]), Value::Nil);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(t.err("fetch", "q", &["BLOCK", "-1"]), "ERR BLOCK must be a non-negative integer of milliseconds");
    t.push("q", "x", &[]);
    assert_eq!(t.fetch("q", &["BLOCK", "50"]).len(), 1);
}

fn consumer_is_kept_while_in_flight(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["backoff-ms", "0"]);
    t.push("q", "x", &[]);
    let m = t.fetch1("q", &["CONSUMER", "w-9"]);
    assert_eq!(t.peek("q", &["INFLIGHT"])[0].s("consumer"), "w-9");
    assert_eq!(t.int("nack", "q", &[&m.s("receipt")]), 1);
    assert_eq!(t.peek("q", &[])[0].s("state"), "ready");
    let m = t.fetch1("q", &[]);
    assert_eq!(t.peek("q", &["INFLIGHT"])[0].s("consumer"), "", "a fetch without CONSUMER has none");
    assert_eq!(m.i("attempt"), 2);
    assert_receipt(&m.s("receipt"), 1, 2);
}

fn push_argument_errors_change_nothing(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "keep", &["ID", "k1", "TAG", "t"]);
    let snap = t.snapshot();
    let long_id = "i".repeat(129);
    let long_q = "q".repeat(201);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("a b", vec!["x"], "ERR invalid queue name"),
        ("{q}", vec!["x"], "ERR invalid queue name"),
        ("", vec!["x"], "ERR invalid queue name"),
        (&long_q, vec!["x"], "ERR invalid queue name"),
        ("q", vec![], "ERR wrong number of arguments for 'rmq.push' command"),
        ("q", vec!["x", "ID"], "ERR ID needs a value"),
        ("q", vec!["x", "ID", "a b"], "ERR ID must be 1 to 128 printable ASCII characters without spaces"),
        ("q", vec!["x", "ID", ""], "ERR ID must be 1 to 128 printable ASCII characters without spaces"),
        ("q", vec!["x", "ID", &long_id], "ERR ID must be 1 to 128 printable ASCII characters without spaces"),
        ("q", vec!["x", "ID", "a", "id", "b"], "ERR syntax error near 'id'"),
        ("q", vec!["x", "TAG", "a", "tag", "b"], "ERR syntax error near 'tag'"),
        ("q", vec!["x", "KEY"], "ERR KEY needs a value"),
        ("q", vec!["x", "FOO"], "ERR syntax error near 'FOO'"),
        ("q", vec!["x", "TAG", "t", "extra"], "ERR syntax error near 'extra'"),
        ("q", vec!["x", "HEADER", "h"], "ERR HEADER needs a value"),
        ("q", vec!["x", "HEADER", "", "v"], "ERR HEADER name must not be empty"),
        ("q", vec!["x", "HEADER", "h", "1", "HEADER", "h", "2"], "ERR HEADER 'h' given twice"),
        ("q", vec!["x", "DELAY", "-1"], "ERR DELAY must be a non-negative integer of milliseconds"),
        ("q", vec!["x", "DELAY", "1e3"], "ERR DELAY must be a non-negative integer of milliseconds"),
        ("q", vec!["x", "DELAY", "0x10"], "ERR DELAY must be a non-negative integer of milliseconds"),
        ("q", vec!["x", "DELAY", " 5"], "ERR DELAY must be a non-negative integer of milliseconds"),
        ("q", vec!["x", "DELAY", "+5"], "ERR DELAY must be a non-negative integer of milliseconds"),
        ("q", vec!["x", "DELAY", "1000000000000001"], "ERR DELAY must be a non-negative integer of milliseconds"),
        ("q", vec!["x", "AT", "abc"], "ERR AT must be a non-negative integer of unix milliseconds"),
        ("q", vec!["x", "DELAY", "1", "AT", "2"], "ERR DELAY and AT cannot be used together"),
        ("q", vec!["x", "AT", "2", "DELAY", "1"], "ERR DELAY and AT cannot be used together"),
        ("q", vec!["x", "DELAY", "1", "DELAY", "2"], "ERR syntax error near 'DELAY'"),
        ("q", vec!["x", "DELAY"], "ERR DELAY needs a value"),
    ];
    for (q, args, want) in cases {
        assert_eq!(t.err("push", q, &args), want, "PUSH {q} {args:?}");
    }
    assert_eq!(t.snapshot(), snap, "a refused PUSH changes nothing");
    // The first fault from the left is the one reported.
    assert_eq!(t.err("push", "q", &["x", "FOO", "DELAY", "-1"]), "ERR syntax error near 'FOO'");
    assert_eq!(t.err("push", "q", &["x", "DELAY", "-1", "FOO"]), "ERR DELAY must be a non-negative integer of milliseconds");
    // Largest accepted number.
    t.push("q", "far", &["DELAY", "1000000000000000"]);
    assert_eq!(t.stat("q", "delayed"), 1);
}

fn keywords_are_case_insensitive(ed: Edition) {
    let mut t = Ctx::new(ed);
    assert_eq!(t.push("q", "x", &["id", "a1", "Tag", "t", "hEaDeR", "h", "v", "delay", "0"]), "a1");
    let m = t.fetch1("q", &["count", "1", "lock", "1000", "consumer", "c", "block", "0"]);
    assert_eq!(m.s("tag"), "t");
    assert_eq!(t.int("nack", "q", &[&m.s("receipt"), "retry", "delay", "0", "reason", "r"]), 1);
    assert_eq!(ints(&t.run("recover", "q", &["expired", "Failed", "errors"])), vec![0, 0, 0]);
    assert_eq!(t.peek("q", &["ready", "start", "0", "count", "5"]).len(), 1);
    assert_eq!(t.int("purge", "q", &["all"]), 1);
}

fn dedup_returns_same_id_within_window_and_accepts_after(ed: Edition) {
    let mut t = Ctx::new(ed);
    assert_eq!(t.push("q", "first", &["ID", "x"]), "x");
    assert_eq!(t.push("q", "second", &["ID", "x"]), "x");
    let st = t.stats("q");
    assert_eq!((st["pushed"], st["dups"], st["ready"], st["offset"]), (1, 1, 1, 1));
    assert_eq!(bodies(&t.peek("q", &[])), vec!["first"]);
    // Still a duplicate while in flight or after ACK: the window is about ids, not states.
    let m = t.fetch1("q", &[]);
    t.int("ack", "q", &[&m.s("receipt")]);
    assert_eq!(t.push("q", "third", &["ID", "x"]), "x");
    assert_eq!(t.stat("q", "ready"), 0);

    // A tiny window: a retry after it is a new message.
    t.config("q", &["dedup-window-ms", "150"]);
    t.push("q", "a", &["ID", "y"]);
    assert_eq!(t.push("q", "a", &["ID", "y"]), "y");
    assert_eq!(t.stat("q", "ready"), 1);
    sleep(Duration::from_millis(200));
    assert_eq!(t.push("q", "b", &["ID", "y"]), "y");
    assert_eq!(bodies(&t.peek("q", &[])), vec!["a", "b"]);
    let st = t.stats("q");
    assert_eq!((st["pushed"], st["dups"]), (3, 3));

    // dedup-window-ms 0: nothing is recorded, nothing is a duplicate.
    t.config("q", &["dedup-window-ms", "0"]);
    t.push("q", "c", &["ID", "z"]);
    t.push("q", "d", &["ID", "z"]);
    assert_eq!(t.stat("q", "ready"), 4);
    let z: Option<String> = t.redis(&["ZSCORE", "dup:{q}", "z"]);
    assert_eq!(z, None);
}

fn dedup_window_is_trimmed_a_few_at_a_time(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["dedup-window-ms", "150"]);
    for i in 0..40 {
        t.push("q", "x", &["ID", &format!("old-{i}")]);
    }
    sleep(Duration::from_millis(200));
    t.push("q", "x", &["ID", "new-1"]);
    let n: i64 = t.redis(&["ZCARD", "dup:{q}"]);
    assert_eq!(n, 40 - 16 + 1, "one PUSH with ID removes at most 16 expired entries");
    t.push("q", "x", &["ID", "new-2"]);
    t.push("q", "x", &["ID", "new-3"]);
    let n: i64 = t.redis(&["ZCARD", "dup:{q}"]);
    assert_eq!(n, 3);
}

fn maxlen_refuses_with_queue_full_after_dedup(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["maxlen", "2"]);
    t.push("q", "a", &["ID", "a"]);
    t.push("q", "b", &["DELAY", "60000"]);
    let snap = t.snapshot();
    assert_eq!(t.err("push", "q", &["c"]), "ERR queue full");
    assert_eq!(t.snapshot(), snap, "a refused push changes nothing");
    assert_eq!(t.push("q", "a", &["ID", "a"]), "a", "a retry of an accepted message still gets its id");
    let st = t.stats("q");
    assert_eq!((st["pushed"], st["offset"], st["dups"]), (2, 2, 1));
    // In flight counts too.
    let m = t.fetch1("q", &[]);
    assert_eq!(t.err("push", "q", &["c"]), "ERR queue full");
    t.int("ack", "q", &[&m.s("receipt")]);
    t.push("q", "c", &[]);
    assert_eq!(t.stat("q", "offset"), 3);
}

fn delay_and_at_make_messages_delayed_until_due(ed: Edition) {
    let mut t = Ctx::new(ed);
    let now = t.now();
    t.push("q", "later", &["DELAY", "150"]);
    assert!(t.fetch("q", &[]).is_empty());
    let p = t.peek("q", &["DELAYED"]);
    assert_eq!(p.len(), 1);
    let due = p[0].i("due");
    assert!(due >= now + 150 && due <= t.now() + 150);
    assert_eq!(t.stat("q", "delayed"), 1);
    let start = Instant::now();
    let m = t.fetch_within("q", &[], Duration::from_secs(3));
    assert!(t.now() >= due);
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(bodies(&m), vec!["later"]);

    let at = t.now() + 200;
    t.push("q", "at", &["AT", &at.to_string()]);
    assert!(t.fetch("q", &[]).is_empty());
    assert_eq!(t.peek("q", &["DELAYED"])[0].i("due"), at);
    let m = t.fetch_within("q", &[], Duration::from_secs(3));
    assert_eq!(bodies(&m), vec!["at"]);
    assert!(t.now() >= at);

    // A due time not after now is ready at once.
    t.push("q", "past", &["AT", "1000"]);
    t.push("q", "zero", &["DELAY", "0"]);
    assert_eq!(t.stat("q", "delayed"), 0);
    assert_eq!(bodies(&t.fetch("q", &["COUNT", "2"])), vec!["past", "zero"]);
}

fn promoted_messages_go_behind_what_is_ready(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "d1", &["DELAY", "30"]);
    t.push("q", "d2", &["DELAY", "60"]);
    sleep(Duration::from_millis(80));
    t.push("q", "r1", &[]);
    // Promotion happens at the FETCH, after r1 became ready by the push...
    assert_eq!(bodies(&t.fetch("q", &["COUNT", "3"])), vec!["r1", "d1", "d2"]);
}

// ------------------------------------------------------------------------------------
// NACK, TOUCH, locks, fencing
// ------------------------------------------------------------------------------------

fn nack_retry_uses_exponential_backoff_capped(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["backoff-ms", "150", "backoff-max-ms", "250"]);
    t.push("q", "x", &[]);
    let m = t.fetch1("q", &[]);
    let before = t.now();
    assert_eq!(t.int("nack", "q", &[&m.s("receipt")]), 1);
    let after = t.now();
    let due = t.peek("q", &["DELAYED"])[0].i("due");
    assert!(due >= before + 150 && due <= after + 150, "attempt 1 waits backoff-ms");
    assert!(t.fetch("q", &[]).is_empty());
    let m = t.fetch_within("q", &[], Duration::from_secs(3)).remove(0);
    assert_eq!(m.i("attempt"), 2);
    let before = t.now();
    t.int("nack", "q", &[&m.s("receipt"), "RETRY"]);
    let after = t.now();
    let due = t.peek("q", &["DELAYED"])[0].i("due");
    assert!(due >= before + 250 && due <= after + 250, "attempt 2 would wait 300, capped at 250");
    assert_eq!(t.stat("q", "retried"), 2);
    // An explicit DELAY wins over the backoff.
    let m = t.fetch_within("q", &[], Duration::from_secs(3)).remove(0);
    let before = t.now();
    t.int("nack", "q", &[&m.s("receipt"), "DELAY", "5000"]);
    let due = t.peek("q", &["DELAYED"])[0].i("due");
    assert!(due >= before + 5000 && due <= t.now() + 5000);
}

fn nack_retry_without_backoff_goes_to_the_back_of_ready(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["backoff-ms", "0"]);
    t.push("q", "a", &[]);
    t.push("q", "b", &[]);
    let a = t.fetch1("q", &[]);
    assert_eq!(t.int("nack", "q", &[&a.s("receipt"), "REASON", "flaky"]), 1);
    assert_eq!(bodies(&t.peek("q", &[])), vec!["b", "a"]);
    assert_eq!(t.stat("q", "delayed"), 0);
    assert_eq!(t.stat("q", "retried"), 1);
    // RETRY DELAY 0 with a backoff set: straight back too.
    t.config("q", &["backoff-ms", "1000"]);
    let b = t.fetch1("q", &[]);
    t.int("nack", "q", &[&b.s("receipt"), "RETRY", "DELAY", "0"]);
    assert_eq!(bodies(&t.peek("q", &[])), vec!["a", "b"]);
    // FAIL without REASON stores "failed".
    let a = t.fetch1("q", &[]);
    assert_eq!(a.i("attempt"), 2);
    t.int("nack", "q", &[&a.s("receipt"), "FAIL"]);
    assert_eq!(t.peek("q", &["FAILED"])[0].s("error"), "failed");
}

fn nack_fail_and_error_move_to_failed_and_errors(ed: Edition) {
    let mut t = Ctx::new(ed);
    for b in ["a", "b", "c", "d"] {
        t.push("q", b, &[]);
    }
    let m = t.fetch("q", &["COUNT", "4"]);
    assert_eq!(t.int("nack", "q", &[&m[0].s("receipt"), "FAIL"]), 1);
    assert_eq!(t.int("nack", "q", &[&m[1].s("receipt"), "FAIL", "REASON", "bad input"]), 1);
    assert_eq!(t.int("nack", "q", &[&m[2].s("receipt"), "ERROR"]), 1);
    assert_eq!(t.int("nack", "q", &[&m[3].s("receipt"), "REASON", "boom", "ERROR"]), 1);
    let f = t.peek("q", &["FAILED"]);
    assert_eq!(bodies(&f), vec!["a", "b"]);
    assert_eq!((f[0].s("error"), f[1].s("error")), ("failed".into(), "bad input".into()));
    let e = t.peek("q", &["ERRORS"]);
    assert_eq!(bodies(&e), vec!["c", "d"]);
    assert_eq!((e[0].s("error"), e[1].s("error")), ("error".into(), "boom".into()));
    let st = t.stats("q");
    assert_eq!((st["failed"], st["errors"], st["dead"], st["errored"], st["inflight"]), (2, 2, 2, 2, 0));
    assert_eq!(t.int("nack", "q", &[&m[0].s("receipt"), "FAIL"]), 0, "a NACKed receipt is stale");
}

fn nack_argument_errors_change_nothing(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "x", &[]);
    let r = t.fetch1("q", &[]).s("receipt");
    let snap = t.snapshot();
    let two = "ERR RETRY, FAIL and ERROR cannot be used together";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "ERR wrong number of arguments for 'rmq.nack' command"),
        (vec![&r, "RETRY", "FAIL"], two),
        (vec![&r, "FAIL", "ERROR"], two),
        (vec![&r, "ERROR", "RETRY"], two),
        (vec![&r, "FAIL", "FAIL"], two),
        (vec![&r, "FAIL", "DELAY", "5"], "ERR DELAY goes only with RETRY"),
        (vec![&r, "DELAY", "5", "ERROR"], "ERR DELAY goes only with RETRY"),
        (vec![&r, "DELAY", "-5"], "ERR DELAY must be a non-negative integer of milliseconds"),
        (vec![&r, "DELAY"], "ERR DELAY needs a value"),
        (vec![&r, "REASON"], "ERR REASON needs a value"),
        (vec![&r, "REASON", "a", "REASON", "b"], "ERR syntax error near 'REASON'"),
        (vec![&r, "LATER"], "ERR syntax error near 'LATER'"),
    ];
    for (args, want) in cases {
        assert_eq!(t.err("nack", "q", &args), want, "NACK {args:?}");
    }
    assert_eq!(t.err("nack", "a b", &[&r]), "ERR invalid queue name");
    assert_eq!(t.snapshot(), snap);
    assert_eq!(t.int("nack", "q", &["garbage"]), 0, "a malformed receipt is stale, not an error");
    assert_eq!(t.int("nack", "q", &["99-1", "FAIL"]), 0);
    assert_eq!(t.snapshot(), snap);
    assert_eq!(t.int("nack", "q", &[&r, "RETRY", "DELAY", "10", "REASON", "x"]), 1);
}

fn max_attempts_by_nack_sends_to_failed(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["max-attempts", "2", "backoff-ms", "0"]);
    t.push("q", "x", &[]);
    let m = t.fetch1("q", &[]);
    t.int("nack", "q", &[&m.s("receipt")]);
    let m = t.fetch1("q", &[]);
    assert_eq!(m.i("attempt"), 2);
    assert_eq!(t.int("nack", "q", &[&m.s("receipt"), "REASON", "still broken"]), 1);
    let f = t.peek("q", &["FAILED"]);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].s("error"), "max attempts");
    assert_eq!(f[0].i("attempt"), 2);
    let st = t.stats("q");
    assert_eq!((st["dead"], st["retried"], st["ready"], st["delayed"]), (1, 1, 0, 0));
}

fn max_attempts_by_lock_expiry_sends_to_failed(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["max-attempts", "2"]);
    t.push("q", "x", &[]);
    let m1 = t.fetch1("q", &["LOCK", "30"]);
    assert_eq!(m1.i("attempt"), 1);
    let m2 = t.fetch_within("q", &["LOCK", "30"], Duration::from_secs(3)).remove(0);
    assert_eq!(m2.i("attempt"), 2, "the expired lock counted as an attempt");
    assert_eq!(m2.s("id"), m1.s("id"));
    sleep(Duration::from_millis(50));
    assert!(t.fetch("q", &[]).is_empty());
    let f = t.peek("q", &["FAILED"]);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].s("error"), "max attempts (lock expired)");
    let st = t.stats("q");
    assert_eq!((st["dead"], st["inflight"], st["failed"], st["retried"]), (1, 0, 1, 0));
}

fn stale_receipt_cannot_ack_nack_or_touch(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "x", &[]);
    let old = t.fetch1("q", &["LOCK", "30"]).s("receipt");
    let new = t.fetch_within("q", &["LOCK", "60000"], Duration::from_secs(3)).remove(0).s("receipt");
    assert_ne!(old, new);
    assert_receipt(&new, 1, 2);
    let snap = t.snapshot();
    assert_eq!(t.int("ack", "q", &[&old]), 0);
    assert_eq!(t.int("nack", "q", &[&old, "FAIL"]), 0);
    assert_eq!(t.int("touch", "q", &[&old]), 0);
    assert_eq!(t.snapshot(), snap, "a stale receipt changes nothing");
    assert_eq!(t.int("ack", "q", &[&old, &new, "nonsense"]), 1);
    assert_eq!(t.stat("q", "acked"), 1);
}

fn expired_receipt_still_acks_until_reclaimed(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "x", &[]);
    let r = t.fetch1("q", &["LOCK", "20"]).s("receipt");
    sleep(Duration::from_millis(50));
    assert_eq!(t.int("ack", "q", &[&r]), 1, "nobody took the message yet: the receipt is current");
}

fn touch_extends_the_lock(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "x", &[]);
    let r = t.fetch1("q", &["LOCK", "80"]).s("receipt");
    let before = t.now();
    let deadline = t.int("touch", "q", &[&r, "LOCK", "5000"]);
    assert!(deadline >= before + 5000 && deadline <= t.now() + 5000);
    assert_eq!(t.peek("q", &["INFLIGHT"])[0].i("deadline"), deadline);
    sleep(Duration::from_millis(120));
    assert!(t.fetch("q", &[]).is_empty(), "the touched lock still holds");
    let before = t.now();
    let deadline = t.int("touch", "q", &[&r]);
    assert!(deadline >= before + 30_000 && deadline <= t.now() + 30_000, "default lock-ms");
    t.config("q", &["lock-ms", "7000"]);
    let before = t.now();
    let deadline = t.int("touch", "q", &[&r]);
    assert!(deadline >= before + 7000 && deadline <= t.now() + 7000, "the queue's lock-ms");
    let snap = t.snapshot();
    assert_eq!(t.err("touch", "q", &[]), "ERR wrong number of arguments for 'rmq.touch' command");
    assert_eq!(t.err("touch", "q", &[&r, "LOCK", "0"]), "ERR LOCK must be a positive integer of milliseconds");
    assert_eq!(t.err("touch", "q", &[&r, "LOCK"]), "ERR LOCK needs a value");
    assert_eq!(t.err("touch", "q", &[&r, "LOCK", "5", "LOCK", "6"]), "ERR syntax error near 'LOCK'");
    assert_eq!(t.err("touch", "q", &[&r, "SOON"]), "ERR syntax error near 'SOON'");
    assert_eq!(t.snapshot(), snap);
    assert_eq!(t.int("touch", "q", &["1-9"]), 0);
}

fn fetch_argument_errors_change_nothing(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "x", &[]);
    let snap = t.snapshot();
    let long = "c".repeat(201);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["COUNT", "0"], "ERR COUNT must be a positive integer"),
        (vec!["COUNT", "-1"], "ERR COUNT must be a positive integer"),
        (vec!["COUNT", "1001"], "ERR COUNT must not exceed max-fetch-count (1000)"),
        (vec!["COUNT"], "ERR COUNT needs a value"),
        (vec!["COUNT", "1", "COUNT", "2"], "ERR syntax error near 'COUNT'"),
        (vec!["LOCK", "0"], "ERR LOCK must be a positive integer of milliseconds"),
        (vec!["LOCK", "1.5"], "ERR LOCK must be a positive integer of milliseconds"),
        (vec!["BLOCK", "x"], "ERR BLOCK must be a non-negative integer of milliseconds"),
        (vec!["CONSUMER", ""], "ERR CONSUMER must be 1 to 200 bytes"),
        (vec!["CONSUMER", &long], "ERR CONSUMER must be 1 to 200 bytes"),
        (vec!["WAIT"], "ERR syntax error near 'WAIT'"),
        (vec!["COUNT", "1", "2"], "ERR syntax error near '2'"),
    ];
    for (args, want) in cases {
        assert_eq!(t.err("fetch", "q", &args), want, "FETCH {args:?}");
    }
    assert_eq!(t.err("fetch", "q/é", &[]), "ERR invalid queue name");
    assert_eq!(t.snapshot(), snap);
    assert_eq!(t.fetch("q", &["COUNT", "1000", "CONSUMER", &"c".repeat(200)]).len(), 1);
}

// ------------------------------------------------------------------------------------
// RECOVER
// ------------------------------------------------------------------------------------

fn recover_counts_each_source_and_resets_attempts(ed: Edition) {
    let mut t = Ctx::new(ed);
    for b in ["b", "c", "a"] {
        t.push("q", b, &[]);
    }
    let b = t.fetch1("q", &[]);
    t.int("nack", "q", &[&b.s("receipt"), "FAIL", "REASON", "r"]);
    let c = t.fetch1("q", &[]);
    t.int("nack", "q", &[&c.s("receipt"), "ERROR"]);
    t.fetch1("q", &["LOCK", "20"]); // a: will expire
    sleep(Duration::from_millis(50));

    assert_eq!(ints(&t.run("recover", "q", &["FAILED"])), vec![0, 1, 0]);
    let r = t.peek("q", &[]);
    assert_eq!(bodies(&r), vec!["b"]);
    assert_eq!(r[0].i("attempt"), 0);
    assert_eq!(t.int("nack", "q", &[&b.s("receipt")]), 0);

    assert_eq!(ints(&t.run("recover", "q", &[])), vec![1, 0, 1]);
    let r = t.peek("q", &[]);
    assert_eq!(bodies(&r), vec!["b", "a", "c"]);
    assert_eq!(r[1].i("attempt"), 1, "a reclaimed message keeps its count");
    assert_eq!(r[2].i("attempt"), 0);
    assert_eq!(ints(&t.run("recover", "q", &["EXPIRED", "ERRORS"])), vec![0, 0, 0]);
    let st = t.stats("q");
    assert_eq!((st["ready"], st["failed"], st["errors"], st["inflight"]), (3, 0, 0, 0));
    // Recovered messages no longer carry the old error.
    let m = t.fetch("q", &["COUNT", "3"]);
    for m in &m {
        t.int("nack", "q", &[&m.s("receipt"), "ERROR", "REASON", "again"]);
    }
    t.run("recover", "q", &["ERRORS"]);
    for m in t.peek("q", &[]) {
        assert_eq!(m.i("attempt"), 0);
    }
    t.fetch("q", &["COUNT", "3"]).iter().for_each(|m| {
        assert_eq!(m.i("attempt"), 1);
    });
}

fn recover_sends_expired_at_max_attempts_to_failed_then_back(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["max-attempts", "1"]);
    t.push("q", "x", &[]);
    t.push("q", "y", &[]);
    t.fetch("q", &["LOCK", "20", "COUNT", "2"]);
    sleep(Duration::from_millis(50));
    assert_eq!(ints(&t.run("recover", "q", &["EXPIRED"])), vec![2, 0, 0]);
    let f = t.peek("q", &["FAILED"]);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].s("error"), "max attempts (lock expired)");
    assert_eq!(t.stat("q", "dead"), 2);

    t.push("q", "z", &[]);
    t.fetch("q", &["LOCK", "20"]);
    sleep(Duration::from_millis(50));
    // EXPIRED runs first, so the expired message at max-attempts is back too.
    assert_eq!(ints(&t.run("recover", "q", &["FAILED", "EXPIRED"])), vec![1, 3, 0]);
    let r = t.peek("q", &[]);
    assert_eq!(bodies(&r), vec!["x", "y", "z"]);
    assert!(r.iter().all(|m| m.i("attempt") == 0));
}

fn recover_does_not_promote_delayed(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "x", &["DELAY", "10"]);
    sleep(Duration::from_millis(30));
    assert_eq!(ints(&t.run("recover", "q", &[])), vec![0, 0, 0]);
    assert_eq!(t.stat("q", "delayed"), 1);
    assert_eq!(t.err("recover", "q", &["FAILED", "failed"]), "ERR syntax error near 'failed'");
    assert_eq!(t.err("recover", "q", &["ALL"]), "ERR syntax error near 'ALL'");
}

impl Ctx {
    fn get(&mut self, q: &str, id: &str) -> Option<Msg> {
        match self.run("get", q, &[id]) {
            Value::Nil => None,
            v => Some(Msg::of(&v)),
        }
    }
}

// ------------------------------------------------------------------------------------
// Ordered queues
// ------------------------------------------------------------------------------------

fn ordered_queue_hands_out_one_at_a_time(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["ordered", "1"]);
    for b in ["a", "b", "c"] {
        t.push("q", b, &[]);
    }
    let a = t.fetch("q", &["COUNT", "10"]);
    assert_eq!(bodies(&a), vec!["a"], "COUNT is accepted but one message at most");
    assert!(t.fetch("q", &[]).is_empty(), "nothing while one is in flight");
    assert_eq!(t.err("fetch", "q", &["COUNT", "1001"]), "ERR COUNT must not exceed max-fetch-count (1000)");
    t.int("ack", "q", &[&a[0].s("receipt")]);
    assert_eq!(bodies(&t.fetch("q", &[])), vec!["b"]);
}

fn ordered_queue_retry_goes_to_the_front(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["ordered", "1", "backoff-ms", "0"]);
    for b in ["a", "b"] {
        t.push("q", b, &[]);
    }
    let a = t.fetch1("q", &[]);
    t.int("nack", "q", &[&a.s("receipt")]);
    assert_eq!(bodies(&t.peek("q", &[])), vec!["a", "b"]);
    let a = t.fetch1("q", &[]);
    assert_eq!((a.s("body"), a.i("attempt")), ("a".into(), 2));
}

fn ordered_queue_reclaimed_message_goes_to_the_front(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["ordered", "1"]);
    for b in ["a", "b"] {
        t.push("q", b, &[]);
    }
    t.fetch1("q", &["LOCK", "20"]);
    let a = t.fetch_within("q", &[], Duration::from_secs(3));
    assert_eq!(bodies(&a), vec!["a"]);
    assert_eq!(a[0].i("attempt"), 2);
}

fn ordered_queue_retry_holds_the_line_during_backoff(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["ordered", "1", "backoff-ms", "200"]);
    for b in ["a", "b"] {
        t.push("q", b, &[]);
    }
    let a = t.fetch1("q", &[]);
    t.int("nack", "q", &[&a.s("receipt")]);
    let hold: Option<String> = t.redis(&["HGET", "st:{q}", "hold"]);
    assert_eq!(hold.as_deref(), Some("1"));
    assert!(t.fetch("q", &[]).is_empty(), "b waits behind the retry of a");
    let a = t.fetch_within("q", &[], Duration::from_secs(3));
    assert_eq!(bodies(&a), vec!["a"]);
    let hold: Option<String> = t.redis(&["HGET", "st:{q}", "hold"]);
    assert_eq!(hold, None);
    t.int("ack", "q", &[&a[0].s("receipt")]);
    assert_eq!(bodies(&t.fetch("q", &[])), vec!["b"]);
}

fn ordered_queue_hold_is_released_by_del_or_requeue(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["ordered", "1", "backoff-ms", "60000"]);
    for b in ["a", "b", "c"] {
        t.push("q", b, &[]);
    }
    let a = t.fetch1("q", &[]);
    t.int("nack", "q", &[&a.s("receipt")]);
    assert!(t.fetch("q", &[]).is_empty());
    // REQUEUE takes the held retry out of its backoff, to the front of the line.
    assert_eq!(t.int("requeue", "q", &[&a.s("id")]), 1);
    assert_eq!(bodies(&t.peek("q", &[])), vec!["a", "b", "c"]);
    let a = t.fetch1("q", &[]);
    t.int("nack", "q", &[&a.s("receipt")]);
    assert!(t.fetch("q", &[]).is_empty());
    assert_eq!(t.int("del", "q", &[&a.s("id")]), 1);
    let b = t.fetch1("q", &[]);
    assert_eq!(b.s("body"), "b");
    t.int("nack", "q", &[&b.s("receipt")]);
    assert!(t.fetch("q", &[]).is_empty());
    assert_eq!(t.int("purge", "q", &["DELAYED"]), 1);
    assert_eq!(bodies(&t.fetch("q", &[])), vec!["c"]);
    let hold: Option<String> = t.redis(&["HGET", "st:{q}", "hold"]);
    assert_eq!(hold, None);
}

// ------------------------------------------------------------------------------------
// STATS, PEEK, GET
// ------------------------------------------------------------------------------------

fn stats_of_an_unused_queue_are_zeros(ed: Edition) {
    let mut t = Ctx::new(ed);
    let st = t.stats("never");
    let names = [
        "ready",
        "delayed",
        "inflight",
        "failed",
        "errors",
        "pushed",
        "acked",
        "retried",
        "dead",
        "errored",
        "dups",
        "offset",
        "oldest_ready_ms",
        "removed",
        "paused",
    ];
    assert_eq!(st.keys().map(|s| s.as_str()).collect::<Vec<_>>(), sorted(names.to_vec()));
    assert!(st.values().all(|v| *v == 0));
    assert_eq!(t.err("stats", "never", &["extra"]), "ERR syntax error near 'extra'");
    assert_eq!(t.err("stats", "bad name", &[]), "ERR invalid queue name");
    let keys: Vec<String> = t.redis(&["KEYS", "*"]);
    assert!(keys.is_empty(), "STATS creates nothing");
}

fn stats_count_every_state_and_event(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["backoff-ms", "0"]);
    for i in 0..7 {
        t.push("q", &format!("m{i}"), &["ID", &format!("id{i}")]);
    }
    t.push("q", "dup", &["ID", "id0"]);
    t.push("q", "later", &["DELAY", "60000"]);
    let m = t.fetch("q", &["COUNT", "5"]);
    t.int("ack", "q", &[&m[0].s("receipt")]);
    t.int("nack", "q", &[&m[1].s("receipt")]); // retried → ready
    t.int("nack", "q", &[&m[2].s("receipt"), "FAIL"]);
    t.int("nack", "q", &[&m[3].s("receipt"), "ERROR"]);
    sleep(Duration::from_millis(30));
    let st = t.stats("q");
    let want = [
        ("ready", 3),
        ("delayed", 1),
        ("inflight", 1),
        ("failed", 1),
        ("errors", 1),
        ("pushed", 8),
        ("acked", 1),
        ("retried", 1),
        ("dead", 1),
        ("errored", 1),
        ("dups", 1),
        ("offset", 8),
        ("removed", 0),
        ("paused", 0),
    ];
    for (k, v) in want {
        assert_eq!(st[k], v, "{k}");
    }
    // m5 is at the front, pushed at least 30 ms ago.
    assert!(st["oldest_ready_ms"] >= 30 && st["oldest_ready_ms"] < 10_000, "{}", st["oldest_ready_ms"]);
}

fn peek_shows_state_specific_fields(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "r", &["TAG", "t", "HEADER", "h", "v"]);
    t.push("q", "i", &[]);
    t.push("q", "f", &[]);
    t.push("q", "e", &[]);
    t.push("q", "d", &["DELAY", "60000"]);
    let r = t.peek("q", &[]);
    assert_eq!(r.len(), 4);
    assert_eq!(sorted(r[0].fields()), with_base(&[]));
    assert_eq!((r[0].s("state"), r[0].s("tag"), r[0].headers()["h"].clone()), ("ready".into(), "t".into(), "v".into()));
    t.push("q", "r2", &[]);
    let m = t.fetch("q", &["COUNT", "4", "CONSUMER", "me"]);
    t.int("nack", "q", &[&m[2].s("receipt"), "FAIL", "REASON", "nope"]);
    t.int("nack", "q", &[&m[3].s("receipt"), "ERROR", "REASON", "oops"]);

    let p = t.peek("q", &["READY"]);
    assert_eq!(bodies(&p), vec!["r2"]);
    let p = t.peek("q", &["DELAYED"]);
    assert_eq!(sorted(p[0].fields()), with_base(&["due", "error"]));
    assert_eq!(p[0].s("state"), "delayed");
    let p = t.peek("q", &["INFLIGHT"]);
    assert_eq!(bodies(&p), vec!["r", "i"]);
    assert_eq!(sorted(p[0].fields()), with_base(&["deadline", "consumer"]));
    assert_eq!((p[0].s("state"), p[0].s("consumer"), p[0].i("attempt")), ("inflight".into(), "me".into(), 1));
    let p = t.peek("q", &["FAILED"]);
    assert_eq!(sorted(p[0].fields()), with_base(&["error"]));
    assert_eq!((p[0].s("state"), p[0].s("error"), p[0].s("body")), ("failed".into(), "nope".into(), "f".into()));
    let p = t.peek("q", &["ERRORS"]);
    assert_eq!(sorted(p[0].fields()), with_base(&["error"]));
    assert_eq!((p[0].s("state"), p[0].s("error"), p[0].s("body")), ("errors".into(), "oops".into(), "e".into()));
    assert!(t.peek("empty", &["FAILED"]).is_empty());
}

fn peek_pages_with_start_and_count(ed: Edition) {
    let mut t = Ctx::new(ed);
    for i in 0..15 {
        t.push("q", &format!("m{i}"), &[]);
    }
    assert_eq!(t.peek("q", &[]).len(), 10, "COUNT defaults to 10");
    assert_eq!(bodies(&t.peek("q", &["START", "1", "COUNT", "2"])), vec!["m1", "m2"]);
    assert_eq!(bodies(&t.peek("q", &["COUNT", "2", "START", "13"])), vec!["m13", "m14"]);
    assert!(t.peek("q", &["START", "1000000000000000"]).is_empty());
    for i in 0..3 {
        t.push("q", &format!("d{i}"), &["DELAY", &(60000 - i * 1000).to_string()]);
    }
    assert_eq!(bodies(&t.peek("q", &["DELAYED", "START", "1"])), vec!["d1", "d0"], "delayed by due");
    assert_eq!(t.stat("q", "ready"), 15, "PEEK changes nothing");
    let snap = t.snapshot();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["COUNT", "0"], "ERR COUNT must be a positive integer"),
        (vec!["COUNT", "1001"], "ERR COUNT must not exceed max-fetch-count (1000)"),
        (vec!["START", "-1"], "ERR START must be a non-negative integer"),
        (vec!["START"], "ERR START needs a value"),
        (vec!["READY", "FAILED"], "ERR syntax error near 'FAILED'"),
        (vec!["EVERYTHING"], "ERR syntax error near 'EVERYTHING'"),
    ];
    for (args, want) in cases {
        assert_eq!(t.err("peek", "q", &args), want, "PEEK {args:?}");
    }
    assert_eq!(t.snapshot(), snap);
}

fn get_finds_a_message_in_any_state(ed: Edition) {
    let mut t = Ctx::new(ed);
    let ids: Vec<String> = ["r", "i", "f", "e"].iter().map(|b| t.push("q", b, &[])).collect();
    t.push("q", "d", &["DELAY", "60000", "ID", "dly-1"]);
    let m = t.fetch("q", &["COUNT", "4"]);
    t.push("q", "r", &["ID", "ready-1"]);
    t.int("nack", "q", &[&m[2].s("receipt"), "FAIL"]);
    t.int("nack", "q", &[&m[3].s("receipt"), "ERROR"]);
    let cases = [
        ("ready-1", "ready", "due"),
        ("dly-1", "delayed", "due"),
        (ids[0].as_str(), "inflight", "deadline"),
        (ids[2].as_str(), "failed", "error"),
        (ids[3].as_str(), "errors", "error"),
    ];
    for (id, state, field) in cases {
        let g = t.get("q", id).unwrap_or_else(|| panic!("GET {id}"));
        assert_eq!(g.s("state"), state);
        assert_eq!(g.s("id"), id);
        assert_eq!(g.0.contains_key(field), state != "ready", "{state} {field}");
    }
    assert!(t.get("q", "nope").is_none());
    assert_eq!(t.err("get", "q", &[]), "ERR wrong number of arguments for 'rmq.get' command");
    assert_eq!(t.err("get", "q", &["a", "b"]), "ERR syntax error near 'b'");
}

// ------------------------------------------------------------------------------------
// DEL, REQUEUE, PURGE
// ------------------------------------------------------------------------------------

/// A queue with one message in every state; gives (ids by state, in-flight receipt).
fn one_in_each_state(t: &mut Ctx, q: &str) -> (BTreeMap<&'static str, String>, String) {
    let mut ids = BTreeMap::new();
    for (state, id) in [("inflight", "i1"), ("failed", "f1"), ("errors", "e1"), ("ready", "r1")] {
        t.push(q, state, &["ID", id]);
        ids.insert(state, id.to_string());
    }
    t.push(q, "delayed", &["ID", "d1", "DELAY", "60000"]);
    ids.insert("delayed", "d1".into());
    let m = t.fetch(q, &["COUNT", "3"]);
    t.int("nack", q, &[&m[1].s("receipt"), "FAIL"]);
    t.int("nack", q, &[&m[2].s("receipt"), "ERROR"]);
    (ids, m[0].s("receipt"))
}

fn del_removes_messages_from_any_state(ed: Edition) {
    let mut t = Ctx::new(ed);
    let (ids, receipt) = one_in_each_state(&mut t, "q");
    t.push("q", "keep", &["ID", "k1"]);
    let mut args: Vec<&str> = ids.values().map(|s| s.as_str()).collect();
    args.push("unknown");
    assert_eq!(t.int("del", "q", &args), 5);
    let st = t.stats("q");
    assert_eq!((st["ready"], st["delayed"], st["inflight"], st["failed"], st["errors"]), (1, 0, 0, 0, 0));
    assert_eq!(t.int("ack", "q", &[&receipt]), 0, "a deleted message's receipt is stale");
    assert_eq!(t.int("del", "q", &["r1"]), 0);
    assert_eq!(t.err("del", "q", &[]), "ERR wrong number of arguments for 'rmq.del' command");
    // Every message with the id goes (dedup off, so the id can repeat).
    t.config("q", &["dedup-window-ms", "0"]);
    t.push("q", "x", &["ID", "same"]);
    t.push("q", "y", &["ID", "same"]);
    assert_eq!(t.int("del", "q", &["same"]), 2);
    assert_eq!(bodies(&t.peek("q", &[])), vec!["keep"]);
}

fn requeue_moves_failed_errored_and_delayed_only(ed: Edition) {
    let mut t = Ctx::new(ed);
    let (ids, _) = one_in_each_state(&mut t, "q");
    let args: Vec<&str> = ids.values().map(|s| s.as_str()).chain(["unknown"]).collect();
    assert_eq!(t.int("requeue", "q", &args), 3);
    let r = t.peek("q", &[]);
    assert_eq!(bodies(&r), vec!["ready", "delayed", "failed", "errors"]);
    for m in &r[2..] {
        assert_eq!(m.i("attempt"), 0, "failed/errored start again at 0");
    }
    let st = t.stats("q");
    assert_eq!((st["ready"], st["delayed"], st["inflight"], st["failed"], st["errors"]), (4, 0, 1, 0, 0));
    assert_eq!(t.err("requeue", "q", &[]), "ERR wrong number of arguments for 'rmq.requeue' command");
}

fn purge_deletes_one_state_or_all(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["lock-ms", "9000"]);
    let (_, receipt) = one_in_each_state(&mut t, "q");
    t.push("q", "r2", &[]);
    assert_eq!(t.int("purge", "q", &["READY"]), 2);
    assert_eq!(t.int("purge", "q", &["READY"]), 0);
    assert_eq!(t.int("purge", "q", &["inflight"]), 1);
    assert_eq!(t.int("ack", "q", &[&receipt]), 0);
    let snap = t.snapshot();
    assert_eq!(t.err("purge", "q", &[]), "ERR wrong number of arguments for 'rmq.purge' command");
    assert_eq!(t.err("purge", "q", &["SOME"]), "ERR syntax error near 'SOME'");
    assert_eq!(t.err("purge", "q", &["ALL", "READY"]), "ERR syntax error near 'READY'");
    assert_eq!(t.snapshot(), snap);
    assert_eq!(t.int("purge", "q", &["ALL"]), 3);
    let st = t.stats("q");
    assert_eq!((st["ready"], st["delayed"], st["inflight"], st["failed"], st["errors"]), (0, 0, 0, 0, 0));
    assert_eq!((st["pushed"], st["offset"]), (6, 6), "counters stay");
    assert_eq!(strings(&t.run("config", "q", &["GET", "lock-ms"])), vec!["lock-ms", "9000"], "settings stay");
    for k in ["msg:{q}", "dly:{q}", "bak:{q}", "inf:{q}", "fai:{q}", "err:{q}"] {
        let n: i64 = t.redis(&["EXISTS", k]);
        assert_eq!(n, 0, "{k}");
    }
}

// ------------------------------------------------------------------------------------
// CONFIG, QUEUES
// ------------------------------------------------------------------------------------

fn config_get_and_set(ed: Edition) {
    let mut t = Ctx::new(ed);
    let all = strings(&t.run("config", "q", &["GET"]));
    let want = [
        "lock-ms",
        "30000",
        "max-attempts",
        "5",
        "backoff-ms",
        "1000",
        "backoff-max-ms",
        "3600000",
        "maxlen",
        "0",
        "ordered",
        "0",
        "dedup-window-ms",
        "3600000",
        "log",
        "0",
        "log-maxlen",
        "1000000",
        "paused",
        "0",
    ];
    assert_eq!(all, want);
    assert_eq!(strings(&t.run("config", "q", &["get", "LOCK-MS"])), vec!["lock-ms", "30000"]);
    t.config("q", &["lock-ms", "500", "ORDERED", "1", "maxlen", "007"]);
    assert_eq!(strings(&t.run("config", "q", &["GET", "lock-ms"])), vec!["lock-ms", "500"]);
    assert_eq!(strings(&t.run("config", "q", &["GET", "ordered"])), vec!["ordered", "1"]);
    assert_eq!(strings(&t.run("config", "q", &["GET", "maxlen"])), vec!["maxlen", "7"]);
    assert_eq!(strings(&t.run("config", "other", &["GET", "lock-ms"])), vec!["lock-ms", "30000"], "per queue");
    // What was set is stored as set, even a value equal to today's default: it stays an
    // override when the node's default changes later.
    t.config("q", &["ordered", "0", "maxlen", "0"]);
    let cfg: BTreeMap<String, String> = t.redis(&["HGETALL", "cfg:{q}"]);
    let want = [("lock-ms", "500"), ("maxlen", "0"), ("ordered", "0")];
    assert_eq!(cfg.into_iter().collect::<Vec<_>>(), want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec());
    // The lock-ms setting is used by FETCH.
    t.push("q", "x", &[]);
    let m = t.fetch1("q", &[]);
    assert!(m.i("deadline") - m.i("created") >= 500);
    assert!(m.i("deadline") <= t.now() + 500);

    let snap = t.snapshot();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "ERR wrong number of arguments for 'rmq.config' command"),
        (vec!["SET"], "ERR wrong number of arguments for 'rmq.config' command"),
        (vec!["SET", "lock-ms"], "ERR wrong number of arguments for 'rmq.config' command"),
        (vec!["SET", "lock-ms", "5", "maxlen"], "ERR wrong number of arguments for 'rmq.config' command"),
        (vec!["SHOW"], "ERR syntax error near 'SHOW'"),
        (vec!["GET", "speed"], "ERR unknown setting 'speed'"),
        (vec!["GET", "lock-ms", "extra"], "ERR syntax error near 'extra'"),
        (vec!["SET", "speed", "1"], "ERR unknown setting 'speed'"),
        (vec!["SET", "lock-ms", "10", "maxlen", "-1"], "ERR maxlen must be a non-negative integer"),
        (vec!["SET", "lock-ms", "0"], "ERR lock-ms must be a positive integer"),
        (vec!["SET", "max-attempts", "0"], "ERR max-attempts must be a positive integer"),
        (vec!["SET", "log-maxlen", "x"], "ERR log-maxlen must be a positive integer"),
        (vec!["SET", "backoff-ms", "1.5"], "ERR backoff-ms must be a non-negative integer"),
        (vec!["SET", "backoff-max-ms", ""], "ERR backoff-max-ms must be a non-negative integer"),
        (vec!["SET", "dedup-window-ms", "1000000000000001"], "ERR dedup-window-ms must be a non-negative integer"),
        (vec!["SET", "ordered", "2"], "ERR ordered must be 0 or 1"),
        (vec!["SET", "log", "yes"], "ERR log must be 0 or 1"),
    ];
    for (args, want) in cases {
        assert_eq!(t.err("config", "q", &args), want, "CONFIG {args:?}");
    }
    assert_eq!(t.snapshot(), snap, "a SET with any bad pair changes nothing");
    assert_eq!(strings(&t.run("config", "q", &["GET", "lock-ms"])), vec!["lock-ms", "500"]);
}

fn queues_lists_queues_with_any_key(ed: Edition) {
    let mut t = Ctx::new(ed);
    assert!(strings(&t.run("queues", "", &[])).is_empty());
    t.push("b", "x", &[]);
    t.push("a", "x", &[]);
    t.push("a", "y", &[]);
    t.push("C:x/1", "x", &["DELAY", "60000"]);
    t.push("f", "x", &[]);
    let m = t.fetch1("f", &[]);
    t.int("nack", "f", &[&m.s("receipt"), "FAIL"]);
    t.push("i", "x", &[]);
    t.fetch1("i", &[]);
    t.config("settings-only", &["lock-ms", "5"]);
    t.push("gone", "x", &[]);
    t.run("purge", "gone", &["ALL"]);
    let _: () = t.redis(&["SET", "msg:{not a queue}", "x"]);
    // A queue is listed while any of its keys is there: messages, counters or settings.
    assert_eq!(strings(&t.run("queues", "", &[])), vec!["C:x/1", "a", "b", "f", "gone", "i", "settings-only"]);
    let _: i64 = t.redis(&["DEL", "st:{gone}", "cfg:{settings-only}"]);
    assert_eq!(strings(&t.run("queues", "", &[])), vec!["C:x/1", "a", "b", "f", "i"]);
}

// ------------------------------------------------------------------------------------
// LOG and REPLAY
// ------------------------------------------------------------------------------------

fn log_entries(t: &mut Ctx, q: &str, args: &[&str]) -> Vec<Msg> {
    msgs(&t.run("log", q, args))
}

fn log_is_written_only_while_on(ed: Edition) {
    let mut t = Ctx::new(ed);
    let first_id = t.push("q", "before", &[]);
    assert!(log_entries(&mut t, "q", &[]).is_empty());
    let n: i64 = t.redis(&["EXISTS", "log:{q}"]);
    assert_eq!(n, 0, "no log key while log is 0");

    t.config("q", &["log", "1", "backoff-ms", "0", "max-attempts", "2"]);
    let before = t.now();
    t.push("q", "hello", &["ID", "m2", "TAG", "t", "KEY", "k", "HEADER", "h", "v"]);
    let m = t.fetch("q", &["COUNT", "2"]);
    t.int("ack", "q", &[&m[0].s("receipt")]);
    t.int("nack", "q", &[&m[1].s("receipt")]);
    let m = t.fetch1("q", &[]);
    t.int("nack", "q", &[&m.s("receipt")]); // max attempts → fail
    t.run("recover", "q", &["FAILED"]);
    let m = t.fetch1("q", &[]);
    t.int("nack", "q", &[&m.s("receipt"), "ERROR"]);
    t.run("requeue", "q", &["m2"]);
    t.int("del", "q", &["m2"]);
    t.push("q", "x", &[]);
    t.push("q", "y", &["DELAY", "60000"]);
    t.fetch1("q", &["LOCK", "20"]);
    sleep(Duration::from_millis(40));
    t.run("recover", "q", &["EXPIRED"]);
    t.int("purge", "q", &["ALL"]);
    let after = t.now();

    let log = log_entries(&mut t, "q", &[]);
    let events: Vec<(i64, String)> = log.iter().map(|e| (e.i("offset"), e.s("event"))).collect();
    let want: Vec<(i64, &str)> = vec![
        (2, "push"),
        (1, "fetch"),
        (2, "fetch"),
        (1, "ack"),
        (2, "retry"),
        (2, "fetch"),
        (2, "fail"),
        (2, "recover"),
        (2, "fetch"),
        (2, "error"),
        (2, "requeue"),
        (2, "delete"),
        (3, "push"),
        (4, "push"),
        (3, "fetch"),
        (3, "reclaim"),
        (3, "purge"),
        (4, "purge"),
    ];
    assert_eq!(events, want.iter().map(|(o, e)| (*o, e.to_string())).collect::<Vec<_>>());
    let base = ["event", "id", "offset", "time"];
    for e in &log {
        assert!(e.i("time") >= before && e.i("time") <= after);
        let own: &[&str] = match e.s("event").as_str() {
            "push" if e.i("offset") == 4 => &["body", "due", "headers", "key", "tag"],
            "push" => &["body", "headers", "key", "tag"],
            "fetch" => &["attempt", "consumer", "deadline"],
            "retry" | "reclaim" => &["attempt"],
            "fail" | "error" => &["attempt", "error"],
            _ => &[],
        };
        assert_eq!(sorted(e.fields()), sorted(base.iter().chain(own).copied().collect()), "{e:?}");
    }
    assert_eq!(log[0].s("id"), "m2");
    assert_eq!(log[0].s("body"), "hello");
    assert_eq!((log[0].s("tag"), log[0].s("key")), ("t".into(), "k".into()));
    assert_eq!(log[0].headers().into_iter().collect::<Vec<_>>(), vec![("h".to_string(), "v".to_string())]);
    assert_eq!(log[3].s("id"), first_id, "the ACK of a message pushed before the log was on");
    // Deliveries: who took it, which attempt, until when; outcomes with their attempt and reason.
    assert_eq!((log[1].i("attempt"), log[1].s("consumer")), (1, String::new()));
    assert!(log[1].i("deadline") >= log[1].i("time") + 30_000, "the queue's lock-ms");
    assert_eq!(log[14].i("deadline"), log[14].i("time") + 20, "LOCK 20");
    assert_eq!((log[4].i("attempt"), log[6].i("attempt"), log[6].s("error")), (1, 2, "max attempts".into()));
    assert_eq!((log[9].i("attempt"), log[9].s("error")), (1, "error".into()));
    assert_eq!(log[13].i("due"), log[13].i("time") + 60_000);
    assert!(log[12].headers().is_empty());

    // FROM and COUNT.
    let from3: Vec<i64> = log_entries(&mut t, "q", &["FROM", "3"]).iter().map(|e| e.i("offset")).collect();
    assert_eq!(from3, vec![3, 4, 3, 3, 3, 4]);
    assert_eq!(log_entries(&mut t, "q", &["COUNT", "2", "FROM", "2"]).len(), 2);
    assert_eq!(t.err("log", "q", &["FROM", "-1"]), "ERR FROM must be a non-negative integer");
    assert_eq!(t.err("log", "q", &["COUNT", "0"]), "ERR COUNT must be a positive integer");
    assert_eq!(t.err("log", "q", &["TO", "5"]), "ERR syntax error near 'TO'");

    // log-maxlen trims exactly; log 0 removes the log.
    t.config("q", &["log-maxlen", "3"]);
    t.push("q", "z", &[]);
    let log = log_entries(&mut t, "q", &[]);
    assert_eq!(log.len(), 3);
    assert_eq!(log[2].s("body"), "z");
    t.config("q", &["log", "0"]);
    let n: i64 = t.redis(&["EXISTS", "log:{q}"]);
    assert_eq!(n, 0);
    t.push("q", "quiet", &[]);
    assert!(log_entries(&mut t, "q", &[]).is_empty());
}

fn deliveries_and_delays_are_logged_with_who_and_until_when(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["log", "1", "backoff-ms", "1000", "backoff-max-ms", "1000"]);
    t.push("q", "a", &["ID", "a"]);
    let m = t.fetch1("q", &["LOCK", "5000", "CONSUMER", "w-7"]);
    t.int("nack", "q", &[&m.s("receipt"), "REASON", "busy"]);
    let log = log_entries(&mut t, "q", &[]);
    let events: Vec<String> = log.iter().map(|e| e.s("event")).collect();
    assert_eq!(events, ["push", "fetch", "delay"]);
    let (fetch, delay) = (&log[1], &log[2]);
    assert_eq!((fetch.s("id"), fetch.s("consumer"), fetch.i("attempt")), ("a".into(), "w-7".into(), 1));
    assert_eq!(fetch.i("deadline"), fetch.i("time") + 5000);
    assert_eq!((delay.i("attempt"), delay.s("error")), (1, "busy".into()));
    assert_eq!(delay.i("due"), delay.i("time") + 1000, "the backoff of attempt 1");
    // What the log says is what the queue holds.
    let delayed = t.peek("q", &["DELAYED"]);
    assert_eq!(delayed[0].i("due"), delay.i("due"));
}

fn a_paused_queue_hands_out_nothing_and_everything_else_goes_on(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "a", &[]);
    let m = t.fetch1("q", &["LOCK", "60000"]);
    t.push("q", "b", &[]);
    t.config("q", &["paused", "1"]);
    assert_eq!(strings(&t.run("config", "q", &["GET", "paused"])), vec!["paused", "1"]);
    assert_eq!(t.stat("q", "paused"), 1, "STATS says so too");
    assert!(t.fetch("q", &["COUNT", "10"]).is_empty(), "paused: nothing handed out");
    assert!(t.fetch("q", &["BLOCK", "10"]).is_empty(), "BLOCK waits, then null");
    // PUSH, ACK, STATS and the rest go on.
    t.push("q", "c", &[]);
    assert_eq!(t.int("ack", "q", &[&m.s("receipt")]), 1);
    assert_eq!((t.stat("q", "ready"), t.stat("q", "inflight")), (2, 0));
    assert_eq!(bodies(&t.peek("q", &[])), ["b", "c"]);
    assert_eq!(t.err("config", "q", &["SET", "paused", "2"]), "ERR paused must be 0 or 1");
    t.config("q", &["paused", "0"]);
    assert_eq!(bodies(&t.fetch("q", &["COUNT", "10"])), ["b", "c"]);
}

fn replay_pushes_copies_with_replay_of_header(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["log", "1"]);
    t.push("q", "a", &["ID", "orig-a", "TAG", "t", "KEY", "k", "HEADER", "h", "v"]);
    let b_id = t.push("q", "b", &[]);
    t.push("q", "c", &[]);
    let m = t.fetch("q", &["COUNT", "3"]);
    let r: Vec<String> = m.iter().map(|m| m.s("receipt")).collect();
    t.int("ack", "q", &[&r[0], &r[1], &r[2]]);

    assert_eq!(t.int("replay", "q", &["FROM", "1", "TO", "2"]), 2);
    let m = t.fetch("q", &["COUNT", "10"]);
    assert_eq!(bodies(&m), vec!["a", "b"]);
    assert_eq!((m[0].i("offset"), m[1].i("offset")), (4, 5));
    assert_eq!(m[0].s("id"), format!("{}-4", m[0].i("created")), "a new server-made id");
    assert_eq!((m[0].s("tag"), m[0].s("key")), ("t".into(), "k".into()));
    let h = m[0].headers();
    assert_eq!((h["h"].as_str(), h["replay-of"].as_str()), ("v", "orig-a"));
    assert_eq!(m[1].headers()["replay-of"], b_id);
    assert_eq!(t.stat("q", "pushed"), 5);
    // The copies are logged as pushes too; a replay of a replay names the copy, once.
    let copy_id = m[0].s("id");
    assert_eq!(t.int("replay", "q", &["FROM", "4", "TO", "4"]), 1);
    let m = t.fetch1("q", &[]);
    assert_eq!(m.i("offset"), 6);
    let h = m.headers();
    assert_eq!(h.len(), 2);
    assert_eq!((h["h"].as_str(), h["replay-of"].as_str()), ("v", copy_id.as_str()));
    assert_eq!(t.int("replay", "q", &["FROM", "100"]), 0);
    assert_eq!(t.int("replay", "q", &["FROM", "3"]), 4, "offsets 3, 4, 5 and 6");

    let snap = t.snapshot();
    assert_eq!(t.err("replay", "a b", &["FROM", "1"]), "ERR invalid queue name");
    assert_eq!(t.err("replay", "q", &[]), "ERR wrong number of arguments for 'rmq.replay' command");
    assert_eq!(t.err("replay", "q", &["TO", "5"]), "ERR wrong number of arguments for 'rmq.replay' command");
    assert_eq!(t.err("replay", "q", &["FROM"]), "ERR FROM needs a value");
    assert_eq!(t.err("replay", "q", &["FROM", "x"]), "ERR FROM must be a non-negative integer");
    assert_eq!(t.err("replay", "q", &["FROM", "1", "TO", "-2"]), "ERR TO must be a non-negative integer");
    assert_eq!(t.err("replay", "q", &["FROM", "1", "COUNT", "2"]), "ERR syntax error near 'COUNT'");
    assert_eq!(t.snapshot(), snap);
    t.config("q", &["maxlen", "3"]);
    let snap2 = t.snapshot();
    assert_eq!(t.err("replay", "q", &["FROM", "1"]), "ERR queue full", "all copies or none");
    assert_eq!(t.snapshot(), snap2);
}

// ------------------------------------------------------------------------------------
// RESP3 and the stored bytes
// ------------------------------------------------------------------------------------

fn resp3_replies_are_maps(ed: Edition) {
    let t = Ctx::new(ed);
    let mut c = t.server.conn_resp3();
    let mut run = |name: &str, args: &[&str]| -> Value {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        ed.cmd(name, "q", &a).query(&mut c).unwrap()
    };
    run("push", &["x", "HEADER", "h", "v", "ID", "m1"]);
    let is_map = |v: &Value| matches!(v, Value::Map(_));
    let f = run("fetch", &[]);
    let Value::Array(items) = &f else { panic!("{f:?}") };
    assert!(is_map(&items[0]));
    let m = Msg::of(&items[0]);
    assert!(is_map(m.get("headers")));
    assert!(matches!(m.get("attempt"), Value::Int(1)));
    assert_eq!(m.headers()["h"], "v");
    assert!(is_map(&run("stats", &[])));
    let p = run("peek", &["INFLIGHT"]);
    let Value::Array(items) = &p else { panic!("{p:?}") };
    assert!(is_map(&items[0]));
    assert!(is_map(&run("get", &["m1"])));
    assert_eq!(run("get", &["none"]), Value::Nil);
    assert!(matches!(run("config", &["GET"]), Value::Array(_)), "CONFIG GET is a flat array in both protocols");
    // A message without headers has an empty map.
    run("push", &["y"]);
    let g = run("fetch", &[]);
    let Value::Array(items) = &g else { panic!("{g:?}") };
    assert_eq!(Msg::of(&items[0]).get("headers"), &Value::Map(vec![]));
}

fn mp_str(out: &mut Vec<u8>, s: &[u8]) {
    match s.len() {
        n if n < 32 => out.push(0xa0 | n as u8),
        n if n <= 0xff => out.extend([0xd9, n as u8]),
        n if n <= 0xffff => {
            out.push(0xda);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(0xdb);
            out.extend((n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s);
}

fn mp_uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend([0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend(n.to_be_bytes());
        }
    }
}

/// The record bytes as docs/storage.md spells them, built by hand.
#[allow(clippy::too_many_arguments)]
fn record(
    id: &[u8],
    body: &[u8],
    tag: &[u8],
    key: &[u8],
    headers: &[&[u8]],
    created: u64,
    attempt: u64,
    offset: u64,
    deliveries: u64,
    error: &[u8],
    consumer: &[u8],
) -> Vec<u8> {
    let mut out = vec![0x9b];
    mp_str(&mut out, id);
    mp_str(&mut out, body);
    mp_str(&mut out, tag);
    mp_str(&mut out, key);
    if headers.len() < 16 {
        out.push(0x90 | headers.len() as u8);
    } else {
        out.push(0xdc);
        out.extend((headers.len() as u16).to_be_bytes());
    }
    for h in headers {
        mp_str(&mut out, h);
    }
    mp_uint(&mut out, created);
    mp_uint(&mut out, attempt);
    mp_uint(&mut out, offset);
    mp_uint(&mut out, deliveries);
    mp_str(&mut out, error);
    mp_str(&mut out, consumer);
    out
}

fn raw(t: &mut Ctx, args: &[&str]) -> Vec<u8> {
    t.redis::<Vec<u8>>(args)
}

fn stored_record_bytes_match_storage_md(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "hello", &["ID", "m1", "TAG", "t", "KEY", "k", "HEADER", "a", "b", "HEADER", "c", "d"]);
    let created = t.get("q", "m1").unwrap().i("created") as u64;
    let want = record(b"m1", b"hello", b"t", b"k", &[b"a", b"b", b"c", b"d"], created, 0, 1, 0, b"", b"");
    assert_eq!(raw(&mut t, &["LINDEX", "msg:{q}", "0"]), want);
    assert_eq!(&want[..4], b"\x9b\xa2m1");

    // Server-made id: stored as "". Longer strings: str8 and str16.
    let body40 = "x".repeat(40);
    let body300 = "y".repeat(300);
    let id2 = t.push("q", &body40, &[]);
    let id3 = t.push("q", &body300, &["TAG", &"g".repeat(31), "KEY", &"k".repeat(32)]);
    let c2: u64 = id2.split_once('-').unwrap().0.parse().unwrap();
    let c3: u64 = id3.split_once('-').unwrap().0.parse().unwrap();
    assert_eq!(raw(&mut t, &["LINDEX", "msg:{q}", "1"]), record(b"", body40.as_bytes(), b"", b"", &[], c2, 0, 2, 0, b"", b""));
    let r3 = record(b"", body300.as_bytes(), "g".repeat(31).as_bytes(), "k".repeat(32).as_bytes(), &[], c3, 0, 3, 0, b"", b"");
    assert_eq!(raw(&mut t, &["LINDEX", "msg:{q}", "2"]), r3);
    assert!(r3.windows(3).any(|w| w == [0xda, 0x01, 0x2c]), "str16 for 300 bytes");

    // In flight: bak:{q} receipt -> deadline, inf:{q} receipt -> record with attempt,
    // deliveries and consumer.
    let m = t.fetch1("q", &["CONSUMER", "w1", "LOCK", "60000"]);
    let receipt = m.s("receipt");
    assert_receipt(&receipt, 1, 1);
    let score: i64 = t.redis(&["ZSCORE", "bak:{q}", &receipt]);
    assert_eq!(score, m.i("deadline"));
    assert_eq!(
        raw(&mut t, &["HGET", "inf:{q}", &receipt]),
        record(b"m1", b"hello", b"t", b"k", &[b"a", b"b", b"c", b"d"], created, 1, 1, 1, b"", b"w1")
    );
    // Failed with a reason; consumer cleared.
    t.int("nack", "q", &[&receipt, "FAIL", "REASON", "bad"]);
    assert_eq!(
        raw(&mut t, &["LINDEX", "fai:{q}", "0"]),
        record(b"m1", b"hello", b"t", b"k", &[b"a", b"b", b"c", b"d"], created, 1, 1, 1, b"bad", b"")
    );
    // Delayed: the record is the member, due the score.
    t.config("q", &["backoff-ms", "100000"]);
    let m = t.fetch1("q", &[]);
    assert_receipt(&m.s("receipt"), 2, 1);
    t.int("nack", "q", &[&m.s("receipt")]);
    let members: Vec<Vec<u8>> = t.redis(&["ZRANGE", "dly:{q}", "0", "-1"]);
    assert_eq!(members, vec![record(b"", body40.as_bytes(), b"", b"", &[], c2, 1, 2, 1, b"", b"")]);
    let st: BTreeMap<String, String> = t.redis(&["HGETALL", "st:{q}"]);
    assert_eq!(st["offset"], "3");
    assert!(!st.contains_key("pushed") && !st.contains_key("acked"), "pushed and acked are derived, never stored: {st:?}");
    let dup: i64 = t.redis(&["ZSCORE", "dup:{q}", "m1"]);
    assert_eq!(dup as u64, created);
}

fn fetch_stores_every_encoding_size_byte_for_byte(ed: Edition) {
    // Offsets, bodies, ids, tags, keys and header lists at each MessagePack size boundary:
    // FETCH stores the record with attempt, deliveries and consumer changed, every other
    // byte as storage.md has it.
    let mut t = Ctx::new(ed);
    let pairs: Vec<String> = (0..9).map(|i| format!("h{i}")).collect();
    let mut many = Vec::new();
    for p in &pairs {
        many.extend(["HEADER", p.as_str(), "v"]);
    }
    let flat: Vec<&[u8]> = pairs.iter().flat_map(|p| [p.as_bytes(), b"v".as_slice()]).collect();
    let cases: [(u64, usize, &[&str]); 9] = [
        (126, 31, &[]),
        (127, 32, &["CONSUMER-ONLY"]),
        (254, 255, &["TAG", "t"]),
        (255, 256, &["KEY", "k"]),
        (65_534, 65_535, &[]),
        (65_535, 65_536, &["HEADERS"]),
        (4_294_967_294, 0, &["ID", "an-id"]),
        (4_294_967_295, 1, &[]),
        (1 << 40, 40, &["HEADERS"]),
    ];
    for (i, (before, len, opts)) in cases.iter().enumerate() {
        let q = format!("b{i}");
        let _: i64 = t.redis(&["HSET", &format!("st:{{{q}}}"), "offset", &before.to_string()]);
        let body = "x".repeat(*len);
        let (mut args, mut headers, mut consumer) = (Vec::new(), Vec::new(), "");
        match opts {
            ["HEADERS"] => {
                args.extend(many.iter().copied());
                headers.clone_from(&flat);
            }
            ["CONSUMER-ONLY"] => consumer = "w",
            _ => args.extend(opts.iter().copied()),
        }
        let id = t.push(&q, &body, &args);
        let created = t.get(&q, &id).unwrap().i("created") as u64;
        let fetch_args: Vec<&str> = if consumer.is_empty() { vec![] } else { vec!["CONSUMER", consumer] };
        let m = t.fetch1(&q, &fetch_args);
        let given = |name: &str| opts.iter().position(|o| *o == name).map_or("", |at| opts[at + 1]);
        let want = record(
            given("ID").as_bytes(),
            body.as_bytes(),
            given("TAG").as_bytes(),
            given("KEY").as_bytes(),
            &headers,
            created,
            1,
            before + 1,
            1,
            b"",
            consumer.as_bytes(),
        );
        assert_eq!(raw(&mut t, &["HGET", &format!("inf:{{{q}}}"), &m.s("receipt")]), want, "case {i}");
        assert_eq!((m.i("offset") as u64, m.s("id")), (before + 1, id), "case {i}");
    }
    // Attempt and deliveries that grow out of a size, and an error that stays.
    let _: i64 = t.redis(&["DEL", "msg:{c}"]);
    let mut c = redis::cmd("RPUSH");
    c.arg("msg:{c}").arg(record(b"", b"again", b"", b"", &[], 1_700_000_000_000, 127, 9, 255, b"why", b""));
    let _: i64 = c.query(&mut t.c).unwrap();
    let m = t.fetch1("c", &[]);
    assert_eq!((m.i("attempt"), m.s("id")), (128, "1700000000000-9".to_string()));
    assert_eq!(
        raw(&mut t, &["HGET", "inf:{c}", &m.s("receipt")]),
        record(b"", b"again", b"", b"", &[], 1_700_000_000_000, 128, 9, 256, b"why", b"")
    );
}

fn records_written_by_hand_are_read(ed: Edition) {
    // A record as the other edition (or a later version, with a 12th field) writes it.
    let mut t = Ctx::new(ed);
    let mut rec = record(b"", b"from-elsewhere", b"tg", b"", &[b"h", b"v"], 1_700_000_000_000, 2, 7, 5, b"old", b"");
    rec[0] = 0x9c;
    mp_str(&mut rec, b"future field");
    let mut c = redis::cmd("RPUSH");
    c.arg("msg:{q}").arg(&rec);
    let _: i64 = c.query(&mut t.c).unwrap();
    // MessagePack bin strings (0xc4) are read like str ones.
    let mut bin = vec![0x9b, 0xa0, 0xc4, 0x03];
    bin.extend_from_slice(b"bin");
    bin.extend_from_slice(&[0xa0, 0xa0, 0x92, 0xc4, 0x01, b'x', 0xa1, b'y']);
    mp_uint(&mut bin, 1_700_000_000_001);
    bin.extend_from_slice(&[0x00, 0x08, 0x00, 0xa0, 0xa0]);
    let mut c = redis::cmd("RPUSH");
    c.arg("msg:{q}").arg(&bin);
    let _: i64 = c.query(&mut t.c).unwrap();
    let _: i64 = t.redis(&["HSET", "st:{q}", "offset", "8"]);
    let m = t.fetch("q", &["COUNT", "2"]);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].s("id"), "1700000000000-7");
    assert_eq!((m[0].s("body"), m[0].s("tag"), m[0].i("attempt")), ("from-elsewhere".into(), "tg".into(), 3));
    assert_receipt(&m[0].s("receipt"), 7, 6);
    assert_eq!(m[0].headers()["h"], "v");
    assert_eq!((m[1].s("id"), m[1].s("body")), ("1700000000001-8".into(), "bin".into()));
    assert_receipt(&m[1].s("receipt"), 8, 1);
    assert_eq!(m[1].headers()["x"], "y");
    assert_eq!(t.stat("q", "errors"), 0);
    // Written back, the later version's field is kept.
    let stored = raw(&mut t, &["HGET", "inf:{q}", &m[0].s("receipt")]);
    assert_eq!(stored[0], 0x9c);
    assert!(stored.ends_with(b"\xacfuture field"));
    assert_eq!(t.push("q", "next", &[]).split_once('-').unwrap().1, "9");
}

fn undecodable_records_are_quarantined_to_errors(ed: Edition) {
    let mut t = Ctx::new(ed);
    let _: i64 = t.redis(&["RPUSH", "msg:{q}", "\u{1}garbage"]);
    t.push("q", "good", &[]);
    assert_eq!(t.stat("q", "oldest_ready_ms"), 0, "STATS reads past it");
    let before = t.now();
    assert_eq!(bodies(&t.fetch("q", &["COUNT", "2"])), vec!["good"]);
    let e = t.peek("q", &["ERRORS"]);
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].b("body"), e[0].s("error"), e[0].i("offset")), (b"\x01garbage".to_vec(), "corrupt record".into(), 0));
    let created = e[0].i("created") as u64;
    assert!(created as i64 >= before && created as i64 <= t.now());
    assert_eq!(
        raw(&mut t, &["LINDEX", "err:{q}", "0"]),
        record(b"", b"\x01garbage", b"", b"", &[], created, 0, 0, 0, b"corrupt record", b"")
    );
    // RECOVER ERRORS brings it back to ready as a record; FETCH then hands out the bytes.
    assert_eq!(ints(&t.run("recover", "q", &["ERRORS"])), vec![0, 0, 1]);
    assert_eq!(t.fetch1("q", &[]).b("body"), b"\x01garbage");
}

fn keys_of_the_wrong_type_are_refused_and_nothing_changes(ed: Edition) {
    let mut t = Ctx::new(ed);
    // A string where the ready list belongs: PUSH stores nothing.
    let _: () = t.redis(&["SET", "msg:{a}", "x"]);
    let snap = t.snapshot();
    assert_eq!(t.err("push", "a", &["job"]), "WRONGTYPE Operation against a key holding the wrong kind of value");
    assert_eq!(t.snapshot(), snap, "no offset taken, nothing stored");
    // A string where the in-flight set belongs: FETCH hands out nothing and loses nothing.
    t.push("b", "job", &[]);
    let _: () = t.redis(&["SET", "bak:{b}", "x"]);
    let snap = t.snapshot();
    assert!(t.err("fetch", "b", &[]).starts_with("WRONGTYPE"));
    assert_eq!(t.snapshot(), snap, "the message is still ready");
    // The same where the in-flight records belong (the Lua edition takes the message off
    // ready before it writes there, and must put it back), with one message and with several.
    t.push("e", "first", &[]);
    t.push("e", "second", &[]);
    let _: () = t.redis(&["SET", "inf:{e}", "x"]);
    let snap = t.snapshot();
    assert!(t.err("fetch", "e", &[]).starts_with("WRONGTYPE"));
    assert!(t.err("fetch", "e", &["COUNT", "2"]).starts_with("WRONGTYPE"));
    assert_eq!(t.snapshot(), snap, "both messages still ready, in their order");
    // And where the errors belong, met with a record that does not decode at the front.
    let _: i64 = t.redis(&["LPUSH", "msg:{f}", "\u{1}bad"]);
    t.push("f", "good", &[]);
    let _: () = t.redis(&["SET", "err:{f}", "x"]);
    let snap = t.snapshot();
    assert!(t.err("fetch", "f", &[]).starts_with("WRONGTYPE"));
    assert_eq!(t.snapshot(), snap, "the record that does not decode is still first");
    // A list where the counters belong: no offset is given twice.
    let _: i64 = t.redis(&["RPUSH", "st:{c}", "x"]);
    let snap = t.snapshot();
    assert!(t.err("push", "c", &["job"]).starts_with("WRONGTYPE"));
    assert!(t.err("stats", "c", &[]).starts_with("WRONGTYPE"));
    assert_eq!(t.snapshot(), snap);
    // A counter overwritten by hand with a word: PUSH refuses rather than reuse an offset.
    t.push("d", "one", &[]);
    let _: i64 = t.redis(&["HSET", "st:{d}", "offset", "many"]);
    assert_eq!(t.err("push", "d", &["two"]), "ERR hash value is not an integer");
    assert_eq!(t.stat("d", "ready"), 1);
}

fn a_receipt_of_another_queue_is_stale(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("a", "for a", &[]);
    t.push("b", "for b", &[]);
    let ra = t.fetch1("a", &[]).s("receipt");
    let rb = t.fetch1("b", &[]).s("receipt");
    assert_eq!(ra.split('-').take(2).collect::<Vec<_>>(), rb.split('-').take(2).collect::<Vec<_>>(), "same offset and delivery");
    assert_ne!(ra, rb);
    let snap = t.snapshot();
    assert_eq!(t.int("ack", "b", &[&ra]), 0);
    assert_eq!(t.int("nack", "b", &[&ra, "FAIL"]), 0);
    assert_eq!(t.int("touch", "b", &[&ra]), 0);
    assert_eq!(t.snapshot(), snap, "queue A's receipt changes nothing in queue B");
    assert_eq!((t.int("ack", "a", &[&ra]), t.int("ack", "b", &[&rb])), (1, 1));
}

fn corrupt_records_are_passed_over_and_count_only_good_ones(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.config("q", &["dedup-window-ms", "0"]);
    t.push("q", "good-1", &["ID", "g1"]);
    let _: i64 = t.redis(&["RPUSH", "msg:{q}", "\u{1}bad", "\u{2}bad"]);
    t.push("q", "good-2", &["ID", "g2"]);
    t.push("q", "good-3", &["ID", "g3"]);
    // PEEK, GET and DEL see past them.
    assert_eq!(bodies(&t.peek("q", &[])), ["good-1", "good-2", "good-3"]);
    assert_eq!(Msg::of(&t.run("get", "q", &["g3"])).s("body"), "good-3");
    assert_eq!(t.int("del", "q", &["g3"]), 1);
    // FETCH COUNT 2 hands out two good messages; the bad ones go to errors on the way.
    assert_eq!(bodies(&t.fetch("q", &["COUNT", "2"])), ["good-1", "good-2"]);
    assert_eq!(t.stat("q", "errors"), 2);
    // Failed and errored states with a bad record in them still answer by id.
    let _: i64 = t.redis(&["RPUSH", "fai:{q}", "\u{3}bad"]);
    t.push("q", "good-4", &["ID", "g4"]);
    let m = t.fetch1("q", &[]);
    t.int("nack", "q", &[&m.s("receipt"), "FAIL"]);
    assert_eq!(bodies(&t.peek("q", &["FAILED"])), ["good-4"]);
    assert_eq!(t.int("requeue", "q", &["g4"]), 1);
    assert_eq!(bodies(&t.peek("q", &[])), ["good-4"]);
}

fn by_id_commands_find_messages_among_near_identical_bodies(ed: Edition) {
    let mut t = Ctx::new(ed);
    let pad = "x".repeat(1000);
    let body = |i: usize| format!("{{\"pad\":\"{pad}\",\"order\":{i:06},\"pad2\":\"{pad}\"}}");
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd(if ed == Edition::Module { "RMQ.PUSH" } else { "FCALL" });
        if ed == Edition::Lua {
            pipe.arg("rmq_push").arg(1);
        }
        pipe.arg("q").arg(body(i)).arg("ID").arg(format!("o-{i}")).ignore();
    }
    let _: () = pipe.query(&mut t.c).unwrap();
    t.fetch("q", &["COUNT", "1000", "LOCK", "600000"]);
    let g = Msg::of(&t.run("get", "q", &["o-2999"]));
    assert_eq!((g.s("state"), g.s("body")), ("ready".to_string(), body(2999)));
    assert_eq!(Msg::of(&t.run("get", "q", &["o-5"])).s("state"), "inflight");
    assert_eq!(t.run("get", "q", &["o-9999"]), Value::Nil);
    assert_eq!(t.int("del", "q", &["o-5", "o-1500", "o-2998", "o-9999"]), 3);
    let st = t.stats("q");
    assert_eq!((st["ready"], st["inflight"]), (1998, 999));
}

fn a_message_has_at_most_1000_headers(ed: Edition) {
    let mut t = Ctx::new(ed);
    let names: Vec<String> = (0..1001).map(|i| format!("h{i}")).collect();
    let mut args: Vec<&str> = vec!["body"];
    for n in &names[..1000] {
        args.extend_from_slice(&["HEADER", n, "v"]);
    }
    t.push("q", "x", &args[1..]);
    args.extend_from_slice(&["HEADER", &names[1000], "v"]);
    let snap = t.snapshot();
    assert_eq!(t.err("push", "q", &args), "ERR a message has at most 1000 HEADERs");
    assert_eq!(t.snapshot(), snap);
    assert_eq!(t.fetch1("q", &[]).headers().len(), 1000);
}

// ------------------------------------------------------------------------------------
// Lua edition only
// ------------------------------------------------------------------------------------

fn key_count_must_be_one(ed: Edition) {
    let mut t = Ctx::new(ed);
    let mut fcall = |f: &str, n: i64, rest: &[&str]| -> String {
        let mut c = redis::cmd("FCALL");
        c.arg(f).arg(n);
        for a in rest {
            c.arg(*a);
        }
        err_text(&c.query::<Value>(&mut t.c).unwrap_err())
    };
    assert_eq!(fcall("rmq_push", 0, &["body"]), "ERR rmq_push takes exactly one key, the queue name");
    assert_eq!(fcall("rmq_stats", 2, &["a", "b"]), "ERR rmq_stats takes exactly one key, the queue name");
    assert_eq!(fcall("rmq_queues", 1, &["a"]), "ERR rmq_queues takes no keys");
    assert_eq!(t.err("queues", "", &["extra"]), "ERR syntax error near 'extra'");
}

fn internal_faults_are_not_tracebacks(ed: Edition) {
    let mut t = Ctx::new(ed);
    // A fault in the library's own code (here: a Lua table where a record's string field
    // belongs, which only a broken library would store): a clean error, the detail in the log.
    let _: () = t.redis(&[
        "FUNCTION",
        "LOAD",
        "REPLACE",
        &common::lua_library().replace(
            "local function state_reply(rec, state, extra)",
            "local function state_reply(rec, state, extra)\n    if rec[BODY] == 'boom' then return {} .. '' end",
        ),
    ]);
    t.push("q", "boom", &[]);
    assert_eq!(t.err("peek", "q", &[]), "ERR internal error");
    assert!(t.server.log().contains("rmq: rmq_peek internal error"));
}

fn every_key_of_the_queue_may_be_declared_for_a_cluster(ed: Edition) {
    let mut t = Ctx::new(ed);
    let keys: Vec<String> =
        ["msg", "dly", "bak", "inf", "fai", "err", "cfg", "st", "dup", "log"].iter().map(|k| format!("{k}:{{q}}")).collect();
    let call = |t: &mut Ctx, f: &str, keys: &[String], args: &[&str]| -> RedisResult<Value> {
        let mut c = redis::cmd("FCALL");
        c.arg(f).arg(keys.len() + 1).arg("q").arg(keys);
        for a in args {
            c.arg(*a);
        }
        c.query(&mut t.c)
    };
    let id = text(&call(&mut t, "rmq_push", &keys, &["hello"]).unwrap());
    assert!(id.ends_with("-1"));
    let got = msgs(&call(&mut t, "rmq_fetch", &keys, &[]).unwrap());
    assert_eq!(int(&call(&mut t, "rmq_ack", &keys, &[&got[0].s("receipt")]).unwrap()), 1);
    let mut wrong = keys.clone();
    wrong.swap(0, 1);
    let e = err_text(&call(&mut t, "rmq_push", &wrong, &["x"]).unwrap_err());
    assert!(e.starts_with("ERR rmq_push with 11 keys takes the queue name and then msg:{q}"), "{e}");
    let e = err_text(&call(&mut t, "rmq_push", &keys[..3], &["x"]).unwrap_err());
    assert_eq!(e, "ERR rmq_push takes exactly one key, the queue name");
}

fn a_full_server_can_still_be_drained(ed: Edition) {
    // maxmemory with noeviction (what docs/operations.md recommends): once Redis is full, the
    // functions that free memory or write a fixed amount still run, so consumers can drain.
    let mut t = Ctx::new(ed);
    t.config("q", &["backoff-ms", "0"]);
    for i in 0..20 {
        t.push("q", &format!("m{i}"), &[]);
    }
    let used: String = t.redis(&["INFO", "memory"]);
    let used: u64 = used.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    let _: () = t.redis(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let _: () = t.redis(&["CONFIG", "SET", "maxmemory", &(used / 2).to_string()]);
    assert!(t.err("push", "q", &["more"]).starts_with("OOM"), "PUSH grows the data: refused");
    let m = t.fetch("q", &["COUNT", "5"]);
    assert_eq!(m.len(), 5);
    assert_eq!(t.int("ack", "q", &[&m[0].s("receipt")]), 1);
    assert_eq!(t.int("nack", "q", &[&m[1].s("receipt")]), 1);
    assert_eq!(t.int("nack", "q", &[&m[2].s("receipt"), "FAIL"]), 1);
    assert!(t.int("touch", "q", &[&m[3].s("receipt")]) > 0);
    t.config("q", &["lock-ms", "1000"]);
    assert_eq!(ints(&t.run("recover", "q", &["FAILED"])), vec![0, 1, 0]);
    assert_eq!(t.int("del", "q", &[&m[4].s("id")]), 1);
    assert!(t.int("purge", "q", &["READY"]) > 0);
    let _: () = t.redis(&["CONFIG", "SET", "maxmemory", "0"]);
}

fn read_only_functions_run_with_fcall_ro(ed: Edition) {
    let mut t = Ctx::new(ed);
    t.push("q", "x", &[]);
    for (f, args) in [("rmq_stats", vec![]), ("rmq_peek", vec![]), ("rmq_get", vec!["nope"]), ("rmq_log", vec![])] {
        let mut c = redis::cmd("FCALL_RO");
        c.arg(f).arg(1).arg("q");
        for a in args {
            c.arg(a);
        }
        let r: RedisResult<Value> = c.query(&mut t.c);
        assert!(r.is_ok(), "{f}: {r:?}");
    }
    let r: RedisResult<Value> = redis::cmd("FCALL_RO").arg("rmq_queues").arg(0).query(&mut t.c);
    assert!(r.is_ok());
    let r: RedisResult<Value> = redis::cmd("FCALL_RO").arg("rmq_push").arg(1).arg("q").arg("x").query(&mut t.c);
    assert!(r.is_err(), "PUSH writes");
}

// ------------------------------------------------------------------------------------
// The runs: one #[test] per scenario and edition.
// ------------------------------------------------------------------------------------

macro_rules! run_on {
    ($module:ident, $edition:expr; $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::$name($edition)
                }
            )*
        }
    };
}

/// The contract's scenarios, run against both editions: they must answer alike.
macro_rules! on_both_editions {
    ($($name:ident),* $(,)?) => {
        mod both {
            run_on!(lua, crate::Edition::Lua; $($name),*);
            run_on!(module, crate::Edition::Module; $($name),*);
            use super::*;
        }
    };
}

on_both_editions!(
    push_fetch_ack_round_trip_has_all_fields,
    message_without_tag_key_headers_has_empty_values,
    server_made_ids_are_created_dash_offset_and_increase,
    fetch_is_fifo_and_count_limits,
    fetch_compact_gives_the_values_in_the_maps_order,
    fetch_on_empty_queue_is_null_in_resp2_and_resp3,
    consumer_is_kept_while_in_flight,
    push_argument_errors_change_nothing,
    keywords_are_case_insensitive,
    dedup_returns_same_id_within_window_and_accepts_after,
    dedup_window_is_trimmed_a_few_at_a_time,
    maxlen_refuses_with_queue_full_after_dedup,
    delay_and_at_make_messages_delayed_until_due,
    promoted_messages_go_behind_what_is_ready,
    nack_retry_uses_exponential_backoff_capped,
    nack_retry_without_backoff_goes_to_the_back_of_ready,
    nack_fail_and_error_move_to_failed_and_errors,
    nack_argument_errors_change_nothing,
    max_attempts_by_nack_sends_to_failed,
    max_attempts_by_lock_expiry_sends_to_failed,
    stale_receipt_cannot_ack_nack_or_touch,
    expired_receipt_still_acks_until_reclaimed,
    touch_extends_the_lock,
    fetch_argument_errors_change_nothing,
    recover_counts_each_source_and_resets_attempts,
    recover_sends_expired_at_max_attempts_to_failed_then_back,
    recover_does_not_promote_delayed,
    ordered_queue_hands_out_one_at_a_time,
    ordered_queue_retry_goes_to_the_front,
    ordered_queue_reclaimed_message_goes_to_the_front,
    ordered_queue_retry_holds_the_line_during_backoff,
    ordered_queue_hold_is_released_by_del_or_requeue,
    stats_of_an_unused_queue_are_zeros,
    stats_count_every_state_and_event,
    peek_shows_state_specific_fields,
    peek_pages_with_start_and_count,
    get_finds_a_message_in_any_state,
    del_removes_messages_from_any_state,
    requeue_moves_failed_errored_and_delayed_only,
    purge_deletes_one_state_or_all,
    config_get_and_set,
    queues_lists_queues_with_any_key,
    log_is_written_only_while_on,
    deliveries_and_delays_are_logged_with_who_and_until_when,
    a_paused_queue_hands_out_nothing_and_everything_else_goes_on,
    replay_pushes_copies_with_replay_of_header,
    resp3_replies_are_maps,
    stored_record_bytes_match_storage_md,
    fetch_stores_every_encoding_size_byte_for_byte,
    records_written_by_hand_are_read,
    undecodable_records_are_quarantined_to_errors,
    keys_of_the_wrong_type_are_refused_and_nothing_changes,
    a_receipt_of_another_queue_is_stale,
    corrupt_records_are_passed_over_and_count_only_good_ones,
    by_id_commands_find_messages_among_near_identical_bodies,
    a_message_has_at_most_1000_headers,
);

// The Lua edition's own rules (FCALL key counts, FCALL_RO, faults, BLOCK that never waits).
run_on!(lua_only, super::Edition::Lua;
    key_count_must_be_one,
    internal_faults_are_not_tracebacks,
    read_only_functions_run_with_fcall_ro,
    fetch_block_is_checked_and_answers_null_when_empty,
    a_full_server_can_still_be_drained,
    every_key_of_the_queue_may_be_declared_for_a_cluster,
);
