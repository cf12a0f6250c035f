//! Commands done in slices on big queues (GET, DEL, REQUEUE) and LOG FROM, while other
//! clients change the queue: the answers are those of one instant, nothing is lost or held
//! twice. (Whether other clients wait is measured in tests/hardening.rs, alone.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::load::{info, meanwhile, pipelined, push_fillers};
use common::module_calls::*;
use common::values::*;
use common::{Server, ServerOptions};
use redis::{Connection, Value};

fn module() -> Server {
    Server::start(ServerOptions::module())
}

#[test]
fn a_message_that_moves_while_a_long_lookup_reads_is_still_found() {
    let s = module();
    let mut c = s.conn();
    let _: Value = redis::cmd("RMQ.CONFIG").arg("q").arg("SET").arg("backoff-ms").arg(0).query(&mut c).unwrap();
    // Messages in flight, each to be given back (to the back of ready) while a lookup of it
    // runs, at a different moment of the lookup each time.
    let delays = [0u64, 1, 3, 6, 10, 20, 40, 80];
    for i in 0..delays.len() {
        ok(&mut c, "RMQ.PUSH", "q", &[&format!("moving {i}"), "ID", &format!("m{i}")]);
    }
    let receipts: Vec<String> =
        messages(&ok(&mut c, "RMQ.FETCH", "q", &["COUNT", "8", "LOCK", "600000"])).iter().map(|m| field(m, "receipt")).collect();
    let n = 300_000;
    push_fillers(&mut c, "q", n);
    for (i, delay) in delays.iter().enumerate() {
        let receipt = receipts[i].clone();
        let nack = meanwhile(&s, Duration::from_millis(*delay), move |o| int(&ok(o, "RMQ.NACK", "q", &[&receipt])));
        let id = format!("m{i}");
        let got = ok(&mut c, if i % 2 == 0 { "RMQ.GET" } else { "RMQ.DEL" }, "q", &[&id]);
        let nacked = nack.join().unwrap();
        if i % 2 == 0 {
            assert_eq!(nacked, 1);
            let state = text(&map(&got)["state"]);
            assert!(state == "inflight" || state == "ready", "{id} found {state}");
        } else {
            // The NACK came first (1), or found its message deleted (0).
            assert!(nacked <= 1);
            assert_eq!(int(&got), 1, "{id} deleted wherever it was");
            assert_eq!(ok(&mut c, "RMQ.GET", "q", &[&id]), Value::Nil);
        }
    }
    // The line moves at its head while a lookup reads it: a message near its end is found,
    // and DEL takes exactly that one.
    ok(&mut c, "RMQ.PUSH", "q", &["near the end", "ID", "end"]);
    push_fillers(&mut c, "q", 10);
    let fetches = meanwhile(&s, Duration::ZERO, |o| {
        (0..20).map(|_| messages(&ok(o, "RMQ.FETCH", "q", &["COUNT", "1000", "LOCK", "600000"])).len()).sum::<usize>()
    });
    assert_eq!(text(&map(&ok(&mut c, "RMQ.GET", "q", &["end"]))["body"]), "near the end");
    assert_eq!(fetches.join().unwrap(), 20_000);
    let fetches = meanwhile(&s, Duration::ZERO, |o| {
        (0..20).map(|_| messages(&ok(o, "RMQ.FETCH", "q", &["COUNT", "1000", "LOCK", "600000"])).len()).sum::<usize>()
    });
    assert_eq!(int(&ok(&mut c, "RMQ.DEL", "q", &["end"])), 1);
    assert_eq!(fetches.join().unwrap(), 20_000);
    let st = stats(&mut c, "q");
    let kept = (delays.len() / 2) as i64; // the GETs' messages; the DELs' are gone
    assert_eq!(st["ready"] + st["inflight"], n as i64 + 10 + kept, "nothing else was deleted: {st:?}");
    assert_eq!(ok(&mut c, "RMQ.GET", "q", &["end"]), Value::Nil);
}

#[test]
fn a_hand_made_write_during_a_long_lookup_restarts_it() {
    let s = module();
    let mut c = s.conn();
    push_fillers(&mut c, "q", 300_000);
    ok(&mut c, "RMQ.PUSH", "q", &["the last", "ID", "last"]);
    // Moves the last message to the front by hand, where a lookup past the front would not
    // look again unless it noticed.
    let rotate = meanwhile(&s, Duration::from_millis(5), |o| {
        let _: Value = redis::cmd("LMOVE").arg("msg:{q}").arg("msg:{q}").arg("RIGHT").arg("LEFT").query(o).unwrap();
    });
    assert_eq!(text(&map(&ok(&mut c, "RMQ.GET", "q", &["last"]))["state"]), "ready");
    rotate.join().unwrap();
    let first = fetch_one(&mut c, "q", &[]);
    assert_eq!(field(&first, "id"), "last", "the hand-made move happened");
}

/// Every message of `q`, by id, with the state it is in (a message twice would show).
fn every_message(c: &mut Connection, q: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for state in ["READY", "DELAYED", "INFLIGHT", "FAILED", "ERRORS"] {
        let mut start = 0;
        loop {
            let page = messages(&ok(c, "RMQ.PEEK", q, &[state, "START", &start.to_string(), "COUNT", "1000"]));
            if page.is_empty() {
                break;
            }
            start += page.len();
            for m in page {
                out.entry(field(&m, "id")).or_default().push(state.to_lowercase());
            }
        }
    }
    out
}

#[test]
fn lookups_in_slices_under_random_concurrent_moves_lose_and_duplicate_nothing() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let s = Server::start(ServerOptions::module().arg("guard-interval-ms", "20"));
    let mut c = s.conn();
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "backoff-ms", "0", "max-attempts", "1000"]);
    // Messages the background moves (b-*), then messages only the lookups touch (s-*, ready
    // and delayed): the ready ones sit behind more b-* messages than the background takes.
    let n = 20_000;
    pipelined(&mut c, n, |p, i| {
        p.cmd("RMQ.PUSH").arg("q").arg(format!("b{i}")).arg("ID").arg(format!("b-{i}"));
    });
    let stable = 400;
    for i in 0..stable {
        let id = format!("s-{i}");
        let mut args = vec!["s", "ID", &id];
        if i % 2 == 1 {
            args.extend(["DELAY", "3600000"]);
        }
        ok(&mut c, "RMQ.PUSH", "q", &args);
    }
    // Failed and errored messages only the lookups touch: the first 200 b-* ids.
    let mut failed_ids = Vec::new();
    for m in messages(&ok(&mut c, "RMQ.FETCH", "q", &["COUNT", "200", "LOCK", "600000"])) {
        let how = if failed_ids.len() % 2 == 0 { "FAIL" } else { "ERROR" };
        ok(&mut c, "RMQ.NACK", "q", &[&field(&m, "receipt"), how]);
        failed_ids.push(field(&m, "id"));
    }
    let mut expected: BTreeMap<String, Vec<String>> = every_message(&mut c, "q");
    assert_eq!(expected.len(), n + stable);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let mut bg = s.conn();
    // The background: fetches (a few thousand at most), acks, retries, fails, lets locks run
    // out, pushes more b-* ids, and deletes b-* ids itself (lookups in slices side by side).
    let background = std::thread::spawn(move || {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut gone = BTreeSet::new();
        let mut pushed = Vec::new();
        let mut fetched = 0;
        let mut i = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            i += 1;
            match rng.gen_range(0..10) {
                0..=4 if fetched < 3000 => {
                    let lock = if rng.gen_bool(0.2) { "5" } else { "600000" };
                    for m in messages(&ok(&mut bg, "RMQ.FETCH", "q", &["COUNT", "5", "LOCK", lock])) {
                        fetched += 1;
                        let id = field(&m, "id");
                        let receipt = field(&m, "receipt");
                        match rng.gen_range(0..5) {
                            0 if int(&ok(&mut bg, "RMQ.ACK", "q", &[&receipt])) == 1 => {
                                gone.insert(id);
                            }
                            0 => {} // its lock ran out and it went back: not acked
                            1 => drop(ok(&mut bg, "RMQ.NACK", "q", &[&receipt])),
                            2 => drop(ok(&mut bg, "RMQ.NACK", "q", &[&receipt, "FAIL"])),
                            3 => drop(ok(&mut bg, "RMQ.NACK", "q", &[&receipt, "ERROR"])),
                            _ => {} // its lock runs out (or not) and the guard takes it back
                        }
                    }
                }
                5 | 6 => {
                    let id = format!("b-new-{i}");
                    ok(&mut bg, "RMQ.PUSH", "q", &["late", "ID", &id]);
                    pushed.push(id);
                }
                7 => {
                    let id = format!("b-{}", rng.gen_range(200..n));
                    if int(&ok(&mut bg, "RMQ.DEL", "q", &[&id])) == 1 {
                        gone.insert(id);
                    }
                }
                _ => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        (gone, pushed)
    });
    // The lookups: every stable message found where it is, some deleted, some requeued.
    let mut rng = SmallRng::seed_from_u64(11);
    for round in 0..150 {
        let i = rng.gen_range(0..stable);
        let id = if rng.gen_bool(0.5) { format!("s-{i}") } else { failed_ids[i % failed_ids.len()].clone() };
        let Some(states) = expected.get(&id).cloned() else { continue };
        match round % 3 {
            0 => {
                let got = map(&ok(&mut c, "RMQ.GET", "q", &[&id]));
                assert_eq!(text(&got["state"]), states[0], "GET {id}");
            }
            1 => {
                assert_eq!(int(&ok(&mut c, "RMQ.DEL", "q", &[&id])), 1, "DEL {id}");
                expected.remove(&id);
            }
            _ => {
                let moved = int(&ok(&mut c, "RMQ.REQUEUE", "q", &[&id]));
                let requeuable = ["delayed", "failed", "errors"].contains(&states[0].as_str());
                assert_eq!(moved, requeuable as i64, "REQUEUE {id} from {}", states[0]);
                if requeuable {
                    expected.insert(id, vec!["ready".into()]);
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (gone, pushed) = background.join().unwrap();
    assert!(info(&mut c)["sliced_total"] >= 150, "every lookup ran in slices");
    // Nothing lost, nothing twice: every message is where some state holds it, once.
    let now = every_message(&mut c, "q");
    for (id, states) in &now {
        assert_eq!(states.len(), 1, "{id} is held twice: {states:?}");
    }
    for id in expected.keys().filter(|id| !gone.contains(*id)) {
        assert!(now.contains_key(id), "{id} was lost");
    }
    for id in &pushed {
        assert!(now.contains_key(id) || gone.contains(id), "{id} (pushed meanwhile) was lost");
    }
    for id in now.keys() {
        assert!(expected.contains_key(id) || pushed.contains(id), "{id} came back after it was deleted");
    }
}

#[test]
fn log_from_finds_every_later_entry_among_interleaved_events() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let s = module();
    let mut c = s.conn();
    ok(&mut c, "RMQ.CONFIG", "q", &["SET", "log", "1", "backoff-ms", "0"]);
    // Pushes, with fetches, acks, retries and failures of older messages in between, over
    // many milliseconds, so that the log interleaves events of old and new messages.
    let mut rng = SmallRng::seed_from_u64(5);
    let mut held: Vec<String> = Vec::new();
    for i in 0..3000 {
        ok(&mut c, "RMQ.PUSH", "q", &[&format!("m{i}")]);
        if rng.gen_bool(0.3) {
            for m in messages(&ok(&mut c, "RMQ.FETCH", "q", &["COUNT", "3"])) {
                held.push(field(&m, "receipt"));
            }
        }
        if !held.is_empty() && rng.gen_bool(0.4) {
            let r = held.swap_remove(rng.gen_range(0..held.len()));
            let how = ["ACK", "NACK"][rng.gen_range(0..2)];
            let _ = rmq(&mut c, &format!("RMQ.{how}"), "q", &[&r]);
        }
        if i % 300 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Every entry of the log with its offset, in log order, read directly.
    let all: Vec<(i64, String)> = {
        let entries: Vec<Value> = redis::cmd("XRANGE").arg("log:{q}").arg("-").arg("+").query(&mut c).unwrap();
        entries
            .iter()
            .map(|e| {
                let f = array(&array(e)[1]);
                let get = |name: &str| f.chunks(2).find(|p| text(&p[0]) == name).map(|p| text(&p[1])).unwrap();
                (get("offset").parse().unwrap(), get("event"))
            })
            .collect()
    };
    for from in [1i64, 2, 17, 500, 1234, 2999, 3000, 3001] {
        let want: Vec<(i64, String)> = all.iter().filter(|(o, _)| *o >= from).take(1000).cloned().collect();
        let got: Vec<(i64, String)> = messages(&ok(&mut c, "RMQ.LOG", "q", &["FROM", &from.to_string(), "COUNT", "1000"]))
            .iter()
            .map(|e| (field_int(e, "offset"), field(e, "event")))
            .collect();
        assert_eq!(got, want, "LOG FROM {from}");
    }
    // REPLAY of a range copies exactly its pushes.
    let before = stats(&mut c, "q")["pushed"];
    assert_eq!(int(&ok(&mut c, "RMQ.REPLAY", "q", &["FROM", "1500", "TO", "1509"])), 10);
    assert_eq!(stats(&mut c, "q")["pushed"], before + 10);
}
