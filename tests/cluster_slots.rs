//! The module on a Redis Cluster while a queue's slot moves: no command acts on a part of the
//! queue. Two primaries; the slot of queue `q` is moved by hand, step by step, the way
//! `redis-cli --cluster reshard` does it (SETSLOT IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE).

mod common;

use std::time::Duration;

use common::module_calls::within;
use common::values::*;
use common::{free_port, Server, ServerOptions};
use redis::{Connection, Value};

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

fn node() -> Server {
    let port = cluster_port();
    let opts = ServerOptions::module().arg("guard-interval-ms", "20").conf("cluster-enabled", "yes").conf("cluster-node-timeout", "5000");
    Server::start_on(opts, port)
}

fn id_of(c: &mut Connection) -> String {
    redis::cmd("CLUSTER").arg("MYID").query(c).unwrap()
}

fn slot(c: &mut Connection, q: &str) -> i64 {
    redis::cmd("CLUSTER").arg("KEYSLOT").arg(q).query(c).unwrap()
}

fn raw(c: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut x = redis::cmd(args[0]);
    for a in &args[1..] {
        x.arg(*a);
    }
    x.query(c)
}

#[test]
fn while_a_queues_slot_moves_every_command_says_tryagain_and_the_guard_waits() {
    let (a, b) = (node(), node());
    let (mut ca, mut cb) = (a.conn(), b.conn());
    let _: () = redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(b.port).query(&mut ca).unwrap();
    let _: () = redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(0).arg(8191).query(&mut ca).unwrap();
    let _: () = redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(8192).arg(16383).query(&mut cb).unwrap();
    within(Duration::from_secs(20), "the cluster is ok", || {
        [&mut ca, &mut cb].iter_mut().all(|c| {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(*c).unwrap();
            info.contains("cluster_state:ok")
        })
    });
    // A queue on node A with a message ready, one in flight with a lock about to run out, and
    // one delayed.
    let q = (0..).map(|i| format!("q{i}")).find(|q| slot(&mut ca, q) < 8192).unwrap();
    let s = slot(&mut ca, &q).to_string();
    for body in ["ready", "flight"] {
        raw(&mut ca, &["RMQ.PUSH", &q, body]).unwrap();
    }
    raw(&mut ca, &["RMQ.PUSH", &q, "later", "DELAY", "300"]).unwrap();
    let m = messages(&raw(&mut ca, &["RMQ.FETCH", &q, "LOCK", "200"]).unwrap());
    assert_eq!(field(&m[0], "body"), "ready");
    let (ida, idb) = (id_of(&mut ca), id_of(&mut cb));
    // The slot starts to move from A to B.
    raw(&mut cb, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &ida]).unwrap();
    raw(&mut ca, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &idb]).unwrap();
    let keys_before: Vec<String> = redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(&s).arg(100).query(&mut ca).unwrap();
    assert!(keys_before.len() >= 5, "the queue's keys: {keys_before:?}");
    // Half of them move.
    let (moved, stay) = keys_before.split_at(keys_before.len() / 2);
    let mut migrate = redis::cmd("MIGRATE");
    migrate.arg("127.0.0.1").arg(b.port).arg("").arg(0).arg(5000).arg("KEYS").arg(moved);
    let _: () = migrate.query(&mut ca).unwrap();
    // Source: Redis sends clients to B (the bare queue name is no key of A's).
    let e = raw(&mut ca, &["RMQ.STATS", &q]).unwrap_err();
    assert_eq!(e.code(), Some("ASK"), "{e:?}");
    // Target, with ASKING: the module refuses, for every command, reads included.
    for cmd in [vec!["RMQ.PUSH", &q, "x"], vec!["RMQ.FETCH", &q], vec!["RMQ.STATS", &q], vec!["RMQ.PEEK", &q], vec!["RMQ.GET", &q, "x"]] {
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING");
        let mut x = redis::cmd(cmd[0]);
        for arg in &cmd[1..] {
            x.arg(*arg);
        }
        pipe.add_command(x);
        let e = pipe.query::<Vec<Value>>(&mut cb).unwrap_err();
        assert_eq!(e.code(), Some("TRYAGAIN"), "{cmd:?}: {e:?}");
    }
    // The guard leaves the moving slot alone on both nodes: the lock runs out and the delay
    // comes due, and nothing moves on either side.
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<String> = redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(&s).arg(100).query(&mut ca).unwrap();
    assert_eq!(after, stay, "the guard on A recreated or moved keys of a migrating slot");
    // The rest moves; the slot is B's.
    let mut migrate = redis::cmd("MIGRATE");
    migrate.arg("127.0.0.1").arg(b.port).arg("").arg(0).arg(5000).arg("KEYS").arg(stay);
    let _: () = migrate.query(&mut ca).unwrap();
    for c in [&mut cb, &mut ca] {
        raw(c, &["CLUSTER", "SETSLOT", &s, "NODE", &idb]).unwrap();
    }
    // B serves the whole queue: what was in flight came back, what was delayed is ready.
    within(Duration::from_secs(10), "B's guard reclaims and promotes", || {
        let st = map(&raw(&mut cb, &["RMQ.STATS", &q]).unwrap());
        int(&st["ready"]) == 3 && int(&st["inflight"]) == 0 && int(&st["delayed"]) == 0
    });
    let e = raw(&mut ca, &["RMQ.STATS", &q]).unwrap_err();
    assert_eq!(e.code(), Some("MOVED"), "{e:?}");
    let got = messages(&raw(&mut cb, &["RMQ.FETCH", &q, "COUNT", "10"]).unwrap());
    assert_eq!(got.iter().map(|m| field(m, "body")).collect::<Vec<_>>(), ["flight", "later", "ready"]);
}
