//! Calling the module's commands from tests: `RMQ.X q args…` that must succeed or fail, and
//! the replies read by name.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use super::values::{error_line, int, map, messages};

pub fn rmq(c: &mut Connection, cmd: &str, q: &str, args: &[&str]) -> redis::RedisResult<Value> {
    let mut x = redis::cmd(cmd);
    x.arg(q);
    for a in args {
        x.arg(*a);
    }
    x.query(c)
}

/// A command that must succeed.
pub fn ok(c: &mut Connection, cmd: &str, q: &str, args: &[&str]) -> Value {
    rmq(c, cmd, q, args).unwrap_or_else(|e| panic!("{cmd} {q} {args:?}: {e}"))
}

/// A command that must fail: its error line.
pub fn err(c: &mut Connection, cmd: &str, q: &str, args: &[&str]) -> String {
    match rmq(c, cmd, q, args) {
        Err(e) => error_line(&e),
        Ok(v) => panic!("{cmd} {q} {args:?} should fail, got {v:?}"),
    }
}

pub fn fetch_one(c: &mut Connection, q: &str, args: &[&str]) -> BTreeMap<String, Value> {
    let got = messages(&ok(c, "RMQ.FETCH", q, args));
    assert_eq!(got.len(), 1, "expected one message, got {got:?}");
    got.into_iter().next().unwrap()
}

pub fn stats(c: &mut Connection, q: &str) -> BTreeMap<String, i64> {
    map(&ok(c, "RMQ.STATS", q, &[])).into_iter().map(|(k, v)| (k, int(&v))).collect()
}

/// Polls `f` until it holds, for at most `limit`; fails the test otherwise.
pub fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
