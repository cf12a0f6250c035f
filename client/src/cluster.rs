//! Redis Cluster: the slot map, one [`Node`] per server, and the routing of a request to the
//! master that owns its queue's slot.
//!
//! The client routes by itself rather than through a generic cluster connection so that it
//! knows exactly what it sends twice:
//! - MOVED: the slot has a new owner; learn it, refresh the map, send again at once;
//! - ASK: the slot is being moved; send again to the node named, after ASKING;
//! - TRYAGAIN (the queue's slot is migrating), CLUSTERDOWN, MASTERDOWN, LOADING, READONLY: the
//!   command was not run; wait (doubling pauses) and send again until the time limit;
//! - no connection to the owner: refresh the map (a failover may have named a new master),
//!   wait, send again: the request never left;
//! - sent, but no answer (the connection broke, or timed out): sent again only when that is
//!   safe (a PUSH with its id, reads, CONFIG); otherwise the caller gets
//!   [`Error::Unavailable`], since the command may have been applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crc::{Crc, CRC_16_XMODEM};
use redis::{RedisError, ServerErrorKind, Value};

use crate::client::{as_i64, as_string, classify, redact_url};
use crate::error::{Error, Result};
use crate::node::{Node, NodeSettings};

/// Redis Cluster's number of hash slots.
pub const SLOT_COUNT: u16 = 16384;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The hash slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of the key's hash tag
/// (the bytes between the first `{` and the next `}`, when there are any) or else of the
/// whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
    });
    CRC16.checksum(tagged.unwrap_or(key)) % SLOT_COUNT
}

/// The slot of queue `q`: every key of a queue carries the hash tag `{q}`.
pub fn queue_slot(q: &str) -> u16 {
    CRC16.checksum(q.as_bytes()) % SLOT_COUNT
}

/// One master and what it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// `host:port`.
    pub master: String,
    pub replicas: Vec<String>,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

/// The slot map: which master serves each slot.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    owners: Vec<Option<Arc<str>>>,
    /// Masters in the order of their first slot.
    pub shards: Vec<Shard>,
}

impl Topology {
    /// From a `CLUSTER SLOTS` reply: `[start, end, [host, port, id, …], replica…]` per range.
    /// An empty host means the host the reply came from (`seed_host`).
    pub fn from_cluster_slots(v: Value, seed_host: &str) -> Result<Topology> {
        let Value::Array(ranges) = v else {
            return Err(Error::Protocol(format!("CLUSTER SLOTS replied {v:?}")));
        };
        let mut by_master: BTreeMap<String, Shard> = BTreeMap::new();
        let mut owners: Vec<Option<Arc<str>>> = vec![None; SLOT_COUNT as usize];
        for r in ranges {
            let Value::Array(parts) = r else { continue };
            if parts.len() < 3 {
                continue;
            }
            let mut it = parts.into_iter();
            let start = as_i64(it.next().unwrap_or(Value::Nil))?;
            let end = as_i64(it.next().unwrap_or(Value::Nil))?;
            let mut addrs = Vec::new();
            for node in it {
                let Value::Array(n) = node else { continue };
                let mut f = n.into_iter();
                let host = as_string(f.next().unwrap_or(Value::Nil))?;
                let port = as_i64(f.next().unwrap_or(Value::Nil))?;
                let host = if host.is_empty() || host == "?" { seed_host.to_string() } else { host };
                addrs.push(format!("{host}:{port}"));
            }
            if addrs.is_empty() || !(0..SLOT_COUNT as i64).contains(&start) || !(start..SLOT_COUNT as i64).contains(&end) {
                continue;
            }
            let master: Arc<str> = Arc::from(addrs[0].as_str());
            for o in &mut owners[start as usize..=end as usize] {
                *o = Some(master.clone());
            }
            let shard = by_master.entry(addrs[0].clone()).or_insert_with(|| Shard {
                master: addrs[0].clone(),
                replicas: Vec::new(),
                slots: Vec::new(),
            });
            shard.slots.push((start as u16, end as u16));
            for r in &addrs[1..] {
                if !shard.replicas.contains(r) {
                    shard.replicas.push(r.clone());
                }
            }
        }
        if by_master.is_empty() {
            return Err(Error::Unavailable("the cluster serves no slot yet".into()));
        }
        let mut shards: Vec<Shard> = by_master.into_values().collect();
        for s in &mut shards {
            s.slots.sort();
        }
        shards.sort_by_key(|s| s.slots.first().map(|r| r.0).unwrap_or(u16::MAX));
        Ok(Topology { owners, shards })
    }

    /// The master serving `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&str> {
        self.owners.get(slot as usize).and_then(|o| o.as_deref())
    }

    pub fn masters(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.master.clone()).collect()
    }
}

/// Where a request goes.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// The master of this slot (following MOVED and ASK).
    Slot(u16),
    /// This node, whatever it serves (a keyless command for every master).
    Node(String),
    /// Any master that answers: the URL's node first when it is one.
    Any,
}

/// What a reply asks the router to do.
enum Verdict {
    Done,
    Moved(u16, String),
    Ask(String),
    /// Not run; wait and send again (refreshing the map first when `refresh`).
    Wait {
        err: Error,
        refresh: bool,
    },
}

pub(crate) struct Cluster {
    seed: url::Url,
    seed_host: String,
    settings: NodeSettings,
    topology: RwLock<Arc<Topology>>,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    /// When the map was last read; one refresh at a time.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

/// Refreshes closer together than this are merged into one.
const REFRESH_GAP: Duration = Duration::from_millis(100);
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(250);

impl Cluster {
    /// Reads the slot map from the node at `url`.
    pub async fn connect(url: &str, settings: NodeSettings, t: Duration) -> Result<Cluster> {
        let seed = url::Url::parse(url).map_err(|e| Error::Config(format!("bad Redis URL: {e}")))?;
        let seed_host = seed.host_str().unwrap_or("127.0.0.1").trim_start_matches('[').trim_end_matches(']').to_string();
        let c = Cluster {
            seed,
            seed_host,
            settings,
            topology: RwLock::new(Arc::new(Topology::default())),
            nodes: Mutex::new(HashMap::new()),
            refreshed: tokio::sync::Mutex::new(None),
        };
        let seed_addr = c.seed_addr();
        let topo = c.read_map(&seed_addr, t).await?;
        *c.topology.write().unwrap() = Arc::new(topo);
        *c.refreshed.lock().await = Some(Instant::now());
        Ok(c)
    }

    fn seed_addr(&self) -> String {
        format!("{}:{}", self.seed_host, self.seed.port().unwrap_or(6379))
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().unwrap().clone()
    }

    /// The node at `addr` (`host:port`), with the seed URL's user, password, TLS and options.
    fn node(&self, addr: &str) -> Result<Arc<Node>> {
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(n) = nodes.get(addr) {
            return Ok(n.clone());
        }
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| Error::Protocol(format!("bad node address '{addr}'")))?;
        let port: u16 = port.parse().map_err(|_| Error::Protocol(format!("bad node address '{addr}'")))?;
        let mut u = self.seed.clone();
        let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
        u.set_host(Some(&host)).map_err(|e| Error::Config(format!("node {addr}: {e}")))?;
        u.set_port(Some(port)).map_err(|_| Error::Config(format!("node {addr}: cannot set the port")))?;
        let url = u.to_string();
        let node = Arc::new(Node::new(&url, redact_url(&url), self.settings)?);
        nodes.insert(addr.to_string(), node.clone());
        Ok(node)
    }

    async fn read_map(&self, addr: &str, t: Duration) -> Result<Topology> {
        let node = self.node(addr)?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors().cmd("CLUSTER").arg("SLOTS");
        let v = node.send(&pipe, t, false).await.map_err(|e| e.err)?;
        match v.into_iter().next() {
            Some(Value::ServerError(e)) => Err(classify(RedisError::from(e))),
            Some(v) => Topology::from_cluster_slots(v, &self.seed_host),
            None => Err(Error::Protocol("CLUSTER SLOTS: no reply".into())),
        }
    }

    /// Reads the slot map again from whichever node answers first (the masters, then their
    /// replicas, then the seed), unless another refresh just did.
    pub async fn refresh(&self) {
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFRESH_GAP) {
            return;
        }
        let topo = self.topology();
        let mut candidates: Vec<String> = topo.masters();
        candidates.extend(topo.shards.iter().flat_map(|s| s.replicas.iter().cloned()));
        candidates.push(self.seed_addr());
        candidates.dedup();
        let t = self.settings.connect_timeout.max(Duration::from_millis(500));
        for addr in candidates {
            if let Ok(new) = self.read_map(&addr, t).await {
                // Forget the pools of nodes that left the map (a dead master, a moved node).
                let mut known: Vec<String> = new.masters();
                known.extend(new.shards.iter().flat_map(|s| s.replicas.iter().cloned()));
                known.push(self.seed_addr());
                self.nodes.lock().unwrap().retain(|a, _| known.contains(a));
                tracing::debug!(masters = ?new.masters(), "rmq cluster: slot map read from {addr}");
                *self.topology.write().unwrap() = Arc::new(new);
                break;
            }
        }
        *last = Some(Instant::now());
    }

    /// A MOVED reply: `slot` is served by `addr` now.
    fn learn(&self, slot: u16, addr: &str) {
        let mut g = self.topology.write().unwrap();
        let mut t = (**g).clone();
        if let Some(o) = t.owners.get_mut(slot as usize) {
            *o = Some(Arc::from(addr));
        }
        *g = Arc::new(t);
    }

    /// Sends `cmds` as one pipeline to `target`, following the cluster's answers (see the
    /// module documentation), within `t`. `resend` says that the request may be sent again
    /// after an answer was lost (every command in it is safe to repeat); it also allows a
    /// pipeline of several commands to be sent again after a redirect. `dedicated` takes a
    /// connection of its own (BLOCK, WAIT).
    pub async fn exec(&self, target: Target, cmds: &[redis::Cmd], t: Duration, resend: bool, dedicated: bool) -> Result<Vec<Value>> {
        let deadline = Instant::now() + t;
        let mut pause = FIRST_PAUSE;
        let mut ask: Option<String> = None;
        let mut last: Option<Error> = None;
        let mut hops = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let now = Instant::now();
            if now >= deadline {
                return Err(last.unwrap_or_else(|| Error::Unavailable(format!("no answer from the cluster within {} ms", t.as_millis()))));
            }
            let asking = ask.is_some();
            let addr = match (ask.take(), &target) {
                (Some(a), _) => a,
                (None, Target::Slot(s)) => match self.topology().owner(*s) {
                    Some(a) => a.to_string(),
                    None => {
                        last = Some(Error::Unavailable(format!("no master serves slot {s}")));
                        self.refresh().await;
                        pause = wait(pause, deadline).await;
                        continue;
                    }
                },
                (None, Target::Node(a)) => a.clone(),
                // The URL's node first when it is a master (what a caller of `raw` expects),
                // then the masters in turn, so that a dead one is passed over.
                (None, Target::Any) => {
                    let mut masters = self.topology().masters();
                    if let Some(i) = masters.iter().position(|m| *m == self.seed_addr()) {
                        masters.rotate_left(i);
                    }
                    if masters.is_empty() {
                        self.seed_addr()
                    } else {
                        masters[(attempt - 1) % masters.len()].clone()
                    }
                }
            };
            let node = self.node(&addr)?;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for c in cmds {
                if asking {
                    pipe.cmd("ASKING");
                }
                pipe.add_command(c.clone());
            }
            match node.send(&pipe, deadline - now, dedicated).await {
                Ok(vals) => {
                    let vals: Vec<Value> = if asking { vals.into_iter().skip(1).step_by(2).collect() } else { vals };
                    let repeatable = cmds.len() == 1 || resend;
                    match verdict(&vals) {
                        Verdict::Done => return Ok(vals),
                        _ if !repeatable => return Ok(vals),
                        Verdict::Moved(slot, to) => {
                            // Other slots probably moved too: read the map again, then take
                            // the redirect's word for this slot (the node that answered knows
                            // best; the node the map came from may not have heard yet).
                            self.refresh().await;
                            self.learn(slot, &to);
                            last = Some(Error::Unavailable(format!("slot {slot} moved to {to}")));
                            hops += 1;
                            if hops > 3 {
                                // Nodes that disagree (a move in progress): give them time.
                                pause = wait(pause, deadline).await;
                            }
                        }
                        Verdict::Ask(to) => ask = Some(to),
                        Verdict::Wait { err, refresh } => {
                            last = Some(err);
                            if refresh {
                                self.refresh().await;
                            }
                            pause = wait(pause, deadline).await;
                        }
                    }
                }
                Err(e) => {
                    if !e.err.is_unavailable() || (e.sent && !resend) {
                        return Err(e.err);
                    }
                    last = Some(e.err);
                    if let Target::Node(_) = target {
                        if !e.sent {
                            return Err(last.unwrap());
                        }
                    }
                    // The owner may be gone: a failover names another.
                    self.refresh().await;
                    pause = wait(pause, deadline).await;
                }
            }
        }
    }
}

/// Sleeps `pause` (less when the deadline is nearer) and gives the next, longer pause.
async fn wait(pause: Duration, deadline: Instant) -> Duration {
    tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    (pause * 2).min(LONGEST_PAUSE)
}

/// The first reply in `vals` that asks for a redirect or a retry.
fn verdict(vals: &[Value]) -> Verdict {
    for v in vals {
        let Value::ServerError(se) = v else { continue };
        let e = RedisError::from(se.clone());
        match e.kind() {
            redis::ErrorKind::Server(ServerErrorKind::Moved) => {
                if let Some((addr, slot)) = e.redirect_node() {
                    return Verdict::Moved(slot, addr.to_string());
                }
            }
            redis::ErrorKind::Server(ServerErrorKind::Ask) => {
                if let Some((addr, _)) = e.redirect_node() {
                    return Verdict::Ask(addr.to_string());
                }
            }
            redis::ErrorKind::Server(ServerErrorKind::TryAgain) => return Verdict::Wait { err: classify(e), refresh: false },
            redis::ErrorKind::Server(
                ServerErrorKind::ClusterDown | ServerErrorKind::MasterDown | ServerErrorKind::ReadOnly | ServerErrorKind::BusyLoading,
            ) => return Verdict::Wait { err: classify(e), refresh: true },
            _ => {}
        }
    }
    Verdict::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Values from CLUSTER KEYSLOT on a real server.
        assert_eq!(key_slot(b"jobs"), 9631);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"msg:{jobs}"), 9631);
        assert_eq!(key_slot(b"{}jobs"), key_slot(b"{}jobs"));
        assert_eq!(key_slot(b"a{}{jobs}"), CRC16.checksum(b"a{}{jobs}") % SLOT_COUNT);
        assert_eq!(queue_slot("jobs"), 9631);
    }

    #[test]
    fn a_cluster_slots_reply_gives_owners_and_shards() {
        let node = |h: &str, p: i64| Value::Array(vec![Value::BulkString(h.into()), Value::Int(p), Value::BulkString(b"id".to_vec())]);
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(99), node("10.0.0.1", 7000), node("10.0.0.2", 7001)]),
            Value::Array(vec![Value::Int(100), Value::Int(16383), node("", 7002)]),
        ]);
        let t = Topology::from_cluster_slots(reply, "127.0.0.1").unwrap();
        assert_eq!(t.owner(0), Some("10.0.0.1:7000"));
        assert_eq!(t.owner(99), Some("10.0.0.1:7000"));
        assert_eq!(t.owner(100), Some("127.0.0.1:7002"));
        assert_eq!(t.masters(), vec!["10.0.0.1:7000".to_string(), "127.0.0.1:7002".to_string()]);
        assert_eq!(t.shards[0].replicas, vec!["10.0.0.2:7001".to_string()]);
    }
}
