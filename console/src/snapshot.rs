//! One reading of every queue of a node, in a fixed number of round trips whatever the number of
//! queues or messages: the overview, the sampler and every Prometheus scrape are made from it.
//!
//! Round trip 1: `RMQ.QUEUES` and `INFO rmq`, sent together.
//! Round trip 2: `RMQ.STATS q` and `RMQ.CONFIG q GET paused` of every queue, in one pipeline.
//! Each of these commands is O(1) per queue (QUEUES is a SCAN of the keyspace), so the cost
//! grows with the number of queues, never with the number of messages.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::backend::{Backend, Call, RedisError};
use crate::reply::{as_i64, as_string, pairs};

/// What RMQ.STATS and CONFIG say of one queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub name: String,
    pub ready: u64,
    pub delayed: u64,
    pub inflight: u64,
    pub failed: u64,
    pub errors: u64,
    pub pushed: u64,
    pub acked: u64,
    pub retried: u64,
    pub dead: u64,
    pub errored: u64,
    pub dups: u64,
    /// Messages deleted by DEL and PURGE, when the server's STATS reports it.
    pub removed: Option<u64>,
    pub offset: u64,
    pub oldest_ready_ms: u64,
    /// The `paused` setting; None when the server does not know it.
    pub paused: Option<bool>,
    /// Why STATS failed for this queue (the row is then all zeros).
    pub error: Option<String>,
}

impl QueueStats {
    /// Messages in any state.
    pub fn total(&self) -> u64 {
        self.ready + self.delayed + self.inflight + self.failed + self.errors
    }

    /// The count of one state (`ready`, `delayed`, `inflight`, `failed`, `errors`).
    pub fn count(&self, state: &str) -> u64 {
        match state {
            "ready" => self.ready,
            "delayed" => self.delayed,
            "inflight" => self.inflight,
            "failed" => self.failed,
            "errors" => self.errors,
            _ => 0,
        }
    }

    /// Fills the counters from a STATS reply.
    pub fn apply_stats(&mut self, reply: redis::Value) -> Result<(), RedisError> {
        for (k, v) in pairs(reply)? {
            let n = as_i64(v)?.max(0) as u64;
            match k.as_str() {
                "ready" => self.ready = n,
                "delayed" => self.delayed = n,
                "inflight" => self.inflight = n,
                "failed" => self.failed = n,
                "errors" => self.errors = n,
                "pushed" => self.pushed = n,
                "acked" => self.acked = n,
                "retried" => self.retried = n,
                "dead" => self.dead = n,
                "errored" => self.errored = n,
                "dups" => self.dups = n,
                "removed" => self.removed = Some(n),
                "offset" => self.offset = n,
                "oldest_ready_ms" => self.oldest_ready_ms = n,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The `paused` setting from a `CONFIG q GET paused` reply; None when the server refused it
/// (a server that has no such setting).
pub fn paused_from(reply: Result<redis::Value, RedisError>) -> Option<bool> {
    let v = reply.ok()?;
    let pairs = crate::reply::pairs(v).ok()?;
    let (_, v) = pairs.into_iter().find(|(k, _)| k == "paused")?;
    Some(as_string(v).ok()? == "1")
}

/// A whole node at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Unix ms when the reading started.
    pub taken_ms: u64,
    /// How long it took.
    pub took: std::time::Duration,
    pub edition: &'static str,
    /// Sorted by name.
    pub queues: Vec<QueueStats>,
    /// The fields of `INFO rmq` without their `rmq_` prefix (empty for the Lua edition).
    pub info: BTreeMap<String, String>,
    /// Sequential round trips to Redis that the reading needed.
    pub round_trips: u32,
}

impl Snapshot {
    pub fn info_u64(&self, name: &str) -> Option<u64> {
        self.info.get(name).and_then(|v| v.trim().parse().ok())
    }

    pub fn queue(&self, name: &str) -> Option<&QueueStats> {
        self.queues.binary_search_by(|q| q.name.as_str().cmp(name)).ok().map(|i| &self.queues[i])
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `INFO rmq` as name → value, without the `rmq_` prefix.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .filter_map(|(k, v)| Some((k.strip_prefix("rmq_")?.to_string(), v.to_string())))
        .collect()
}

/// Reads every queue of the node (see the module comment for the round trips).
pub async fn read(redis: &dyn Backend) -> Result<Snapshot, RedisError> {
    let start = Instant::now();
    let taken_ms = unix_ms();
    let edition = redis.edition().await?;
    let mut info_cmd = redis::cmd("INFO");
    info_cmd.arg("rmq");
    let (queues, info) = tokio::join!(redis.call("queues", None, Vec::new()), redis.raw(info_cmd));
    let names: Vec<String> = match queues? {
        redis::Value::Array(v) => v.into_iter().map(as_string).collect::<Result<_, _>>()?,
        redis::Value::Nil => Vec::new(),
        other => return Err(RedisError::refused(format!("unexpected reply to QUEUES: {other:?}"))),
    };
    // A server without the section (the Lua edition) or that refuses INFO: no node fields.
    let info = info.ok().and_then(|v| as_string(v).ok()).map(|t| parse_info(&t)).unwrap_or_default();
    let mut calls = Vec::with_capacity(names.len() * 2);
    for q in &names {
        calls.push(Call::new("stats", q, &[]));
        calls.push(Call::new("config", q, &["GET", "paused"]));
    }
    let mut replies = redis.call_many(calls).await?.into_iter();
    let mut queues = Vec::with_capacity(names.len());
    for name in names {
        let mut q = QueueStats { name, ..Default::default() };
        match replies.next() {
            Some(Ok(v)) => {
                if let Err(e) = q.apply_stats(v) {
                    q.error = Some(e.text);
                }
            }
            Some(Err(e)) => q.error = Some(e.text),
            None => q.error = Some("no reply".into()),
        }
        q.paused = replies.next().and_then(paused_from);
        queues.push(q);
    }
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Snapshot { taken_ms, took: start.elapsed(), edition, queues, info, round_trips: 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_lose_their_prefix() {
        let t = "# rmq\r\nrmq_queues:3\r\nrmq_guard_runs:17\r\nother:1\r\n";
        let i = parse_info(t);
        assert_eq!(i.get("queues").map(String::as_str), Some("3"));
        assert_eq!(i.get("guard_runs").map(String::as_str), Some("17"));
        assert!(!i.contains_key("other"));
    }
}
