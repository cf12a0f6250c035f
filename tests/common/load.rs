//! Loading a server for tests at scale: pipelines of commands, many small messages, a second
//! connection working meanwhile, INFO rmq as numbers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Connection;

use super::Server;

/// `INFO rmq` as numbers, without the `rmq_` prefix.
pub fn info(c: &mut Connection) -> BTreeMap<String, i64> {
    let text: String = redis::cmd("INFO").arg("rmq").query(c).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("rmq_")?.split_once(':'))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Sends `n` commands made by `each` in pipelines of 10,000, ignoring their replies.
pub fn pipelined(c: &mut Connection, n: usize, mut each: impl FnMut(&mut redis::Pipeline, usize)) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            each(&mut pipe, i);
            pipe.ignore();
        }
        let _: () = pipe.query(c).unwrap();
    }
}

/// Pushes `n` small messages with server-made ids (the common case at this scale).
pub fn push_fillers(c: &mut Connection, q: &str, n: usize) {
    pipelined(c, n, |p, i| {
        p.cmd("RMQ.PUSH").arg(q).arg(format!("{{\"filler\":{i}}}"));
    });
}

/// Runs `f` on a second connection after `delay`, while the caller goes on.
pub fn meanwhile<T: Send + 'static>(
    s: &Server,
    delay: Duration,
    f: impl FnOnce(&mut Connection) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let mut other = s.conn();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        f(&mut other)
    })
}
