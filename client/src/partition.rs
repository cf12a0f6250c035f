//! Partitioned queues: one logical queue NAME over COUNT ordinary rmq queues, its partitions,
//! whose names put them on different slots of a Redis Cluster (and so, spread over its
//! masters). The server sees ordinary queues; everything here lives in the client.
//!
//! The rules every client language follows (written down in docs/cluster.md):
//! - **Registry**: the hash `rmq:partitions`, field NAME, value
//!   `v=1 count=COUNT ordered=0|1 created=UNIX_MS partitions=P0,P1,…` (space-separated
//!   `key=value` pairs; partition names never hold `,` or spaces). A NAME without a field is
//!   an ordinary queue. A partition count is fixed at creation.
//! - **Partition names**: partition `i` (0-based) is named `NAME#i`, or `NAME#i.n` with the
//!   smallest `n ≥ 1` for which the name's slot falls in the `i`-th of COUNT equal shares of
//!   the 16384 slots, `[⌊i·16384/COUNT⌋, ⌊(i+1)·16384/COUNT⌋)`, when `NAME#i` does not. So the
//!   partitions have distinct slots, spread evenly over the slot space, and therefore over
//!   the masters of a cluster whose slots are shared out in ranges (as `redis-cli --cluster
//!   create` does). The names are also in the registry: read them from there.
//! - **Key → partition**: CRC-32 (IEEE 802.3, the crc32 of zlib, gzip and PNG) of the key's
//!   bytes, modulo COUNT: the index in the registry's list. Every message with that key goes
//!   to that partition. A message without a key goes to a partition picked at random.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::client::{Client, Fetch, Stats};
use crate::cluster::{queue_slot, SLOT_COUNT};
use crate::error::{Error, Result};
use crate::message::{validate_queue, Message, Push};

/// The registry: a hash, field = logical name, value = its record. No queue key looks like
/// it (a queue's keys all end in `{name}`).
pub const REGISTRY_KEY: &str = "rmq:partitions";
/// The most partitions a logical queue may have.
pub const MAX_PARTITIONS: usize = 1024;
/// The longest logical name, leaving room for the partition suffix within a queue name's 200
/// bytes.
pub const MAX_NAME_LEN: usize = 180;

/// A partitioned queue, as its registry record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partitioned {
    pub name: String,
    /// Every partition is an `ordered` queue: the messages of one key are handled strictly
    /// one after another.
    pub ordered: bool,
    /// The partitions' queue names, by index.
    pub partitions: Vec<String>,
    /// Unix ms of the creation.
    pub created: u64,
}

/// The index of the partition of `key` among `count`: CRC-32 (IEEE) of the key's bytes mod
/// `count`.
pub fn partition_index(key: &[u8], count: usize) -> usize {
    (crc32fast::hash(key) as u64 % count.max(1) as u64) as usize
}

/// The partition names of logical queue `name` with `count` partitions (see the module
/// documentation for the rule).
pub fn partition_names(name: &str, count: usize) -> Result<Vec<String>> {
    check_name_and_count(name, count)?;
    let total = SLOT_COUNT as usize;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (lo, hi) = (i * total / count, (i + 1) * total / count);
        let fits = |q: &str| (lo..hi).contains(&(queue_slot(q) as usize));
        let plain = format!("{name}#{i}");
        let chosen = if fits(&plain) {
            plain
        } else {
            // One name in every `total / (hi - lo)` fits, on average: COUNT tries.
            (1..=1000 * count + 10_000)
                .map(|n| format!("{name}#{i}.{n}"))
                .find(|q| fits(q))
                .ok_or_else(|| Error::Invalid(format!("no name found for partition {i} of '{name}'")))?
        };
        out.push(chosen);
    }
    Ok(out)
}

fn check_name_and_count(name: &str, count: usize) -> Result<()> {
    validate_queue(name).map_err(|_| Error::Invalid(format!("invalid partitioned queue name '{name}'")))?;
    if name.len() > MAX_NAME_LEN {
        return Err(Error::Invalid(format!("a partitioned queue name has at most {MAX_NAME_LEN} bytes")));
    }
    if !(1..=MAX_PARTITIONS).contains(&count) {
        return Err(Error::Invalid(format!("COUNT must be 1 to {MAX_PARTITIONS}")));
    }
    Ok(())
}

impl Partitioned {
    pub fn count(&self) -> usize {
        self.partitions.len()
    }

    /// The partition of messages with `key`.
    pub fn partition_for_key(&self, key: &[u8]) -> &str {
        &self.partitions[partition_index(key, self.count())]
    }

    /// `p` addressed to its partition: the one of its key, or a random one when it has none.
    pub fn route(&self, mut p: Push) -> Push {
        let i = if p.key.is_empty() { rand::random::<usize>() % self.count() } else { partition_index(p.key.as_bytes(), self.count()) };
        p.queue = self.partitions[i].clone();
        p
    }

    /// The registry record.
    pub fn encode(&self) -> String {
        format!(
            "v=1 count={} ordered={} created={} partitions={}",
            self.count(),
            self.ordered as u8,
            self.created,
            self.partitions.join(",")
        )
    }

    /// Reads a registry record of logical queue `name`.
    pub fn decode(name: &str, record: &str) -> Result<Partitioned> {
        let bad = |why: &str| Error::Protocol(format!("registry record of '{name}' in {REGISTRY_KEY}: {why}: {record:?}"));
        let mut p = Partitioned { name: name.to_string(), ordered: false, partitions: Vec::new(), created: 0 };
        let mut count = None;
        for field in record.split_ascii_whitespace() {
            let Some((k, v)) = field.split_once('=') else { return Err(bad("not key=value")) };
            match k {
                "v" if v != "1" => return Err(bad("unknown version (a newer client wrote it?)")),
                "count" => count = Some(v.parse::<usize>().map_err(|_| bad("bad count"))?),
                "ordered" => p.ordered = v == "1",
                "created" => p.created = v.parse().map_err(|_| bad("bad created"))?,
                "partitions" => p.partitions = v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                _ => {}
            }
        }
        if count != Some(p.partitions.len()) || p.partitions.is_empty() {
            return Err(bad("count and partitions disagree"));
        }
        for q in &p.partitions {
            validate_queue(q).map_err(|_| bad("invalid partition name"))?;
        }
        Ok(p)
    }
}

/// Fetches from several queues in turn, fairly: each rotation starts at a random queue, and
/// every call starts one past where the previous call found messages, so a busy queue never
/// starves the others and an empty one costs one FETCH per round.
pub struct Rotation {
    queues: Vec<String>,
    next: AtomicUsize,
}

impl Rotation {
    pub fn new(queues: Vec<String>) -> Rotation {
        let start = if queues.is_empty() { 0 } else { rand::random::<usize>() % queues.len() };
        Rotation { queues, next: AtomicUsize::new(start) }
    }

    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// One round: FETCHes (never blocking) from the queues in turn until `f.count` messages
    /// (default 1) are in hand or every queue was asked once. A queue that fails (its master
    /// is down) is passed over; the error comes back only when every queue failed.
    pub async fn fetch_round(&self, client: &Client, f: &Fetch) -> Result<Vec<Message>> {
        let n = self.queues.len();
        let want = f.count.unwrap_or(1).max(1);
        let start = self.next.load(Ordering::Relaxed);
        let mut out: Vec<Message> = Vec::new();
        let mut first_err = None;
        let mut failed = 0;
        for k in 0..n {
            let i = (start + k) % n;
            let left = want - out.len() as u32;
            let one = Fetch { count: Some(left), block: None, ..f.clone() };
            match client.fetch(&self.queues[i], &one).await {
                Ok(msgs) => out.extend(msgs),
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert(e);
                }
            }
            if out.len() as u32 >= want {
                self.next.store((i + 1) % n, Ordering::Relaxed);
                return Ok(out);
            }
        }
        self.next.store((start + 1) % n, Ordering::Relaxed);
        match first_err {
            Some(e) if failed == n => Err(e),
            _ => Ok(out),
        }
    }

    /// Rounds until a message comes or `f.block` has passed (`Some(ZERO)`: forever; `None`: one
    /// round), pausing between empty rounds as the client's Lua polling does.
    pub async fn fetch(&self, client: &Client, f: &Fetch) -> Result<Vec<Message>> {
        let Some(block) = f.block else {
            return self.fetch_round(client, f).await;
        };
        let forever = block.is_zero();
        let until = Instant::now() + block;
        let mut pause = client.config().poll_min;
        loop {
            let msgs = self.fetch_round(client, f).await?;
            let now = Instant::now();
            if !msgs.is_empty() || (!forever && now >= until) {
                return Ok(msgs);
            }
            let sleep = if forever { pause } else { pause.min(until - now) };
            tokio::time::sleep(sleep).await;
            pause = (pause * 2).min(client.config().poll_max);
        }
    }
}

impl Client {
    /// The registry record of `name`, or None when `name` is an ordinary queue.
    pub async fn partitioned(&self, name: &str) -> Result<Option<Partitioned>> {
        let v = self.key_command(REGISTRY_KEY, redis::cmd("HGET").arg(REGISTRY_KEY).arg(name), true).await?;
        match v {
            redis::Value::Nil => Ok(None),
            v => Ok(Some(Partitioned::decode(name, &crate::client::as_string(v)?)?)),
        }
    }

    /// [`Client::partitioned`], except that a user who may not read the registry (an ACL
    /// limited to some queues' keys) sees ordinary queues.
    pub async fn partitioned_or_plain(&self, name: &str) -> Result<Option<Partitioned>> {
        match self.partitioned(name).await {
            Err(Error::Refused(t)) if t.starts_with("NOPERM") => {
                tracing::debug!(name, "rmq: the registry of partitioned queues may not be read: '{name}' taken for an ordinary queue");
                Ok(None)
            }
            other => other,
        }
    }

    /// Every partitioned queue, by name.
    pub async fn partition_list(&self) -> Result<Vec<Partitioned>> {
        let v = self.key_command(REGISTRY_KEY, redis::cmd("HGETALL").arg(REGISTRY_KEY), true).await?;
        let mut out = Vec::new();
        for (name, rec) in crate::client::pairs(v)? {
            out.push(Partitioned::decode(&name, &crate::client::as_string(rec)?)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates partitioned queue `name` with `count` partitions (`ordered`: every partition
    /// is an ordered queue, set before the record is written, so no client ever pushes to a
    /// partition that is not ordered yet). Returns the record and whether it is new: creating
    /// again with the same count and order is no change; with others it is refused.
    ///
    /// Refused when `name` is an ordinary queue that holds messages, when a partition name is
    /// a queue that holds messages, or when `name` is a partition of another partitioned queue.
    pub async fn partition_create(&self, name: &str, count: usize, ordered: bool) -> Result<(Partitioned, bool)> {
        let names = partition_names(name, count)?;
        if let Some(existing) = self.partitioned(name).await? {
            if existing.count() == count && existing.ordered == ordered {
                return Ok((existing, false));
            }
            return Err(Error::Refused(format!(
                "partitioned queue '{name}' exists with {} partitions{}; a partition count is fixed at creation",
                existing.count(),
                if existing.ordered { ", ordered" } else { "" }
            )));
        }
        for other in self.partition_list().await? {
            if other.partitions.iter().any(|p| p == name || names.contains(p)) {
                return Err(Error::Refused(format!("'{name}' collides with the partitions of partitioned queue '{}'", other.name)));
            }
        }
        for q in std::iter::once(name).chain(names.iter().map(String::as_str)) {
            let st = match self.stats(q).await {
                // No rmq on the server yet (the Lua library is loaded by the first write): no
                // queue holds anything.
                Err(Error::NotInstalled(_)) => Stats::new(),
                other => other?,
            };
            let held: i64 = ["ready", "delayed", "inflight", "failed", "errors"].iter().map(|k| st.get(*k).copied().unwrap_or(0)).sum();
            if held > 0 {
                return Err(Error::Refused(format!("queue '{q}' holds {held} message(s): choose another name, or empty it first")));
            }
        }
        if ordered {
            for q in &names {
                self.config_set(q, &[("ordered", "1")]).await?;
            }
        }
        let p = Partitioned { name: name.to_string(), ordered, partitions: names, created: crate::client::now_ms() };
        let set = self.key_command(REGISTRY_KEY, redis::cmd("HSETNX").arg(REGISTRY_KEY).arg(name).arg(p.encode()), true).await?;
        if crate::client::as_u64(set)? == 1 {
            return Ok((p, true));
        }
        // Someone created it at the same moment: theirs stands if it is the same.
        match self.partitioned(name).await? {
            Some(theirs) if theirs.count() == count && theirs.ordered == ordered => Ok((theirs, false)),
            _ => Err(Error::Refused(format!("partitioned queue '{name}' was just created with other settings"))),
        }
    }

    /// STATS of every partition, by index.
    pub async fn partition_stats(&self, p: &Partitioned) -> Result<Vec<(String, Stats)>> {
        let mut out = Vec::with_capacity(p.count());
        for q in &p.partitions {
            out.push((q.clone(), self.stats(q).await?));
        }
        Ok(out)
    }

    /// Blocking-aware FETCH over every partition of `p`, fairly (see [`Rotation`]); a caller
    /// that fetches repeatedly should keep one [`Rotation`] instead.
    pub async fn partition_fetch(&self, p: &Partitioned, f: &Fetch) -> Result<Vec<Message>> {
        Rotation::new(p.partitions.clone()).fetch(self, f).await
    }
}

/// Sums the counters of several partitions.
pub fn total(stats: &[(String, Stats)]) -> Stats {
    let mut t = Stats::new();
    for (_, s) in stats {
        for (k, v) in s {
            if k == "oldest_ready_ms" {
                let e = t.entry(k.clone()).or_insert(0);
                *e = (*e).max(*v);
            } else if k != "offset" {
                *t.entry(k.clone()).or_insert(0) += v;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hash_is_crc32_ieee_mod_count() {
        // Check values of CRC-32 (IEEE): zlib.crc32(b"123456789") == 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(partition_index(b"123456789", 12), (0xCBF4_3926u64 % 12) as usize);
        assert_eq!(partition_index(b"customer-7", 1), 0);
        assert_eq!(partition_index(b"customer-7", 12), 8);
        assert_eq!(partition_index(b"", 5), 0);
    }

    #[test]
    fn partition_names_take_distinct_even_shares_of_the_slots() {
        for count in [1, 2, 3, 12, 100] {
            let names = partition_names("orders", count).unwrap();
            assert_eq!(names.len(), count);
            for (i, q) in names.iter().enumerate() {
                let s = queue_slot(q) as usize;
                assert!(s >= i * 16384 / count && s < (i + 1) * 16384 / count, "{q} slot {s}");
                assert!(q == &format!("orders#{i}") || q.starts_with(&format!("orders#{i}.")), "{q}");
                validate_queue(q).unwrap();
            }
        }
        // The vector docs/cluster.md gives to other clients.
        let expected = [
            "orders#0.40",
            "orders#1",
            "orders#2.42",
            "orders#3.22",
            "orders#4",
            "orders#5.42",
            "orders#6.48",
            "orders#7",
            "orders#8.20",
            "orders#9.1",
            "orders#10.23",
            "orders#11",
        ];
        assert_eq!(partition_names("orders", 12).unwrap(), expected);
        assert!(partition_names("orders", 0).is_err());
        assert!(partition_names("orders", MAX_PARTITIONS + 1).is_err());
        assert!(partition_names("bad name", 2).is_err());
        assert!(partition_names(&"n".repeat(MAX_NAME_LEN + 1), 2).is_err());
    }

    #[test]
    fn the_registry_record_reads_back() {
        let p = Partitioned { name: "orders".into(), ordered: true, partitions: partition_names("orders", 4).unwrap(), created: 1700 };
        let back = Partitioned::decode("orders", &p.encode()).unwrap();
        assert_eq!(back, p);
        assert!(p.encode().starts_with("v=1 count=4 ordered=1 created=1700 partitions=orders#0"));
        assert!(Partitioned::decode("x", "v=2 count=1 partitions=a").is_err());
        assert!(Partitioned::decode("x", "v=1 count=2 partitions=a").is_err());
        assert!(Partitioned::decode("x", "v=1 count=1 partitions=a b").is_err());
    }

    #[test]
    fn routing_follows_the_key_and_spreads_keyless_pushes() {
        let p = Partitioned { name: "o".into(), ordered: false, partitions: partition_names("o", 8).unwrap(), created: 0 };
        let a = p.route(Push::new("o", "x").key("customer-7"));
        let b = p.route(Push::new("o", "y").key("customer-7"));
        assert_eq!(a.queue, b.queue);
        assert_eq!(a.queue, p.partitions[partition_index(b"customer-7", 8)]);
        let used: std::collections::BTreeSet<String> = (0..400).map(|_| p.route(Push::new("o", "z")).queue).collect();
        assert_eq!(used.len(), 8, "keyless pushes reach every partition");
    }
}
