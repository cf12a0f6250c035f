//! The module's own behaviour, against a real redis-server with librmq.so loaded: fencing,
//! the guard, BLOCK, replication, AOF crash recovery, hostile input, and the guard's stalls.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::module_calls::*;
use common::values::*;
use common::{Server, ServerOptions};
use redis::{Connection, Value};

fn module() -> Server {
    Server::start(ServerOptions::module())
}

/// Polls `f` until it holds, for at most `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn llen(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("LLEN").arg(key).query(c).unwrap()
}

#[test]
fn push_fetch_ack_round_trip_with_every_field() {
    let s = module();
    let mut c = s.conn();
    let id = text(&ok(&mut c, "RMQ.PUSH", "jobs", &["hello", "TAG", "email", "KEY", "user:1", "HEADER", "trace", "abc"]));
    let m = fetch_one(&mut c, "jobs", &["LOCK", "5000", "CONSUMER", "w1"]);
    assert_eq!(field(&m, "id"), id);
    assert_eq!(field(&m, "body"), "hello");
    assert_eq!(field(&m, "tag"), "email");
    assert_eq!(field(&m, "key"), "user:1");
    assert_eq!(map(&m["headers"]).get("trace").map(text), Some("abc".into()));
    assert_eq!(field_int(&m, "attempt"), 1);
    assert_eq!(field_int(&m, "offset"), 1);
    let created = field_int(&m, "created");
    assert_eq!(id, format!("{created}-1"), "server-made ids are <created>-<offset>");
    assert!(field_int(&m, "deadline") >= created + 5000);
    assert_eq!(int(&ok(&mut c, "RMQ.ACK", "jobs", &[&field(&m, "receipt")])), 1);
    let st = stats(&mut c, "jobs");
    assert_eq!((st["ready"], st["inflight"], st["pushed"], st["acked"]), (0, 0, 1, 1));
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(keys, vec!["st:{jobs}".to_string()], "an acked message leaves nothing behind");
}

#[test]
fn stale_receipt_cannot_ack_nack_or_touch_after_redelivery() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["job"]);
    let first = fetch_one(&mut c, "q", &["LOCK", "50"]);
    std::thread::sleep(Duration::from_millis(80));
    let second = fetch_one(&mut c, "q", &["LOCK", "10000"]);
    assert_eq!(field(&first, "id"), field(&second, "id"));
    assert_eq!(field_int(&second, "attempt"), 2);
    let stale = field(&first, "receipt");
    assert_ne!(stale, field(&second, "receipt"));
    assert_eq!(int(&ok(&mut c, "RMQ.ACK", "q", &[&stale])), 0);
    assert_eq!(int(&ok(&mut c, "RMQ.NACK", "q", &[&stale, "FAIL"])), 0);
    assert_eq!(int(&ok(&mut c, "RMQ.TOUCH", "q", &[&stale])), 0);
    assert_eq!(int(&ok(&mut c, "RMQ.ACK", "q", &["garbage receipt"])), 0, "malformed receipts are stale, not errors");
    assert_eq!(stats(&mut c, "q")["inflight"], 1, "the stale receipt changed nothing");
    assert_eq!(int(&ok(&mut c, "RMQ.ACK", "q", &[&field(&second, "receipt")])), 1);
}

#[test]
fn receipt_stays_current_after_expiry_until_reclaimed() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["job"]);
    let m = fetch_one(&mut c, "q", &["LOCK", "20"]);
    std::thread::sleep(Duration::from_millis(50));
    // Nobody reclaimed it yet (the guard runs every 3 s): the late consumer may still ACK.
    assert_eq!(int(&ok(&mut c, "RMQ.ACK", "q", &[&field(&m, "receipt")])), 1);
}

#[test]
fn touch_extends_the_lock_and_keeps_the_message_from_others() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["job"]);
    let m = fetch_one(&mut c, "q", &["LOCK", "100"]);
    let deadline = int(&ok(&mut c, "RMQ.TOUCH", "q", &[&field(&m, "receipt"), "LOCK", "60000"]));
    assert!(deadline >= field_int(&m, "deadline") + 59_000);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(ok(&mut c, "RMQ.FETCH", "q", &[]), Value::Nil, "a touched message is not handed out again");
}

#[test]
fn vanished_consumer_message_is_back_after_lock_and_guard_with_no_client_call() {
    let s = Server::start(ServerOptions::module().arg("guard-interval-ms", "100"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["job"]);
    fetch_one(&mut c, "q", &["LOCK", "200"]);
    // From here on only plain reads: the guard alone must bring the message back.
    assert_eq!(llen(&mut c, "msg:{q}"), 0);
    assert!(eventually(Duration::from_secs(5), || llen(&mut c, "msg:{q}") == 1), "the guard never reclaimed it");
    let info: String = redis::cmd("INFO").arg("rmq").query(&mut c).unwrap();
    assert!(info.contains("rmq_guard_reclaimed:1"), "{info}");
    // The longest tick is kept: a tick that moved a message took some time, and no later
    // idle tick lowers it.
    let field = |name: &str| -> u64 {
        let line = info.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {info}"));
        line[name.len() + 1..].trim().parse().unwrap()
    };
    assert!(field("rmq_guard_longest_us") >= field("rmq_guard_last_us"), "{info}");
    assert!(field("rmq_guard_longest_us") > 0, "{info}");
}

#[test]
fn lock_expiry_at_max_attempts_sends_the_message_to_failed() {
    let s = Server::start(ServerOptions::module().arg("max-attempts", "2").arg("guard-interval-ms", "50"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["poison"]);
    for _ in 0..2 {
        fetch_one(&mut c, "q", &["LOCK", "30"]);
        std::thread::sleep(Duration::from_millis(60));
    }
    assert!(eventually(Duration::from_secs(3), || llen(&mut c, "fai:{q}") == 1));
    let st = stats(&mut c, "q");
    assert_eq!((st["ready"], st["inflight"], st["failed"], st["dead"]), (0, 0, 1, 1));
    // RECOVER FAILED puts it back with its attempts reset.
    assert_eq!(array(&ok(&mut c, "RMQ.RECOVER", "q", &["FAILED"])).iter().map(int).collect::<Vec<_>>(), vec![0, 1, 0]);
    assert_eq!(field_int(&fetch_one(&mut c, "q", &[]), "attempt"), 1);
}

#[test]
fn nack_retries_with_backoff_then_fails_at_max_attempts() {
    let s = Server::start(ServerOptions::module().arg("max-attempts", "3").arg("backoff-ms", "40").arg("guard-interval-ms", "20"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["job"]);
    let m = fetch_one(&mut c, "q", &[]);
    assert_eq!(int(&ok(&mut c, "RMQ.NACK", "q", &[&field(&m, "receipt"), "REASON", "flaky"])), 1);
    let st = stats(&mut c, "q");
    assert_eq!((st["delayed"], st["retried"]), (1, 1), "backoff 40 ms after attempt 1");
    assert_eq!(ok(&mut c, "RMQ.FETCH", "q", &[]), Value::Nil);
    std::thread::sleep(Duration::from_millis(60));
    let m = fetch_one(&mut c, "q", &[]);
    assert_eq!(field_int(&m, "attempt"), 2);
    ok(&mut c, "RMQ.NACK", "q", &[&field(&m, "receipt"), "RETRY", "DELAY", "0"]);
    let m = fetch_one(&mut c, "q", &[]);
    assert_eq!(field_int(&m, "attempt"), 3);
    ok(&mut c, "RMQ.NACK", "q", &[&field(&m, "receipt")]);
    let st = stats(&mut c, "q");
    assert_eq!((st["failed"], st["dead"], st["retried"]), (1, 1, 2));
}

/// RMQ.PUSH `q` `args` from another connection after 150 ms, while this one waits.
fn push_soon(s: &Server, args: &'static [&'static str]) -> std::thread::JoinHandle<()> {
    let url = s.url();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: String = redis::cmd("RMQ.PUSH").arg("q").arg(args).query(&mut c).unwrap();
    })
}

#[test]
fn block_is_woken_by_push() {
    let s = module();
    let mut waiter = s.conn();
    let pusher = push_soon(&s, &["wake"]);
    let started = Instant::now();
    let m = fetch_one(&mut waiter, "q", &["BLOCK", "10000"]);
    assert_eq!(field(&m, "body"), "wake");
    assert!(started.elapsed() < Duration::from_secs(5));
    pusher.join().unwrap();
}

#[test]
fn a_blocked_compact_fetch_is_answered_compact() {
    let s = module();
    let mut waiter = s.conn();
    let pusher = push_soon(&s, &["wake", "HEADER", "h", "v"]);
    let got = ok(&mut waiter, "RMQ.FETCH", "q", &["BLOCK", "10000", "COMPACT"]);
    let m = array(&array(&got)[0]);
    assert_eq!((text(&m[1]), int(&m[3]), int(&m[8])), ("wake".into(), 1, 1), "body, attempt, offset in place");
    assert_eq!(array(&m[6]).iter().map(text).collect::<Vec<_>>(), vec!["h", "v"]);
    pusher.join().unwrap();
}

#[test]
fn block_is_woken_by_nack_retry() {
    let s = Server::start(ServerOptions::module().arg("backoff-ms", "0"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["job"]);
    let m = fetch_one(&mut c, "q", &[]);
    let url = s.url();
    let receipt = field(&m, "receipt");
    let nacker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let n: i64 = redis::cmd("RMQ.NACK").arg("q").arg(receipt).query(&mut c).unwrap();
        assert_eq!(n, 1);
    });
    let mut waiter = s.conn();
    let m = fetch_one(&mut waiter, "q", &["BLOCK", "10000"]);
    assert_eq!(field_int(&m, "attempt"), 2);
    nacker.join().unwrap();
}

#[test]
fn block_is_woken_by_the_guard_reclaiming_an_expired_lock() {
    let s = Server::start(ServerOptions::module().arg("guard-interval-ms", "50"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["job"]);
    fetch_one(&mut c, "q", &["LOCK", "200"]);
    let m = fetch_one(&mut c, "q", &["BLOCK", "10000"]);
    assert_eq!(field_int(&m, "attempt"), 2);
}

#[test]
fn block_is_woken_by_a_delayed_message_coming_due() {
    let s = Server::start(ServerOptions::module().arg("guard-interval-ms", "50"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["later", "DELAY", "200"]);
    let m = fetch_one(&mut c, "q", &["BLOCK", "10000"]);
    assert_eq!(field(&m, "body"), "later");
}

#[test]
fn block_waits_while_paused_and_is_woken_by_resume() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "paused", "1"]);
    ok(&mut c, "RMQ.PUSH", "q", &["held"]);
    let url = s.url();
    let resumer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let stats: Value = redis::cmd("RMQ.STATS").arg("q").query(&mut c).unwrap();
        let _: () = redis::cmd("RMQ.CONFIG").arg("q").arg("SET").arg("paused").arg("0").query(&mut c).unwrap();
        stats
    });
    let started = Instant::now();
    let m = fetch_one(&mut c, "q", &["BLOCK", "10000"]);
    assert_eq!(field(&m, "body"), "held");
    assert!(started.elapsed() >= Duration::from_millis(250), "handed out while paused");
    assert!(started.elapsed() < Duration::from_secs(5), "not woken by the resume");
    let stats = common::values::map(&resumer.join().unwrap());
    assert_eq!(common::values::int(&stats["ready"]), 1, "the message waited in ready while paused");
}

#[test]
fn block_timeout_returns_null() {
    let s = module();
    let mut c = s.conn();
    let started = Instant::now();
    assert_eq!(ok(&mut c, "RMQ.FETCH", "q", &["BLOCK", "200"]), Value::Nil);
    assert!(started.elapsed() >= Duration::from_millis(190));
}

#[test]
fn block_inside_multi_answers_at_once() {
    let s = module();
    let mut c = s.conn();
    let started = Instant::now();
    let (v,): (Value,) = redis::pipe().atomic().cmd("RMQ.FETCH").arg("q").arg("BLOCK").arg("0").query(&mut c).unwrap();
    assert_eq!(v, Value::Nil);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn bad_input_is_refused_with_an_error_naming_the_argument_and_changes_nothing() {
    let s = module();
    let mut c = s.conn();
    assert_eq!(err(&mut c, "RMQ.PUSH", "a{b}", &["x"]), "ERR invalid queue name");
    assert!(err(&mut c, "RMQ.FETCH", "q", &["LOCK", "0"]).contains("LOCK must be a positive integer of milliseconds"));
    assert!(err(&mut c, "RMQ.FETCH", "q", &["COUNT", "1001"]).contains("COUNT must not exceed max-fetch-count (1000)"));
    assert!(err(&mut c, "RMQ.PUSH", "q", &["x", "DELAY", "1", "AT", "5"]).contains("DELAY and AT cannot be used together"));
    assert!(err(&mut c, "RMQ.PUSH", "q", &["x", "FOO"]).contains("syntax error near 'FOO'"));
    assert!(err(&mut c, "RMQ.NACK", "q", &["r", "FAIL", "ERROR"]).contains("RETRY, FAIL and ERROR cannot be used together"));
    assert!(err(&mut c, "RMQ.PUSH", "q", &[]).contains("wrong number of arguments for 'rmq.push' command"));
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(keys.is_empty(), "refused commands wrote {keys:?}");
}

#[test]
fn dedup_window_drops_a_resent_id() {
    let s = module();
    let mut c = s.conn();
    assert_eq!(text(&ok(&mut c, "RMQ.PUSH", "q", &["a", "ID", "order-1"])), "order-1");
    assert_eq!(text(&ok(&mut c, "RMQ.PUSH", "q", &["a", "ID", "order-1"])), "order-1");
    let m = fetch_one(&mut c, "q", &[]);
    ok(&mut c, "RMQ.ACK", "q", &[&field(&m, "receipt")]);
    // Even after the ACK, a re-send within the window is dropped.
    ok(&mut c, "RMQ.PUSH", "q", &["a", "ID", "order-1"]);
    let st = stats(&mut c, "q");
    assert_eq!((st["pushed"], st["dups"], st["ready"]), (1, 2, 0));
}

/// The module keeps the key names of a few hundred recently used queues from one command to
/// the next; a thousand queues used in turn keep replacing one another's names.
#[test]
fn commands_over_more_queues_than_the_kept_key_names_each_reach_their_own_keys() {
    let s = module();
    let mut c = s.conn();
    let n = 1000;
    let mut pipe = redis::pipe();
    for round in 0..2 {
        for i in 0..n {
            pipe.cmd("RMQ.PUSH").arg(format!("q{i}")).arg(format!("{i}-{round}"));
        }
    }
    pipe.query::<()>(&mut c).unwrap();
    for i in (0..n).rev() {
        let q = format!("q{i}");
        let m = fetch_one(&mut c, &q, &[]);
        assert_eq!(field(&m, "body"), format!("{i}-0"), "{q} hands out its own first message");
        assert_eq!(llen(&mut c, &format!("msg:{{{q}}}")), 1, "{q} keeps its second message");
        let in_flight: i64 = redis::cmd("ZCARD").arg(format!("bak:{{{q}}}")).query(&mut c).unwrap();
        assert_eq!(in_flight, 1);
        assert_eq!(int(&ok(&mut c, "RMQ.ACK", &q, &[&field(&m, "receipt")])), 1);
    }
    for i in 0..n {
        let q = format!("q{i}");
        let st = stats(&mut c, &q);
        assert_eq!((st["ready"], st["inflight"], st["pushed"], st["acked"]), (1, 0, 2, 1), "{q}");
    }
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(keys, 2 * n, "a ready list and a counters hash per queue, nothing else");
    // A name of the longest length queue names may have.
    let long = "L".repeat(200);
    ok(&mut c, "RMQ.PUSH", &long, &["long"]);
    let m = fetch_one(&mut c, &long, &[]);
    assert_eq!(field(&m, "body"), "long");
    assert_eq!(int(&ok(&mut c, "RMQ.ACK", &long, &[&field(&m, "receipt")])), 1);
    assert_eq!(stats(&mut c, &long)["acked"], 1);
}

#[test]
fn ordered_queue_hands_out_one_at_a_time_and_retries_hold_the_line() {
    let s = Server::start(ServerOptions::module().arg("backoff-ms", "0"));
    let mut c = s.conn();
    let _: () = redis::cmd("HSET").arg("cfg:{o}").arg("ordered").arg("1").query(&mut c).unwrap();
    for b in ["1", "2", "3"] {
        ok(&mut c, "RMQ.PUSH", "o", &[b]);
    }
    let got = messages(&ok(&mut c, "RMQ.FETCH", "o", &["COUNT", "3"]));
    assert_eq!(got.len(), 1);
    assert_eq!(ok(&mut c, "RMQ.FETCH", "o", &[]), Value::Nil, "nothing while one is in flight");
    ok(&mut c, "RMQ.NACK", "o", &[&field(&got[0], "receipt")]);
    let again = fetch_one(&mut c, "o", &[]);
    assert_eq!(field(&again, "body"), "1", "a retried message goes to the front");
    ok(&mut c, "RMQ.ACK", "o", &[&field(&again, "receipt")]);
    assert_eq!(field(&fetch_one(&mut c, "o", &[]), "body"), "2");
}

/// Every key with its full content, scores included, for comparing two servers.
fn dump_keys(c: &mut Connection) -> BTreeMap<String, String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let t: String = redis::cmd("TYPE").arg(&k).query(c).unwrap();
        let v: Value = match t.as_str() {
            "list" => redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(c).unwrap(),
            "zset" => redis::cmd("ZRANGE").arg(&k).arg(0).arg(-1).arg("WITHSCORES").query(c).unwrap(),
            "hash" => {
                let mut h: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL").arg(&k).query(c).unwrap();
                h.sort();
                redis::Value::Array(h.into_iter().flat_map(|(a, b)| [Value::BulkString(a), Value::BulkString(b)]).collect())
            }
            "stream" => redis::cmd("XRANGE").arg(&k).arg("-").arg("+").query(c).unwrap(),
            other => panic!("unexpected type {other} of {k}"),
        };
        out.insert(k, format!("{v:?}"));
    }
    out
}

/// A primary started with `options` and a replica of it whose link is up.
fn primary_and_replica(options: ServerOptions) -> (Server, Server) {
    let primary = Server::start(options.conf("repl-diskless-sync-delay", "0"));
    let replica = Server::start(ServerOptions::module().conf("replicaof", &format!("127.0.0.1 {}", primary.port)));
    let mut r = replica.conn();
    assert!(eventually(Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
        info.contains("master_link_status:up")
    }));
    (primary, replica)
}

#[test]
fn replica_holds_identical_keys_and_takes_over_with_the_same_receipts() {
    let (primary, replica) = primary_and_replica(ServerOptions::module().arg("guard-interval-ms", "50").arg("backoff-ms", "30"));
    let mut p = primary.conn();
    let mut r = replica.conn();
    // Commands served by the Lua core replicate as plain commands too.
    ok(&mut p, "RMQ.CONFIG", "mix", &["SET", "log", "1", "max-attempts", "9"]);
    for i in 0..60 {
        let body = format!("m{i}");
        let mut args = vec![body.as_str()];
        let id = format!("id-{i}");
        if i % 3 == 0 {
            args.extend(["ID", &id]);
        }
        if i % 7 == 0 {
            args.extend(["DELAY", "40"]);
        }
        ok(&mut p, "RMQ.PUSH", "mix", &args);
    }
    let got = messages(&ok(&mut p, "RMQ.FETCH", "mix", &["COUNT", "30", "LOCK", "60"]));
    for (i, m) in got.iter().enumerate() {
        let rc = field(m, "receipt");
        match i % 5 {
            0 => drop(ok(&mut p, "RMQ.ACK", "mix", &[&rc])),
            1 => drop(ok(&mut p, "RMQ.NACK", "mix", &[&rc])),
            2 => drop(ok(&mut p, "RMQ.NACK", "mix", &[&rc, "FAIL", "REASON", "bad"])),
            3 => drop(ok(&mut p, "RMQ.NACK", "mix", &[&rc, "ERROR"])),
            _ => drop(ok(&mut p, "RMQ.TOUCH", "mix", &[&rc, "LOCK", "60000"])),
        }
    }
    // Let the guard reclaim and promote on the primary, then fetch some more with a long lock.
    std::thread::sleep(Duration::from_millis(250));
    ok(&mut p, "RMQ.RECOVER", "mix", &["ERRORS"]);
    assert_eq!(int(&ok(&mut p, "RMQ.REPLAY", "mix", &["FROM", "1", "TO", "3"])), 3);
    ok(&mut p, "RMQ.PUSH", "mix", &["doomed", "ID", "doomed", "DELAY", "600000"]);
    assert_eq!(int(&ok(&mut p, "RMQ.DEL", "mix", &["doomed"])), 1);
    ok(&mut p, "RMQ.PURGE", "mix", &["FAILED"]);
    // A shorter log, so that the replica trims it as the primary did.
    ok(&mut p, "RMQ.CONFIG", "mix", &["SET", "log-maxlen", "5"]);
    ok(&mut p, "RMQ.PUSH", "mix", &["late"]);
    let held = messages(&ok(&mut p, "RMQ.FETCH", "mix", &["COUNT", "5", "LOCK", "600000"]));
    assert!(!held.is_empty());
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
    let want = dump_keys(&mut p);
    assert!(want.contains_key("bak:{mix}") && want.contains_key("log:{mix}"), "{want:?}");
    let log_len: i64 = redis::cmd("XLEN").arg("log:{mix}").query(&mut p).unwrap();
    assert_eq!(log_len, 5, "the log was trimmed to log-maxlen");
    assert!(
        eventually(Duration::from_secs(5), || dump_keys(&mut r) == want),
        "replica differs:\nprimary {want:#?}\nreplica {:#?}",
        dump_keys(&mut r)
    );
    // Fail over: the replica becomes primary and honours a receipt the old primary gave.
    drop(primary);
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut r).unwrap();
    assert_eq!(int(&ok(&mut r, "RMQ.ACK", "mix", &[&field(&held[0], "receipt")])), 1);
}

#[test]
fn by_id_commands_read_in_slices_replicate_exactly() {
    let (primary, replica) = primary_and_replica(ServerOptions::module());
    let mut p = primary.conn();
    let mut r = replica.conn();
    // Above the size read at once: the lookups run in slices, from the module's timer.
    let mut pipe = redis::pipe();
    for i in 0..15_000 {
        pipe.cmd("RMQ.PUSH").arg("big").arg(format!("m{i}")).arg("ID").arg(format!("id-{i}"));
    }
    let _: Vec<String> = pipe.query(&mut p).unwrap();
    for m in messages(&ok(&mut p, "RMQ.FETCH", "big", &["COUNT", "4", "LOCK", "600000"])) {
        ok(&mut p, "RMQ.NACK", "big", &[&field(&m, "receipt"), "FAIL"]);
    }
    let sliced_before = info_field(&mut p, "rmq_sliced_total");
    assert_eq!(int(&ok(&mut p, "RMQ.DEL", "big", &["id-0", "id-7000", "id-14999", "nope"])), 3);
    assert_eq!(int(&ok(&mut p, "RMQ.REQUEUE", "big", &["id-1", "id-2", "id-8000"])), 2, "failed ones only");
    assert_eq!(text(&map(&ok(&mut p, "RMQ.GET", "big", &["id-2"]))["state"]), "ready");
    assert_eq!(info_field(&mut p, "rmq_sliced_total") - sliced_before, 3);
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
    let want = dump_keys(&mut p);
    assert!(
        eventually(Duration::from_secs(5), || dump_keys(&mut r) == want),
        "the replica differs from the primary after DEL and REQUEUE in slices"
    );
    let st = stats(&mut p, "big");
    assert_eq!((st["ready"], st["failed"]), (14_996, 1));
}

/// One numeric field of `INFO rmq`.
fn info_field(c: &mut Connection, name: &str) -> i64 {
    let text: String = redis::cmd("INFO").arg("rmq").query(c).unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).unwrap_or_else(|| panic!("no {name} in INFO")).trim().parse().unwrap()
}

#[test]
fn aof_after_kill9_keeps_every_unacked_message_and_holds_no_rmq_command() {
    let mut s = Server::start(ServerOptions::module().conf("appendonly", "yes").conf("appendfsync", "always"));
    let mut c = s.conn();
    let n = 2000;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("RMQ.PUSH").arg("q").arg(format!("body-{i}")).arg("ID").arg(format!("m{i}"));
    }
    let _: Vec<String> = pipe.query(&mut c).unwrap();
    let mut acked = BTreeSet::new();
    let mut inflight = BTreeSet::new();
    for _ in 0..10 {
        for m in messages(&ok(&mut c, "RMQ.FETCH", "q", &["COUNT", "100", "LOCK", "600000"])) {
            let id = field(&m, "id");
            if acked.len() < 600 {
                assert_eq!(int(&ok(&mut c, "RMQ.ACK", "q", &[&field(&m, "receipt")])), 1);
                acked.insert(id);
            } else {
                inflight.insert(id);
            }
        }
    }
    s.kill9();
    s.restart();
    let mut c = s.conn();
    let ready: Vec<Vec<u8>> = redis::cmd("LRANGE").arg("msg:{q}").arg(0).arg(-1).query(&mut c).unwrap();
    assert_eq!(ready.len(), n - 1000);
    let st = stats(&mut c, "q");
    assert_eq!((st["ready"], st["inflight"], st["acked"], st["pushed"]), ((n - 1000) as i64, 400, 600, n as i64));
    // Every in-flight receipt still works after the restart.
    let receipts: Vec<String> = redis::cmd("ZRANGE").arg("bak:{q}").arg(0).arg(-1).query(&mut c).unwrap();
    assert_eq!(receipts.len(), inflight.len());
    // Drain what is ready: no acked id comes back, every unacked one does.
    let mut seen = BTreeSet::new();
    loop {
        let got = messages(&ok(&mut c, "RMQ.FETCH", "q", &["COUNT", "500"]));
        if got.is_empty() {
            break;
        }
        for m in got {
            seen.insert(field(&m, "id"));
        }
    }
    assert!(seen.is_disjoint(&acked), "an acked message came back");
    assert_eq!(seen.len() + inflight.len() + acked.len(), n);
    // The AOF holds only plain commands.
    let mut aof = Vec::new();
    for e in std::fs::read_dir(s.dir.path().join("appendonlydir")).unwrap() {
        aof.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    assert!(!aof.is_empty());
    assert!(!aof.windows(4).any(|w| w.eq_ignore_ascii_case(b"RMQ.")), "the AOF holds an RMQ.* command");
}

#[test]
fn aof_kill9_mid_workload_loses_no_acknowledged_push() {
    let mut s = Server::start(ServerOptions::module().conf("appendonly", "yes").conf("appendfsync", "always"));
    let url = s.url();
    // A producer pushes as fast as it can and remembers every push Redis acknowledged.
    let producer = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut stored = Vec::new();
        for i in 0.. {
            let r: redis::RedisResult<String> = redis::cmd("RMQ.PUSH").arg("q").arg("b").arg("ID").arg(format!("p{i}")).query(&mut c);
            match r {
                Ok(id) => stored.push(id),
                Err(_) => break,
            }
        }
        stored
    });
    std::thread::sleep(Duration::from_millis(300));
    s.kill9();
    let stored = producer.join().unwrap();
    assert!(stored.len() > 10, "the producer barely ran");
    s.restart();
    let mut c = s.conn();
    let ready: i64 = llen(&mut c, "msg:{q}");
    // Every acknowledged push is there; at most the one in the air when Redis died is extra.
    assert!(ready as usize >= stored.len() && ready as usize <= stored.len() + 1, "{ready} ready, {} acknowledged", stored.len());
    let last: Vec<u8> = redis::cmd("LINDEX").arg("msg:{q}").arg(stored.len() as i64 - 1).query(&mut c).unwrap();
    assert!(!last.is_empty());
}

/// A seeded mix of every command with valid, malformed and hostile arguments: every reply is
/// a reply or a clean error, and the server lives.
fn random_and_malformed_commands_never_take_redis_down(ed: common::Edition) {
    use rand::{Rng, SeedableRng};
    let mut s = ed.start_with(ServerOptions::module().arg("guard-interval-ms", "10"));
    let mut c = s.conn();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    let commands = [
        "push", "fetch", "ack", "nack", "touch", "recover", "stats", "peek", "get", "del", "requeue", "purge", "config", "queues", "log",
        "replay",
    ];
    let words: &[&[u8]] = &[
        b"COUNT",
        b"LOCK",
        b"BLOCK",
        b"CONSUMER",
        b"ID",
        b"TAG",
        b"KEY",
        b"HEADER",
        b"DELAY",
        b"AT",
        b"RETRY",
        b"FAIL",
        b"ERROR",
        b"REASON",
        b"EXPIRED",
        b"FAILED",
        b"ERRORS",
        b"READY",
        b"DELAYED",
        b"INFLIGHT",
        b"ALL",
        b"START",
        b"FROM",
        b"TO",
        b"GET",
        b"SET",
        b"lock-ms",
        b"ordered",
        b"log",
        b"paused",
        b"0",
        b"1",
        b"5",
        b"-1",
        b"1e3",
        b"99999999999999999999",
        b"1000000000000000",
        b"",
        b" ",
        b"{q}",
        b"\x00\xff",
        b"q",
        b"1-1",
        b"2-1",
        b"x",
        b"count",
    ];
    let mut receipts: Vec<Vec<u8>> = Vec::new();
    let mut ids: Vec<Vec<u8>> = Vec::new();
    let (mut errors, mut replies) = (0, 0);
    for _ in 0..4000 {
        let name = commands[rng.gen_range(0..commands.len())];
        let q: &[u8] = if rng.gen_bool(0.9) { b"q" } else { words[rng.gen_range(0..words.len())] };
        let mut args: Vec<Vec<u8>> = Vec::new();
        for _ in 0..rng.gen_range(0..6) {
            let a = if rng.gen_bool(0.2) && !receipts.is_empty() {
                receipts[rng.gen_range(0..receipts.len())].clone()
            } else if rng.gen_bool(0.1) && !ids.is_empty() {
                ids[rng.gen_range(0..ids.len())].clone()
            } else if rng.gen_bool(0.1) {
                (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect()
            } else {
                words[rng.gen_range(0..words.len())].to_vec()
            };
            args.push(a);
        }
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let cmd = ed.cmd(name, &String::from_utf8_lossy(q), &refs);
        match cmd.query::<Value>(&mut c) {
            Ok(v) => {
                replies += 1;
                match name {
                    "fetch" => receipts.extend(messages(&v).iter().map(|m| bytes(&m["receipt"]))),
                    "push" => ids.push(bytes(&v)),
                    _ => {}
                }
            }
            Err(e) => {
                errors += 1;
                let line = error_line(&e);
                assert!(line.starts_with("ERR ") || line.starts_with("WRONGTYPE"), "not a clean error reply: {e:?}");
                assert!(!line.contains("panic") && !line.contains("internal"), "{e:?}");
            }
        }
    }
    assert!(s.alive(), "redis-server died");
    assert!(errors > 100 && replies > 100, "the mix was not mixed: {errors} errors, {replies} replies");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    assert!(!s.log().contains("internal error"), "a command failed inside: {}", s.log());
}

#[test]
fn seeded_random_and_malformed_commands_never_take_redis_down() {
    random_and_malformed_commands_never_take_redis_down(common::Edition::Module);
}

#[test]
fn seeded_random_and_malformed_functions_never_take_redis_down() {
    random_and_malformed_commands_never_take_redis_down(common::Edition::Lua);
}

#[test]
fn guard_reclaiming_200k_expired_messages_never_stalls_a_ping_for_long() {
    let s = Server::start(ServerOptions::module().arg("guard-interval-ms", "3600000"));
    let mut c = s.conn();
    let n = 200_000;
    for chunk in 0..(n / 10_000) {
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.cmd("RMQ.PUSH").arg("big").arg(format!("{}", chunk * 10_000 + i)).ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    let mut pipe = redis::pipe();
    for _ in 0..(n / 1000) {
        pipe.cmd("RMQ.FETCH").arg("big").arg("COUNT").arg(1000).arg("LOCK").arg(600_000).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    assert_eq!(stats(&mut c, "big")["inflight"], n as i64);
    // Every lock runs out at once: all deadlines to 0 (a machine that is slow to fetch would
    // otherwise see FETCH reclaim the first locks itself).
    let _: i64 = redis::cmd("ZUNIONSTORE").arg("bak:{big}").arg(1).arg("bak:{big}").arg("WEIGHTS").arg(0).query(&mut c).unwrap();
    // Start the guard and ping from another connection meanwhile.
    let mut pinger = s.conn();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("rmq.guard-interval-ms").arg("5").query(&mut c).unwrap();
    let mut worst = Duration::ZERO;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query(&mut pinger).unwrap();
        worst = worst.max(t.elapsed());
        if llen(&mut pinger, "msg:{big}") == n as i64 {
            break;
        }
        assert!(Instant::now() < end, "the guard did not reclaim everything within a minute");
    }
    assert!(worst < Duration::from_millis(50), "a PING waited {worst:?} while the guard worked");
}

#[test]
fn settings_changes_take_effect_at_once_however_they_are_made() {
    let s = module();
    let mut c = s.conn();
    let lock_of = |c: &mut Connection| {
        ok(c, "RMQ.PUSH", "q", &["x"]);
        let m = fetch_one(c, "q", &[]);
        ok(c, "RMQ.ACK", "q", &[&field(&m, "receipt")]);
        field_int(&m, "deadline") - field_int(&m, "created")
    };
    assert!((30_000..31_000).contains(&lock_of(&mut c)));
    let _: () = redis::cmd("CONFIG").arg("SET").arg("rmq.lock-ms").arg("50000").query(&mut c).unwrap();
    assert!((50_000..51_000).contains(&lock_of(&mut c)), "node setting");
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "lock-ms", "70000"]);
    assert!((70_000..71_000).contains(&lock_of(&mut c)), "RMQ.CONFIG");
    let _: () = redis::cmd("HSET").arg("cfg:{q}").arg("lock-ms").arg("90000").query(&mut c).unwrap();
    assert!((90_000..91_000).contains(&lock_of(&mut c)), "a hand-made HSET");
    let _: () = redis::cmd("DEL").arg("cfg:{q}").query(&mut c).unwrap();
    assert!((50_000..51_000).contains(&lock_of(&mut c)), "override deleted");
    let _: () = redis::cmd("HSET").arg("cfg:{q}").arg("lock-ms").arg("20000").query(&mut c).unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert!((50_000..51_000).contains(&lock_of(&mut c)), "after FLUSHALL");
}

#[test]
fn a_runaway_lua_command_is_stopped_by_its_budgets_and_redis_carries_on() {
    let mut s = Server::start(ServerOptions::module().arg("lua-instruction-budget", "20000"));
    let mut c = s.conn();
    let big = "b".repeat(20_000);
    for i in 0..300 {
        ok(&mut c, "RMQ.PUSH", "q", &[&format!("{big}{i}")]);
    }
    // Reading 300 messages takes far more than 20 000 Lua instructions.
    let budget_error = "ERR stopped at the module's Lua budget (rmq.lua-instruction-budget, rmq.lua-time-budget-ms); what it moved before stopping stays moved";
    assert_eq!(err(&mut c, "RMQ.PEEK", "q", &["COUNT", "300"]), budget_error);
    assert!(s.alive());
    assert!(s.log().contains("rmq_peek stopped at its budget"), "the reason is logged");
    let set = |c: &mut Connection, name: &str, v: &str| {
        let _: () = redis::cmd("CONFIG").arg("SET").arg(name).arg(v).query(c).unwrap();
    };
    set(&mut c, "rmq.lua-instruction-budget", "500000000");
    assert_eq!(messages(&ok(&mut c, "RMQ.PEEK", "q", &["COUNT", "300"])).len(), 300);
    // The wall clock: 1 ms is far less than converting 6 MB of messages for a reply.
    set(&mut c, "rmq.lua-time-budget-ms", "1");
    assert_eq!(err(&mut c, "RMQ.PEEK", "q", &["COUNT", "300"]), budget_error);
    set(&mut c, "rmq.lua-time-budget-ms", "1000");
    assert_eq!(messages(&ok(&mut c, "RMQ.PEEK", "q", &["COUNT", "300"])).len(), 300);
}

#[test]
fn block_inside_a_script_answers_at_once() {
    let s = module();
    let mut c = s.conn();
    let started = Instant::now();
    let v: Value = redis::cmd("EVAL").arg("return redis.call('RMQ.FETCH', KEYS[1], 'BLOCK', '0')").arg(1).arg("q").query(&mut c).unwrap();
    assert_eq!(v, Value::Nil);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_evicting_maxmemory_policy_is_warned_about() {
    let s = Server::start(ServerOptions::module().conf("maxmemory-policy", "allkeys-lru"));
    let mut c = s.conn();
    let info: String = redis::cmd("INFO").arg("rmq").query(&mut c).unwrap();
    assert!(info.contains("rmq_eviction_policy_ok:0"), "{info}");
    assert!(s.log().contains("maxmemory-policy is 'allkeys-lru'"), "{}", s.log());
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("rmq.guard-interval-ms").arg("10").query(&mut c).unwrap();
    assert!(eventually(Duration::from_secs(3), || {
        let info: String = redis::cmd("INFO").arg("rmq").query(&mut c).unwrap();
        info.contains("rmq_eviction_policy_ok:1")
    }));
}

#[test]
fn arity_is_checked_before_the_queue_name_by_every_command() {
    let s = module();
    let mut c = s.conn();
    for cmd in
        ["RMQ.PUSH", "RMQ.ACK", "RMQ.NACK", "RMQ.TOUCH", "RMQ.GET", "RMQ.DEL", "RMQ.REQUEUE", "RMQ.PURGE", "RMQ.CONFIG", "RMQ.REPLAY"]
    {
        let want = format!("ERR wrong number of arguments for '{}' command", cmd.to_lowercase());
        assert_eq!(err(&mut c, cmd, "bad name", &[]), want);
    }
    for cmd in ["RMQ.FETCH", "RMQ.STATS", "RMQ.RECOVER", "RMQ.PEEK", "RMQ.LOG"] {
        assert_eq!(err(&mut c, cmd, "bad name", &[]), "ERR invalid queue name", "{cmd}");
    }
}
