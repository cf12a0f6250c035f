//! The queues under comparison. Each does the same cycle per message: push → fetch (the
//! message moves into flight and its body comes back) → ack (the message is gone, or, for
//! Streams without XDEL, acknowledged).
//!
//! One rule for every approach: commands whose arguments do not depend on an earlier reply go
//! to Redis in one round trip (a 2-command pipeline: SET + LPUSH, XACK + XDEL, LREM + DEL);
//! a command that needs an earlier reply (GET of the id LMOVE returned) costs a round trip of
//! its own, as it would for any client. With a pipeline depth d, d messages go per round trip.

use redis::{Connection, Pipeline, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Approach {
    Rmq,
    RmqLua,
    Streams,
    StreamsDel,
    Lists,
    ListsScript,
}

pub const ALL: [Approach; 6] =
    [Approach::Rmq, Approach::RmqLua, Approach::Streams, Approach::StreamsDel, Approach::Lists, Approach::ListsScript];

/// Queue and key names. The module and the Lua edition use different queues.
const Q_MODULE: &str = "bench";
const Q_LUA: &str = "benchlua";
const STREAM: &str = "stream:{bench}";
const GROUP: &str = "g";
const READY: &str = "ready:{bench}";
const PROCESSING: &str = "processing:{bench}";
const BODY_PREFIX: &str = "body:{bench}:";
const LOCK: &str = "lock:{bench}";

/// The classic double queue of Redis lists as three scripts, each taking a lock key around its work.
pub const SCRIPT_PUSH: &str = r#"
-- KEYS: lock, ready list, body key   ARGV: token, id, body
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 5000) then return redis.error_reply('LOCKED') end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"#;
pub const SCRIPT_FETCH: &str = r#"
-- KEYS: lock, ready list, processing list   ARGV: token, body key prefix
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 5000) then return redis.error_reply('LOCKED') end
local id = redis.call('LMOVE', KEYS[2], KEYS[3], 'RIGHT', 'LEFT')
local body = false
if id then body = redis.call('GET', ARGV[2] .. id) end
redis.call('DEL', KEYS[1])
if not id then return false end
return {id, body}
"#;
pub const SCRIPT_ACK: &str = r#"
-- KEYS: lock, processing list, body key   ARGV: token, id
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 5000) then return redis.error_reply('LOCKED') end
local n = redis.call('LREM', KEYS[2], -1, ARGV[2])
if n == 1 then redis.call('DEL', KEYS[3]) end
redis.call('DEL', KEYS[1])
return n
"#;

#[derive(Clone, Default)]
pub struct Shas {
    pub push: String,
    pub fetch: String,
    pub ack: String,
}

pub type R<T> = Result<T, String>;

fn err(e: redis::RedisError) -> String {
    e.to_string()
}

impl Approach {
    pub fn name(self) -> &'static str {
        match self {
            Approach::Rmq => "rmq (module)",
            Approach::RmqLua => "rmq Lua edition (FCALL)",
            Approach::Streams => "Streams XACK",
            Approach::StreamsDel => "Streams XACK+XDEL",
            Approach::Lists => "lists double queue",
            Approach::ListsScript => "lists EVALSHA + lock",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Approach::Rmq => "rmq",
            Approach::RmqLua => "rmq-lua",
            Approach::Streams => "streams",
            Approach::StreamsDel => "streams-xdel",
            Approach::Lists => "lists",
            Approach::ListsScript => "lists-evalsha",
        }
    }

    pub fn from_short(s: &str) -> Option<Approach> {
        ALL.iter().copied().find(|a| a.short() == s)
    }

    /// The commands of one message, per phase, as a reader would write them.
    pub fn commands(self) -> [&'static str; 3] {
        match self {
            Approach::Rmq => ["RMQ.PUSH q body", "RMQ.FETCH q COUNT 1 COMPACT", "RMQ.ACK q receipt"],
            Approach::RmqLua => ["FCALL rmq_push 1 q body", "FCALL rmq_fetch 1 q COUNT 1 COMPACT", "FCALL rmq_ack 1 q receipt"],
            Approach::Streams => ["XADD s * b body", "XREADGROUP GROUP g c COUNT 1 STREAMS s >", "XACK s g id"],
            Approach::StreamsDel => {
                ["XADD s * b body", "XREADGROUP GROUP g c COUNT 1 STREAMS s >", "XACK s g id + XDEL s id (1 round trip)"]
            }
            Approach::Lists => [
                "SET body:id body + LPUSH ready id (1 round trip)",
                "LMOVE ready processing RIGHT LEFT, then GET body:id (2 round trips)",
                "LREM processing -1 id + DEL body:id (1 round trip)",
            ],
            Approach::ListsScript => [
                "EVALSHA push (SET lock NX PX, SET, LPUSH, DEL lock)",
                "EVALSHA fetch (lock, LMOVE, GET, unlock)",
                "EVALSHA ack (lock, LREM -1, DEL, unlock)",
            ],
        }
    }

    /// Right after FLUSHALL, before a run.
    pub fn prepare(self, con: &mut Connection) -> R<()> {
        if matches!(self, Approach::Streams | Approach::StreamsDel) {
            redis::cmd("XGROUP").arg("CREATE").arg(STREAM).arg(GROUP).arg("$").arg("MKSTREAM").query::<()>(con).map_err(err)?;
        }
        Ok(())
    }

    /// Pushes messages `ids` (unique over the run) with this body, `depth` messages per round trip.
    pub fn push(self, con: &mut Connection, shas: &Shas, ids: std::ops::Range<u64>, body: &[u8], depth: usize) -> R<()> {
        let ids: Vec<u64> = ids.collect();
        for chunk in ids.chunks(depth.max(1)) {
            let mut p = redis::pipe();
            for &id in chunk {
                match self {
                    Approach::Rmq => {
                        p.cmd("RMQ.PUSH").arg(Q_MODULE).arg(body);
                    }
                    Approach::RmqLua => {
                        p.cmd("FCALL").arg("rmq_push").arg(1).arg(Q_LUA).arg(body);
                    }
                    Approach::Streams | Approach::StreamsDel => {
                        p.cmd("XADD").arg(STREAM).arg("*").arg("b").arg(body);
                    }
                    Approach::Lists => {
                        p.cmd("SET").arg(format!("{BODY_PREFIX}{id}")).arg(body);
                        p.cmd("LPUSH").arg(READY).arg(id);
                    }
                    Approach::ListsScript => {
                        p.cmd("EVALSHA")
                            .arg(&shas.push)
                            .arg(3)
                            .arg(LOCK)
                            .arg(READY)
                            .arg(format!("{BODY_PREFIX}{id}"))
                            .arg("t")
                            .arg(id)
                            .arg(body);
                    }
                }
            }
            let replies = query(&mut p, con)?;
            let per = if self == Approach::Lists { 2 } else { 1 };
            if replies.len() != chunk.len() * per {
                return Err(format!("{}: push got {} replies for {} commands", self.short(), replies.len(), chunk.len() * per));
            }
            for r in &replies {
                if matches!(r, Value::Nil | Value::ServerError(_)) {
                    return Err(format!("{}: push failed: {r:?}", self.short()));
                }
            }
        }
        Ok(())
    }

    /// Fetches `count` messages, one per command, `depth` commands per round trip; checks that
    /// every body came back with `body_len` bytes. Returns what ACK needs (receipt, stream id,
    /// list id).
    pub fn fetch(self, con: &mut Connection, shas: &Shas, count: usize, depth: usize, consumer: usize, body_len: usize) -> R<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(count);
        let consumer = format!("c{consumer}");
        while out.len() < count {
            let n = depth.max(1).min(count - out.len());
            let mut p = redis::pipe();
            for _ in 0..n {
                match self {
                    Approach::Rmq => {
                        // COMPACT, as the rmq clients ask for it.
                        p.cmd("RMQ.FETCH").arg(Q_MODULE).arg("COUNT").arg(1).arg("COMPACT");
                    }
                    Approach::RmqLua => {
                        p.cmd("FCALL").arg("rmq_fetch").arg(1).arg(Q_LUA).arg("COUNT").arg(1).arg("COMPACT");
                    }
                    Approach::Streams | Approach::StreamsDel => {
                        p.cmd("XREADGROUP").arg("GROUP").arg(GROUP).arg(&consumer).arg("COUNT").arg(1).arg("STREAMS").arg(STREAM).arg(">");
                    }
                    Approach::Lists => {
                        p.cmd("LMOVE").arg(READY).arg(PROCESSING).arg("RIGHT").arg("LEFT");
                    }
                    Approach::ListsScript => {
                        p.cmd("EVALSHA").arg(&shas.fetch).arg(3).arg(LOCK).arg(READY).arg(PROCESSING).arg("t").arg(BODY_PREFIX);
                    }
                }
            }
            let replies = query(&mut p, con)?;
            if replies.len() != n {
                return Err(format!("{}: fetch got {} replies for {n} commands", self.short(), replies.len()));
            }
            match self {
                Approach::Lists => {
                    // The second round trip: the bodies of the ids LMOVE handed out.
                    let mut ids = Vec::with_capacity(n);
                    let mut p = redis::pipe();
                    for r in replies {
                        let id = bulk(&r).ok_or_else(|| format!("lists: LMOVE gave {r:?}"))?;
                        p.cmd("GET").arg([BODY_PREFIX.as_bytes(), id.as_slice()].concat());
                        ids.push(id);
                    }
                    let bodies = query(&mut p, con)?;
                    for b in &bodies {
                        check_body(self, bulk(b), body_len)?;
                    }
                    out.extend(ids);
                }
                _ => {
                    for r in replies {
                        let (handle, body) = self.parse_fetched(&r)?;
                        check_body(self, Some(body), body_len)?;
                        out.push(handle);
                    }
                }
            }
        }
        Ok(out)
    }

    fn parse_fetched(self, r: &Value) -> R<(Vec<u8>, Vec<u8>)> {
        let bad = || format!("{}: unexpected fetch reply {r:?}", self.short());
        match self {
            Approach::Rmq | Approach::RmqLua => {
                let msgs = array(r).ok_or_else(bad)?;
                if msgs.len() != 1 {
                    return Err(bad());
                }
                // COMPACT: id body receipt attempt …
                let values = array(&msgs[0]).ok_or_else(bad)?;
                let body = values.get(1).and_then(bulk).ok_or_else(bad)?;
                let receipt = values.get(2).and_then(bulk).ok_or_else(bad)?;
                Ok((receipt, body))
            }
            Approach::Streams | Approach::StreamsDel => {
                // [[stream, [[id, [b, body]]]]]
                let streams = array(r).ok_or_else(bad)?;
                let s = array(streams.first().ok_or_else(bad)?).ok_or_else(bad)?;
                let entries = array(s.get(1).ok_or_else(bad)?).ok_or_else(bad)?;
                if entries.len() != 1 {
                    return Err(bad());
                }
                let e = array(&entries[0]).ok_or_else(bad)?;
                let id = bulk(e.first().ok_or_else(bad)?).ok_or_else(bad)?;
                let fields = array(e.get(1).ok_or_else(bad)?).ok_or_else(bad)?;
                let body = bulk(fields.get(1).ok_or_else(bad)?).ok_or_else(bad)?;
                Ok((id, body))
            }
            Approach::ListsScript => {
                let a = array(r).ok_or_else(bad)?;
                let id = bulk(a.first().ok_or_else(bad)?).ok_or_else(bad)?;
                let body = bulk(a.get(1).ok_or_else(bad)?).ok_or_else(bad)?;
                Ok((id, body))
            }
            Approach::Lists => unreachable!("lists fetch reads bodies in a second round trip"),
        }
    }

    /// Acks these handles, `depth` messages per round trip. Returns how many were acked.
    pub fn ack(self, con: &mut Connection, shas: &Shas, handles: &[Vec<u8>], depth: usize) -> R<u64> {
        let mut acked = 0u64;
        for chunk in handles.chunks(depth.max(1)) {
            let mut p = redis::pipe();
            for h in chunk {
                match self {
                    Approach::Rmq => {
                        p.cmd("RMQ.ACK").arg(Q_MODULE).arg(h);
                    }
                    Approach::RmqLua => {
                        p.cmd("FCALL").arg("rmq_ack").arg(1).arg(Q_LUA).arg(h);
                    }
                    Approach::Streams => {
                        p.cmd("XACK").arg(STREAM).arg(GROUP).arg(h);
                    }
                    Approach::StreamsDel => {
                        p.cmd("XACK").arg(STREAM).arg(GROUP).arg(h);
                        p.cmd("XDEL").arg(STREAM).arg(h);
                    }
                    Approach::Lists => {
                        p.cmd("LREM").arg(PROCESSING).arg(-1).arg(h);
                        p.cmd("DEL").arg([BODY_PREFIX.as_bytes(), h.as_slice()].concat());
                    }
                    Approach::ListsScript => {
                        p.cmd("EVALSHA")
                            .arg(&shas.ack)
                            .arg(3)
                            .arg(LOCK)
                            .arg(PROCESSING)
                            .arg([BODY_PREFIX.as_bytes(), h.as_slice()].concat())
                            .arg("t")
                            .arg(h);
                    }
                }
            }
            let replies = query(&mut p, con)?;
            for r in &replies {
                match r {
                    Value::Int(1) => acked += 1,
                    Value::Int(_) => {}
                    other => return Err(format!("{}: ack reply {other:?}", self.short())),
                }
            }
        }
        // XACK+XDEL and LREM+DEL give two 1s per message.
        if matches!(self, Approach::StreamsDel | Approach::Lists) {
            acked /= 2;
        }
        Ok(acked)
    }

    /// After a full cycle: what is left in the keyspace. `Ok(note)` when that is what this
    /// approach is expected to leave, `Err` when a message was left behind.
    pub fn check_after_cycle(self, con: &mut Connection, n: u64) -> R<String> {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).map_err(err)?;
        match self {
            Approach::Rmq | Approach::RmqLua => {
                let q = if self == Approach::Rmq { Q_MODULE } else { Q_LUA };
                let counters = format!("st:{{{q}}}");
                let extra: Vec<&String> = keys.iter().filter(|k| **k != counters).collect();
                if !extra.is_empty() {
                    return Err(format!("{}: keys left after the cycle: {extra:?}", self.short()));
                }
                Ok("no message keys (the counters hash st:{q} stays, by design)".into())
            }
            Approach::Streams | Approach::StreamsDel => {
                let extra: Vec<&String> = keys.iter().filter(|k| *k != STREAM).collect();
                if !extra.is_empty() {
                    return Err(format!("{}: keys left after the cycle: {extra:?}", self.short()));
                }
                let len: u64 = redis::cmd("XLEN").arg(STREAM).query(con).map_err(err)?;
                let pending: Value = redis::cmd("XPENDING").arg(STREAM).arg(GROUP).query(con).map_err(err)?;
                let pending_n = match &pending {
                    Value::Array(a) => match a.first() {
                        Some(Value::Int(i)) => *i as u64,
                        _ => u64::MAX,
                    },
                    _ => u64::MAX,
                };
                if pending_n != 0 {
                    return Err(format!("{}: {pending_n} entries still pending", self.short()));
                }
                if self == Approach::StreamsDel {
                    if len != 0 {
                        return Err(format!("streams-xdel: XLEN {len} after XDEL of every entry"));
                    }
                    Ok("XLEN 0, nothing pending (the empty stream key and its group stay)".into())
                } else {
                    if len != n {
                        return Err(format!("streams: XLEN {len}, expected {n} (acked entries stay)"));
                    }
                    Ok("nothing pending; every acked entry stays in the stream (XACK does not delete)".into())
                }
            }
            Approach::Lists | Approach::ListsScript => {
                if !keys.is_empty() {
                    let shown: Vec<&String> = keys.iter().take(5).collect();
                    return Err(format!("{}: {} keys left after the cycle, e.g. {shown:?}", self.short(), keys.len()));
                }
                Ok("empty keyspace".into())
            }
        }
    }
}

fn query(p: &mut Pipeline, con: &mut Connection) -> R<Vec<Value>> {
    let v: Vec<Value> = p.query(con).map_err(err)?;
    for r in &v {
        if let Value::ServerError(e) = r {
            return Err(format!("server error: {e:?}"));
        }
    }
    Ok(v)
}

fn check_body(a: Approach, body: Option<Vec<u8>>, len: usize) -> R<()> {
    match body {
        Some(b) if b.len() == len => Ok(()),
        Some(b) => Err(format!("{}: body of {} bytes, expected {len}", a.short(), b.len())),
        None => Err(format!("{}: no body in the fetch reply", a.short())),
    }
}

pub fn bulk(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub fn array(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

/// A field of a message map: RESP2 flat `field value …` array, or a RESP3 map.
pub fn field(msg: &Value, name: &str) -> Option<Vec<u8>> {
    match msg {
        Value::Array(a) => a.chunks(2).find(|kv| bulk(&kv[0]).as_deref() == Some(name.as_bytes())).and_then(|kv| kv.get(1)).and_then(bulk),
        Value::Map(m) => m.iter().find(|(k, _)| bulk(k).as_deref() == Some(name.as_bytes())).and_then(|(_, v)| bulk(v)),
        _ => None,
    }
}

/// Loads the Lua edition and the three scripts on the server.
pub fn load_scripts(con: &mut Connection, lua_library: &str) -> R<Shas> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(lua_library)
        .query::<String>(con)
        .map_err(|e| format!("FUNCTION LOAD lua/rmq.lua: {e}"))?;
    let load = |con: &mut Connection, s: &str| redis::cmd("SCRIPT").arg("LOAD").arg(s).query::<String>(con).map_err(err);
    Ok(Shas { push: load(con, SCRIPT_PUSH)?, fetch: load(con, SCRIPT_FETCH)?, ack: load(con, SCRIPT_ACK)? })
}
