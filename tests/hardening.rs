//! The module at the scales and inputs that once stalled Redis, lost messages or broke fencing:
//! 60,000 queues under the guard, by-id commands over tens of thousands of near-identical
//! bodies, 200,000 headers, RMQ.QUEUES beside 2M other keys, INFO with 200,000 queues, a
//! failover that lost writes, ACL users, WATCH, keyspace notifications.
//!
//! Where the point is that Redis is not stalled, another connection PINGs throughout and its
//! slowest answer is checked (`PingMeter`): under 50 ms at these scales.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::load::{info, meanwhile, pipelined, push_fillers};
use common::module_calls::*;
use common::stall::PingMeter;
use common::values::*;
use common::{Server, ServerOptions};
use redis::{Connection, Value};

const STALL_LIMIT: Duration = Duration::from_millis(50);

fn module() -> Server {
    Server::start(ServerOptions::module())
}

/// `INFO rmq` once every changed queue is counted again (each call reads a part of them).
fn counted(c: &mut Connection) -> BTreeMap<String, i64> {
    loop {
        let i = info(c);
        if i["stale_queues"] == 0 {
            return i;
        }
    }
}

fn set_config(c: &mut Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query(c).unwrap();
}

// ---- 1. The guard at scale ----

#[test]
fn the_guard_reclaims_60000_queues_expired_locks_and_never_stalls() {
    let s = Server::start(ServerOptions::module().arg("guard-interval-ms", "3600000"));
    let mut c = s.conn();
    let n = 60_000;
    pipelined(&mut c, n, |p, i| {
        p.cmd("RMQ.PUSH").arg(format!("q{i}")).arg("job");
    });
    pipelined(&mut c, n, |p, i| {
        p.cmd("RMQ.FETCH").arg(format!("q{i}")).arg("LOCK").arg(1);
    });
    // A consumer waiting for a delayed message on one of them.
    ok(&mut c, "RMQ.PUSH", "waiting", &["later", "DELAY", "300"]);
    let url = s.url();
    let waiter = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let started = Instant::now();
        let v: Value = redis::cmd("RMQ.FETCH").arg("waiting").arg("BLOCK").arg(30_000).query(&mut c).unwrap();
        (messages(&v).len(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(20)); // every lock has run out
    within(Duration::from_secs(60), "INFO counts every queue", || counted(&mut c)["inflight"] == n as i64);
    let meter = PingMeter::start(&s.url());
    set_config(&mut c, "rmq.guard-interval-ms", "10");
    within(Duration::from_secs(60), "the guard reclaims every lock", || info(&mut c)["guard_reclaimed"] == n as i64);
    let worst = meter.worst();
    assert!(worst < STALL_LIMIT, "a PING waited {worst:?} while the guard worked through 60,000 queues");
    let (got, waited) = waiter.join().unwrap();
    assert_eq!(got, 1, "the blocked FETCH got the delayed message");
    assert!(waited < Duration::from_secs(20), "woken {waited:?} after it was due");
    within(Duration::from_secs(60), "INFO counts every queue", || counted(&mut c)["ready"] == n as i64);
    let i = info(&mut c);
    assert_eq!((i["ready"], i["inflight"]), (n as i64, 1), "all back to ready; the waiter holds its message");
    // Idle: nothing is due, so nothing is scheduled, whatever the number of queues; only the
    // queue whose message the waiter now holds has a lock to watch.
    assert_eq!(i["guard_scheduled"], 1);
    assert_eq!(i["queues"], n as i64 + 1);
}

#[test]
fn fetch_on_many_distinct_empty_names_leaves_no_state_behind() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "real", &["x"]);
    let before = info(&mut c);
    pipelined(&mut c, 200_000, |p, i| {
        p.cmd("RMQ.FETCH").arg(format!("nothing-{i}"));
    });
    pipelined(&mut c, 200_000, |p, i| {
        p.cmd("RMQ.STATS").arg(format!("unused-{i}"));
    });
    let after = info(&mut c);
    assert_eq!(after["queues"], before["queues"], "names without keys are no queues");
    assert_eq!(after["guard_scheduled"], before["guard_scheduled"]);
    assert!(after["settings_cached"] <= 100_000, "the settings cache is bounded: {}", after["settings_cached"]);
}

// ---- 2. By-id commands ----

#[test]
fn get_del_requeue_over_40000_near_identical_bodies_never_stall() {
    let s = module();
    let mut c = s.conn();
    let n = 40_000;
    // JSON orders of 1 KiB that differ only in a few digits in the middle: the bytes a
    // sampling string hash skips.
    let pad = "x".repeat(481);
    let body = |i: usize| format!("{{\"pad\":\"{pad}\",\"order\":{i:08},\"pad2\":\"{pad}\"}}");
    assert_eq!(body(0).len(), 999);
    pipelined(&mut c, n, |p, i| {
        p.cmd("RMQ.PUSH").arg("orders").arg(body(i)).arg("ID").arg(format!("order-{i}"));
    });
    // Half of them fail, so by-id commands search every state.
    pipelined(&mut c, n / 2 / 1000, |p, _| {
        p.cmd("RMQ.FETCH").arg("orders").arg("COUNT").arg(1000).arg("LOCK").arg(600_000);
    });
    let meter = PingMeter::start(&s.url());
    assert_eq!(ok(&mut c, "RMQ.GET", "orders", &["nope"]), Value::Nil, "a miss reads everything");
    let last = map(&ok(&mut c, "RMQ.GET", "orders", &[&format!("order-{}", n - 1)]));
    assert_eq!((text(&last["state"]), text(&last["body"])), ("ready".into(), body(n - 1)));
    let first = map(&ok(&mut c, "RMQ.GET", "orders", &["order-0"]));
    assert_eq!(text(&first["state"]), "inflight");
    assert_eq!(int(&ok(&mut c, "RMQ.DEL", "orders", &["order-39998", "order-1", "nope"])), 2);
    assert_eq!(int(&ok(&mut c, "RMQ.REQUEUE", "orders", &["order-2", "nope"])), 0, "in flight: not requeued");
    let worst = meter.worst();
    assert!(worst < STALL_LIMIT, "a PING waited {worst:?} behind GET/DEL/REQUEUE over {n} messages");
    let st = stats(&mut c, "orders");
    assert_eq!((st["ready"], st["inflight"]), (n as i64 / 2 - 1, n as i64 / 2 - 1));
}

#[test]
fn get_del_requeue_over_1000000_messages_never_stall() {
    let s = module();
    let mut c = s.conn();
    // One failed and one in-flight message, then a million ready ones, then one more.
    ok(&mut c, "RMQ.PUSH", "big", &["dead body", "ID", "dead"]);
    ok(&mut c, "RMQ.PUSH", "big", &["held body", "ID", "held"]);
    let dead = fetch_one(&mut c, "big", &[]);
    assert_eq!(int(&ok(&mut c, "RMQ.NACK", "big", &[&field(&dead, "receipt"), "FAIL"])), 1);
    fetch_one(&mut c, "big", &["LOCK", "600000"]);
    let n = 1_000_000;
    push_fillers(&mut c, "big", n);
    ok(&mut c, "RMQ.PUSH", "big", &["last body", "ID", "last"]);
    let meter = PingMeter::start(&s.url());
    assert_eq!(ok(&mut c, "RMQ.GET", "big", &["nope"]), Value::Nil, "a miss reads everything");
    let last = map(&ok(&mut c, "RMQ.GET", "big", &["last"]));
    assert_eq!((text(&last["state"]), text(&last["body"])), ("ready".into(), "last body".into()));
    assert_eq!(text(&map(&ok(&mut c, "RMQ.GET", "big", &["held"]))["state"]), "inflight");
    assert_eq!(text(&map(&ok(&mut c, "RMQ.GET", "big", &["dead"]))["state"]), "failed");
    assert_eq!(int(&ok(&mut c, "RMQ.DEL", "big", &["last", "nope"])), 1);
    assert_eq!(int(&ok(&mut c, "RMQ.REQUEUE", "big", &["dead", "held", "nope"])), 1, "failed: requeued; in flight: not");
    let worst = meter.worst();
    assert!(worst < STALL_LIMIT, "a PING waited {worst:?} behind GET/DEL/REQUEUE over {n} messages");
    assert_eq!(text(&map(&ok(&mut c, "RMQ.GET", "big", &["dead"]))["state"]), "ready");
    assert_eq!(ok(&mut c, "RMQ.GET", "big", &["last"]), Value::Nil);
    let st = stats(&mut c, "big");
    assert_eq!((st["ready"], st["inflight"], st["failed"]), (n as i64 + 1, 1, 0));
    assert_eq!(info(&mut c)["sliced_running"], 0);
}

#[test]
fn recover_of_200000_messages_never_stalls_and_ends_while_more_fail() {
    let s = module();
    let mut c = s.conn();
    let n = 200_000;
    push_fillers(&mut c, "q", n + 1000);
    // n failed, 1000 in flight whose lock ran out. (The FETCHes run in a script: their
    // replies, 200,000 messages, are not needed here.)
    let _: Value = redis::cmd("EVAL")
        .arg("for i = 1, tonumber(ARGV[1]) do redis.call('RMQ.FETCH', KEYS[1], 'COUNT', 1000, 'LOCK', 600000) end")
        .arg(1)
        .arg("q")
        .arg(n / 1000)
        .query(&mut c)
        .unwrap();
    let receipts: Vec<String> = redis::cmd("ZRANGE").arg("bak:{q}").arg(0).arg(-1).query(&mut c).unwrap();
    pipelined(&mut c, receipts.len(), |p, i| {
        p.cmd("RMQ.NACK").arg("q").arg(&receipts[i]).arg("FAIL");
    });
    messages(&ok(&mut c, "RMQ.FETCH", "q", &["COUNT", "1000", "LOCK", "1"]));
    std::thread::sleep(Duration::from_millis(5));
    push_fillers(&mut c, "q", 50);
    // Consumers keep failing messages while RECOVER runs (once it is past the expired ones,
    // which a FETCH would reclaim itself): RECOVER takes what had failed when it began, and
    // ends.
    let more_failures = meanwhile(&s, Duration::ZERO, move |o| {
        while stats(o, "q")["failed"] == n as i64 {
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut failed = 0;
        for _ in 0..50 {
            let got = messages(&ok(o, "RMQ.FETCH", "q", &[]));
            failed += int(&ok(o, "RMQ.NACK", "q", &[&field(&got[0], "receipt"), "FAIL"]));
        }
        failed
    });
    let meter = PingMeter::start(&s.url());
    let counts: Vec<i64> = array(&ok(&mut c, "RMQ.RECOVER", "q", &[])).iter().map(int).collect();
    let worst = meter.worst();
    assert_eq!(counts, [1000, n as i64, 0]);
    assert!(worst < STALL_LIMIT, "a PING waited {worst:?} behind a RECOVER of {n} messages");
    assert_eq!(more_failures.join().unwrap(), 50);
    let st = stats(&mut c, "q");
    assert_eq!((st["ready"], st["failed"], st["inflight"]), (n as i64 + 1000, 50, 0), "the late failures stay failed");
    assert_eq!(info(&mut c)["sliced_running"], 0);
}

#[test]
fn purge_with_the_log_of_200000_messages_never_stalls_and_logs_each() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "log", "1"]);
    let n = 200_000;
    push_fillers(&mut c, "q", n);
    // Producers go on pushing once PURGE runs: it deletes what was ready when it began.
    let pushes = meanwhile(&s, Duration::ZERO, |o| {
        while info(o)["sliced_running"] == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        for i in 0..100 {
            ok(o, "RMQ.PUSH", "q", &[&format!("late {i}")]);
        }
    });
    let meter = PingMeter::start(&s.url());
    let purged = int(&ok(&mut c, "RMQ.PURGE", "q", &["READY"]));
    let worst = meter.worst();
    pushes.join().unwrap();
    assert_eq!(purged, n as i64);
    assert!(worst < STALL_LIMIT, "a PING waited {worst:?} behind a PURGE with the log of {n} messages");
    let st = stats(&mut c, "q");
    assert_eq!((st["ready"], st["removed"]), (100, n as i64), "the late pushes stay");
    // A `push` entry for every push and a `purge` entry for every purged message.
    let log_len: i64 = redis::cmd("XLEN").arg("log:{q}").query(&mut c).unwrap();
    assert_eq!(log_len, 2 * n as i64 + 100, "each purged message is logged");
    let last: Vec<Value> = redis::cmd("XREVRANGE").arg("log:{q}").arg("+").arg("-").arg("COUNT").arg(200).query(&mut c).unwrap();
    assert!(format!("{last:?}").contains("purge"));
}

#[test]
fn log_from_and_replay_of_a_few_entries_at_the_end_of_a_300000_entry_log_never_stall() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "log", "1"]);
    let n = 300_000;
    push_fillers(&mut c, "q", n);
    let meter = PingMeter::start(&s.url());
    let tail = messages(&ok(&mut c, "RMQ.LOG", "q", &["FROM", &(n - 2).to_string(), "COUNT", "10"]));
    assert_eq!(tail.iter().map(|e| field_int(e, "offset")).collect::<Vec<_>>(), [n as i64 - 2, n as i64 - 1, n as i64]);
    assert_eq!(int(&ok(&mut c, "RMQ.REPLAY", "q", &["FROM", &n.to_string(), "TO", &n.to_string()])), 1);
    let worst = meter.worst();
    assert!(worst < STALL_LIMIT, "a PING waited {worst:?} behind LOG/REPLAY at the end of a {n}-entry log");
}

#[test]
fn replay_of_30000_logged_pushes_never_stalls_and_copies_each_once() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "log", "1"]);
    let n = 30_000;
    push_fillers(&mut c, "q", n);
    // Producers go on pushing once REPLAY runs: their pushes are not replayed.
    let pushes = meanwhile(&s, Duration::ZERO, |o| {
        while info(o)["sliced_running"] == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        for i in 0..50 {
            ok(o, "RMQ.PUSH", "q", &[&format!("late {i}")]);
        }
    });
    let meter = PingMeter::start(&s.url());
    let copies = int(&ok(&mut c, "RMQ.REPLAY", "q", &["FROM", "1"]));
    let worst = meter.worst();
    pushes.join().unwrap();
    assert_eq!(copies, n as i64, "every logged push once, none of those made meanwhile");
    assert!(worst < STALL_LIMIT, "a PING waited {worst:?} behind a REPLAY of {n} pushes");
    assert_eq!(stats(&mut c, "q")["ready"], 2 * n as i64 + 50);
}

// ---- 3. Headers ----

#[test]
fn a_push_with_200000_headers_is_refused_at_once() {
    let s = module();
    let mut c = s.conn();
    let mut push = redis::cmd("RMQ.PUSH");
    push.arg("q").arg("body");
    for i in 0..200_000 {
        push.arg("HEADER").arg(format!("h{i}")).arg("v");
    }
    // Redis itself spends tens of ms reading and freeing 600,000 arguments (any command of
    // that size does, even one refused for its arity): what the module adds is the command's
    // own run time, which SLOWLOG records.
    set_config(&mut c, "slowlog-log-slower-than", "0");
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let e = push.query::<Value>(&mut c).unwrap_err();
    assert_eq!(error_line(&e), "ERR a message has at most 1000 HEADERs");
    let took = slowest_push_micros(&mut c);
    assert!(took < STALL_LIMIT.as_micros() as i64, "a 200,000-header PUSH ran {took} µs on Redis's thread");
    assert_eq!(stats(&mut c, "q")["pushed"], 0, "nothing stored");
    let mut push = redis::cmd("RMQ.PUSH");
    push.arg("q").arg("body");
    for i in 0..1000 {
        push.arg("HEADER").arg(format!("h{i}")).arg("v");
    }
    let _: String = push.query(&mut c).unwrap();
    assert_eq!(map(&messages(&ok(&mut c, "RMQ.FETCH", "q", &[]))[0]["headers"]).len(), 1000);
}

/// The longest run time (µs) of an RMQ.PUSH in the SLOWLOG.
fn slowest_push_micros(c: &mut Connection) -> i64 {
    let log: Vec<Vec<Value>> = redis::cmd("SLOWLOG").arg("GET").arg(100).query(c).unwrap();
    let pushes = log.iter().filter(|entry| match &entry[3] {
        Value::Array(args) => args.first().is_some_and(|a| text(a).eq_ignore_ascii_case("rmq.push")),
        _ => false,
    });
    pushes.map(|entry| int(&entry[2])).max().expect("the PUSH is in the SLOWLOG")
}

// ---- 4. QUEUES and INFO ----

#[test]
fn queues_does_not_scan_2m_other_keys() {
    let s = module();
    let mut c = s.conn();
    let _: () = redis::cmd("DEBUG").arg("POPULATE").arg(2_000_000).query(&mut c).unwrap();
    for q in ["b", "a", "c"] {
        ok(&mut c, "RMQ.PUSH", q, &["x"]);
    }
    let meter = PingMeter::start(&s.url());
    let started = Instant::now();
    let names: Vec<String> = redis::cmd("RMQ.QUEUES").query(&mut c).unwrap();
    let took = started.elapsed();
    let worst = meter.worst();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(worst < STALL_LIMIT && took < STALL_LIMIT, "QUEUES took {took:?} (PING waited {worst:?}) beside 2M keys");
}

#[test]
fn info_with_200000_queues_is_bounded() {
    let s = module();
    let mut c = s.conn();
    let n = 200_000;
    pipelined(&mut c, n, |p, i| {
        p.cmd("RMQ.PUSH").arg(format!("q{i}")).arg("x");
    });
    let meter = PingMeter::start(&s.url());
    // Totals catch up a part at a time; every call is short.
    within(Duration::from_secs(120), "INFO counts every queue", || {
        let i = info(&mut c);
        i["stale_queues"] == 0 && i["ready"] == n as i64
    });
    let worst = meter.worst();
    assert!(worst < STALL_LIMIT, "a PING waited {worst:?} behind INFO rmq with {n} queues");
    assert_eq!(info(&mut c)["queues"], n as i64);
}

// ---- 7. Fencing across queues and across a failover that lost writes ----

#[test]
fn a_receipt_from_a_history_a_failover_lost_is_stale_on_the_new_primary() {
    let primary = module();
    let replica = module();
    let mut p = primary.conn();
    let mut r = replica.conn();
    let _: () = redis::cmd("REPLICAOF").arg("127.0.0.1").arg(primary.port).query(&mut r).unwrap();
    ok(&mut p, "RMQ.PUSH", "q", &["job"]);
    within(Duration::from_secs(10), "the replica has the message", || redis::cmd("LLEN").arg("msg:{q}").query::<i64>(&mut r).unwrap() == 1);
    // The replica is cut off and promoted: the FETCH below reaches only the old primary.
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut r).unwrap();
    let old = field(&fetch_one(&mut p, "q", &[]), "receipt");
    // On the new primary the message is delivered again: same offset, same delivery count.
    let new = field(&fetch_one(&mut r, "q", &[]), "receipt");
    assert_eq!(old.split('-').take(2).collect::<Vec<_>>(), new.split('-').take(2).collect::<Vec<_>>());
    assert_ne!(old, new);
    assert_eq!(int(&ok(&mut r, "RMQ.ACK", "q", &[&old])), 0, "the old consumer's ACK changes nothing");
    assert_eq!(int(&ok(&mut r, "RMQ.NACK", "q", &[&old, "FAIL"])), 0);
    assert_eq!(stats(&mut r, "q")["inflight"], 1);
    assert_eq!(int(&ok(&mut r, "RMQ.ACK", "q", &[&new])), 1);
}

// ---- 8. Ordered queues and BLOCK ----

#[test]
fn an_ordered_queue_wakes_a_blocked_fetch_when_the_line_frees() {
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "ordered", "1"]);
    // Each way the message in flight can go: the next one must reach the waiting consumer.
    let ways: [(&str, &[&str]); 5] =
        [("RMQ.ACK", &[]), ("RMQ.NACK", &["FAIL"]), ("RMQ.NACK", &["ERROR"]), ("RMQ.DEL", &[]), ("RMQ.PURGE", &["INFLIGHT"])];
    for (cmd, extra) in ways {
        ok(&mut c, "RMQ.PUSH", "q", &["first", "ID", "first"]);
        ok(&mut c, "RMQ.PUSH", "q", &["second", "ID", "second"]);
        let receipt = field(&fetch_one(&mut c, "q", &["LOCK", "600000"]), "receipt");
        let url = s.url();
        let waiter = std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let started = Instant::now();
            let v: Value = redis::cmd("RMQ.FETCH").arg("q").arg("BLOCK").arg(20_000).query(&mut c).unwrap();
            (messages(&v).into_iter().map(|m| field(&m, "body")).collect::<Vec<_>>(), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut args: Vec<&str> = match cmd {
            "RMQ.DEL" => vec!["first"],
            "RMQ.PURGE" => vec![],
            _ => vec![&receipt],
        };
        args.extend_from_slice(extra);
        ok(&mut c, cmd, "q", &args);
        let (got, waited) = waiter.join().unwrap();
        assert_eq!(got, ["second"], "after {cmd} {extra:?}");
        assert!(waited < Duration::from_secs(10), "after {cmd} {extra:?}: woken only after {waited:?}");
        ok(&mut c, "RMQ.PURGE", "q", &["ALL"]);
        let _: i64 = redis::cmd("DEL").arg("dup:{q}").query(&mut c).unwrap();
    }
}

// ---- 10, 11, 12: memory, WATCH, keyspace notifications ----

#[test]
fn read_only_commands_and_the_guard_do_not_break_watch() {
    let s = Server::start(ServerOptions::module().arg("guard-interval-ms", "10"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.PUSH", "q", &["ready"]);
    ok(&mut c, "RMQ.PUSH", "q", &["later", "DELAY", "600000"]);
    ok(&mut c, "RMQ.PUSH", "other", &["x"]);
    let mut watcher = s.conn();
    let keys = ["msg:{q}", "dly:{q}", "bak:{q}", "inf:{q}", "st:{q}", "cfg:{q}", "dup:{q}"];
    let _: () = redis::cmd("WATCH").arg(&keys[..]).query(&mut watcher).unwrap();
    for (cmd, args) in
        [("RMQ.STATS", vec![]), ("RMQ.PEEK", vec!["DELAYED"]), ("RMQ.GET", vec!["nope"]), ("RMQ.CONFIG", vec!["GET"]), ("RMQ.LOG", vec![])]
    {
        ok(&mut c, cmd, "q", &args);
    }
    let _: String = redis::cmd("INFO").arg("rmq").query(&mut c).unwrap();
    let _: Vec<String> = redis::cmd("RMQ.QUEUES").query(&mut c).unwrap();
    // Work on another queue, and a few guard ticks with nothing to do on this one.
    let m = fetch_one(&mut c, "other", &[]);
    ok(&mut c, "RMQ.ACK", "other", &[&field(&m, "receipt")]);
    std::thread::sleep(Duration::from_millis(100));
    let r: Value = redis::pipe().atomic().cmd("SET").arg("x").arg("1").query(&mut watcher).unwrap();
    assert_ne!(r, Value::Nil, "the transaction was aborted: a read touched a watched key");
    // A real change does abort it.
    let _: () = redis::cmd("WATCH").arg(&keys[..]).query(&mut watcher).unwrap();
    ok(&mut c, "RMQ.PUSH", "q", &["more"]);
    let r: Value = redis::pipe().atomic().cmd("SET").arg("x").arg("1").query(&mut watcher).unwrap();
    assert_eq!(r, Value::Nil, "a PUSH is a change WATCH sees");
}

#[test]
fn native_commands_send_the_keyspace_events_of_what_they_change() {
    let s = module();
    let mut c = s.conn();
    set_config(&mut c, "notify-keyspace-events", "KEA");
    let mut sub = redis::Client::open(s.url()).unwrap().get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.psubscribe("__keyspace@0__:*{q}").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ok(&mut c, "RMQ.PUSH", "q", &["job"]);
    let m = fetch_one(&mut c, "q", &[]);
    ok(&mut c, "RMQ.ACK", "q", &[&field(&m, "receipt")]);
    ok(&mut c, "RMQ.PUSH", "q", &["sentinel", "ID", "end"]);
    let mut seen = Vec::new();
    loop {
        let msg = pubsub.get_message().unwrap();
        let channel: String = msg.get_channel_name().to_string();
        let event: String = msg.get_payload().unwrap();
        let key = channel.trim_start_matches("__keyspace@0__:").to_string();
        seen.push((key.clone(), event.clone()));
        if key == "dup:{q}" {
            break;
        }
    }
    let want: Vec<(&str, &str)> = vec![
        ("st:{q}", "hset"),
        ("msg:{q}", "rpush"),
        ("msg:{q}", "lpop"),
        ("inf:{q}", "hset"),
        ("bak:{q}", "zadd"),
        ("msg:{q}", "del"),
        ("bak:{q}", "zrem"),
        ("inf:{q}", "hdel"),
        ("bak:{q}", "del"),
        ("inf:{q}", "del"),
        ("st:{q}", "hset"),
        ("msg:{q}", "rpush"),
        ("dup:{q}", "zadd"),
    ];
    let got: Vec<(&str, &str)> = seen.iter().map(|(k, e)| (k.as_str(), e.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn the_log_sends_the_events_of_xadd_with_maxlen() {
    let s = module();
    let mut c = s.conn();
    set_config(&mut c, "notify-keyspace-events", "KEA");
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "log", "1", "log-maxlen", "1"]);
    let mut sub = redis::Client::open(s.url()).unwrap().get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.psubscribe("__keyspace@0__:*").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let log_events = |pubsub: &mut redis::PubSub, key: &str, until: &str| {
        let mut seen = Vec::new();
        loop {
            let msg = pubsub.get_message().unwrap();
            let channel = msg.get_channel_name().trim_start_matches("__keyspace@0__:").to_string();
            let event: String = msg.get_payload().unwrap();
            if channel == until {
                return seen;
            }
            if channel == key {
                seen.push(event);
            }
        }
    };
    // What Redis's own XADD … MAXLEN 1 sends, on a plain stream: the reference.
    for _ in 0..2 {
        let _: String = redis::cmd("XADD").arg("plain").arg("MAXLEN").arg("1").arg("*").arg("f").arg("v").query(&mut c).unwrap();
    }
    let _: () = redis::cmd("SET").arg("end-plain").arg("1").query(&mut c).unwrap();
    let reference = log_events(&mut pubsub, "plain", "end-plain");
    assert_eq!(reference, ["xadd", "xadd", "xtrim"]);
    ok(&mut c, "RMQ.PUSH", "q", &["a"]);
    ok(&mut c, "RMQ.PUSH", "q", &["b"]);
    let _: () = redis::cmd("SET").arg("end-log").arg("1").query(&mut c).unwrap();
    assert_eq!(log_events(&mut pubsub, "log:{q}", "end-log"), reference);
    let len: i64 = redis::cmd("XLEN").arg("log:{q}").query(&mut c).unwrap();
    assert_eq!(len, 1, "the log keeps log-maxlen entries");
}

// ---- 13. Key specs and ACL ----

#[test]
fn read_only_users_read_and_cannot_write_and_queues_shows_only_their_queues() {
    let s = module();
    let mut c = s.conn();
    for q in ["jobs", "secret"] {
        ok(&mut c, "RMQ.PUSH", q, &["x"]);
    }
    // Redis 7.0 gives module commands no ACL category: grant them by name (docs/operations.md).
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("reader")
        .arg("on")
        .arg(">pw")
        .arg("%R~jobs")
        .arg("+rmq.stats")
        .arg("+rmq.peek")
        .arg("+rmq.get")
        .arg("+rmq.log")
        .arg("+rmq.config")
        .arg("+rmq.queues")
        .arg("+rmq.push")
        .query(&mut c)
        .unwrap();
    let mut r = redis::Client::open(format!("redis://reader:pw@127.0.0.1:{}/", s.port)).unwrap().get_connection().unwrap();
    assert_eq!(stats(&mut r, "jobs")["ready"], 1);
    assert_eq!(messages(&ok(&mut r, "RMQ.PEEK", "jobs", &[])).len(), 1);
    assert_eq!(ok(&mut r, "RMQ.GET", "jobs", &["nope"]), Value::Nil);
    assert_eq!(array(&ok(&mut r, "RMQ.CONFIG", "jobs", &["GET", "lock-ms"])).len(), 2);
    assert!(err(&mut r, "RMQ.PUSH", "jobs", &["y"]).starts_with("NOPERM"), "read-only key: no PUSH");
    assert!(err(&mut r, "RMQ.CONFIG", "jobs", &["SET", "lock-ms", "5"]).starts_with("NOPERM"));
    assert!(err(&mut r, "RMQ.STATS", "secret", &[]).starts_with("NOPERM"));
    let names: Vec<String> = redis::cmd("RMQ.QUEUES").query(&mut r).unwrap();
    assert_eq!(names, ["jobs"], "only the queues the user may read");
    let names: Vec<String> = redis::cmd("RMQ.QUEUES").query(&mut c).unwrap();
    assert_eq!(names, ["jobs", "secret"]);
}

#[test]
fn command_info_declares_read_only_keys_and_docs_every_command() {
    let s = module();
    let mut c = s.conn();
    let names = [
        "rmq.push",
        "rmq.fetch",
        "rmq.ack",
        "rmq.nack",
        "rmq.touch",
        "rmq.recover",
        "rmq.stats",
        "rmq.peek",
        "rmq.get",
        "rmq.del",
        "rmq.requeue",
        "rmq.purge",
        "rmq.config",
        "rmq.queues",
        "rmq.log",
        "rmq.replay",
    ];
    let read_only: BTreeSet<&str> = ["rmq.stats", "rmq.peek", "rmq.get", "rmq.config", "rmq.log"].into();
    for name in names {
        let keys: Vec<String> =
            redis::cmd("COMMAND").arg("GETKEYS").arg(name).arg("jobs").arg("x").arg("y").query(&mut c).unwrap_or_default();
        let docs = map(&array(&redis::cmd("COMMAND").arg("DOCS").arg(name).query::<Value>(&mut c).unwrap())[1]);
        assert!(!text(&docs["summary"]).is_empty() && !text(&docs["complexity"]).is_empty(), "{name}: docs");
        if name == "rmq.queues" {
            assert!(keys.is_empty());
            continue;
        }
        assert_eq!(keys, ["jobs"], "{name}: the queue is its key");
        let info = array(&array(&redis::cmd("COMMAND").arg("INFO").arg(name).query::<Value>(&mut c).unwrap())[0]);
        let spec = map(&array(&info[8])[0]);
        let flags: Vec<String> = array(&spec["flags"]).iter().map(text).collect();
        let ro = flags.iter().any(|f| f == "RO");
        assert_eq!(ro, read_only.contains(name), "{name}: key spec flags {flags:?}");
    }
    // CONFIG GET works on a replica; SET is refused there.
    let replica = module();
    let mut r = replica.conn();
    let _: () = redis::cmd("REPLICAOF").arg("127.0.0.1").arg(s.port).query(&mut r).unwrap();
    assert_eq!(array(&ok(&mut r, "RMQ.CONFIG", "jobs", &["GET", "lock-ms"])).len(), 2);
    assert!(err(&mut r, "RMQ.CONFIG", "jobs", &["SET", "lock-ms", "5"]).starts_with("READONLY"));
    assert!(err(&mut r, "RMQ.PUSH", "jobs", &["x"]).starts_with("READONLY"));
}

// ---- 6. The Lua core's budget stops only between whole moves ----

#[test]
fn a_lua_command_stopped_by_its_budget_leaves_no_move_half_done() {
    let s = Server::start(ServerOptions::module().arg("lua-instruction-budget", "50000"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "log", "1"]);
    let n = 1000;
    pipelined(&mut c, n, |p, i| {
        p.cmd("RMQ.PUSH").arg("q").arg(format!("m{i}"));
    });
    // REPLAY of 1000 logged pushes runs far past 50,000 instructions: it stops between copies.
    // (Inside MULTI, where a client cannot block, a long REPLAY runs at once in the Lua core.)
    let e = redis::pipe().atomic().cmd("RMQ.REPLAY").arg("q").arg("FROM").arg("1").query::<Value>(&mut c).unwrap_err();
    let e = format!("{e:?}");
    assert!(e.contains("stopped at the module's Lua budget"), "{e}");
    let st = stats(&mut c, "q");
    let copies = st["pushed"] - n as i64;
    assert!(copies > 0 && copies < n as i64, "it stopped part way: {copies} copies");
    assert_eq!(st["ready"], n as i64 + copies, "every offset taken has its message");
    set_config(&mut c, "rmq.lua-instruction-budget", "500000000");
    let log = messages(&ok(&mut c, "RMQ.LOG", "q", &["FROM", &(n + 1).to_string(), "COUNT", "1000"]));
    assert_eq!(log.len() as i64, copies, "every copy is logged, and only those");
    // PURGE with the log on is native (no Lua budget): it deletes and logs every message.
    set_config(&mut c, "rmq.lua-instruction-budget", "50000");
    let purged = int(&ok(&mut c, "RMQ.PURGE", "q", &["READY"]));
    assert_eq!(purged, n as i64 + copies);
    set_config(&mut c, "rmq.lua-instruction-budget", "500000000");
    let st = stats(&mut c, "q");
    let log: Value = redis::cmd("XRANGE").arg("log:{q}").arg("-").arg("+").query(&mut c).unwrap();
    let purge_events = array(&log).iter().filter(|e| array(&array(e)[1]).iter().any(|f| bytes(f) == b"purge")).count();
    assert_eq!(purge_events as i64, purged, "each message purged is logged, and no other");
    assert_eq!((st["ready"], st["removed"]), (0, purged), "removed counts what went");
    assert!(s.log().contains("stopped at its budget"));
}

// ---- Propagation: skipped while nothing could receive it, never once a replica is there ----

/// Every key with its DUMP (minus the RDB version trailer, which is the same here).
fn dump_all(c: &mut Connection) -> BTreeMap<String, Vec<u8>> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    keys.into_iter().map(|k| (k.clone(), redis::cmd("DUMP").arg(&k).query(c).unwrap())).collect()
}

#[test]
fn a_replica_that_attaches_later_gets_every_change_from_then_on() {
    let primary = module();
    let mut p = primary.conn();
    // Before any replica: effects need not be built.
    for i in 0..50 {
        ok(&mut p, "RMQ.PUSH", "q", &[&format!("m{i}")]);
    }
    let early = messages(&ok(&mut p, "RMQ.FETCH", "q", &["COUNT", "10", "LOCK", "600000"]));
    let replica = module();
    let mut r = replica.conn();
    let _: () = redis::cmd("REPLICAOF").arg("127.0.0.1").arg(primary.port).query(&mut r).unwrap();
    within(Duration::from_secs(20), "the replica is in sync", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
        info.contains("master_link_status:up")
    });
    // After: every change reaches the replica.
    ok(&mut p, "RMQ.ACK", "q", &[&field(&early[0], "receipt")]);
    ok(&mut p, "RMQ.NACK", "q", &[&field(&early[1], "receipt"), "FAIL"]);
    let late = messages(&ok(&mut p, "RMQ.FETCH", "q", &["COUNT", "5", "LOCK", "600000"]));
    ok(&mut p, "RMQ.ACK", "q", &[&field(&late[0], "receipt")]);
    ok(&mut p, "RMQ.PUSH", "q", &["after", "ID", "a-1", "DELAY", "600000"]);
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
    within(Duration::from_secs(10), "the replica holds the same keys", || dump_all(&mut p) == dump_all(&mut r));
    // And takes over with the same receipts.
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut r).unwrap();
    assert_eq!(int(&ok(&mut r, "RMQ.ACK", "q", &[&field(&late[1], "receipt"), &field(&early[2], "receipt")])), 2);
}
