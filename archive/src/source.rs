//! The Redis side of the archive: finding the queues to follow, turning their log on, and
//! reading `log:{q}` with a consumer group, so that several archivers share the work and a
//! restarted one carries on where it stopped.
//!
//! Only plain Redis commands and rmq's QUEUES and CONFIG are used, through the client crate,
//! so the archiver works the same on the module and on the Lua edition.

use std::collections::BTreeSet;
use std::sync::Arc;

use redis::Value;

use crate::backend::{as_bytes, as_i64, as_string, pairs, Backend, RedisError};
use crate::error::{Error, Result};
use crate::event::StreamId;
use crate::names::{log_key, Patterns};

/// Checks, right before a read of new entries (in the same MULTI/EXEC, so nothing runs in
/// between), whether the log trimmed entries that the group had not read yet: Redis's `lag`
/// (entries added minus entries read by the group) above the stream's length means the
/// difference is gone. The group's read counter is then moved past them, so each gap is
/// found once, by one archiver, and in the same atomic step the gap is written down in Redis
/// as a marker: an empty consumer of the group named `rmq-gap:<entries>:unread:<n>` (see
/// [`GAP_PREFIX`]), which persists and replicates with the stream and stays until an archiver
/// has saved the gap in the database. A crash between finding a gap and saving it thus loses
/// nothing. A group that does not exist is created at the start of the log; entries trimmed
/// before it existed are not a gap unless this queue was archived before (ARGV[2] = 1: the
/// log was deleted and made again). The read itself stays out of the script: entries returned
/// through Lua cost Redis more.
///
/// KEYS[1] log:{q}. ARGV: group, archived-before (0/1).
/// Reply: {created (0/1, -1 when there is no log), gap (entries lost)}.
const CHECK_GAP: &str = r#"
local key, group = KEYS[1], ARGV[1]
local t = redis.call('TYPE', key)['ok']
if t == 'none' then return {-1, 0} end
if t ~= 'stream' then return redis.error_reply('ERR ' .. key .. ' is a ' .. t .. ', not a stream') end
local len = redis.call('XLEN', key)
local g
for _, item in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local m = {}
  for i = 1, #item, 2 do m[item[i]] = item[i + 1] end
  if m['name'] == group then g = m end
end
if not g then
  local info = redis.call('XINFO', 'STREAM', key)
  local added = 0
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
  local trimmed = added - len
  if trimmed < 0 then trimmed = 0 end
  redis.call('XGROUP', 'CREATE', key, group, '0', 'ENTRIESREAD', trimmed)
  if ARGV[2] == '1' and trimmed > 0 then
    redis.call('XGROUP', 'CREATECONSUMER', key, group, 'rmq-gap:' .. trimmed .. ':unread:0')
    return {1, trimmed}
  end
  return {1, 0}
end
local lag, read = g['lag'], g['entries-read']
if lag and read and lag > len then
  local gap = lag - len
  redis.call('XGROUP', 'SETID', key, group, g['last-delivered-id'], 'ENTRIESREAD', read + gap)
  redis.call('XGROUP', 'CREATECONSUMER', key, group, 'rmq-gap:' .. gap .. ':unread:' .. read)
  return {0, gap}
end
return {0, 0}
"#;

/// XAUTOCLAIM, and when the log had trimmed some of the pending entries it looked at (Redis
/// drops those from the pending list and names them), a gap marker for them in the same
/// atomic step (see [`CHECK_GAP`]).
///
/// KEYS[1] log:{q}. ARGV: group, consumer, min-idle ms, start, count. Reply: XAUTOCLAIM's.
const CLAIM: &str = r#"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local deleted = r[3]
if deleted and #deleted > 0 then
  redis.call('XGROUP', 'CREATECONSUMER', KEYS[1], ARGV[1], 'rmq-gap:' .. #deleted .. ':unsaved:' .. deleted[1])
end
return r
"#;

/// The name prefix of gap markers: consumers of the archive's group that stand for log
/// entries lost before they were saved, `rmq-gap:<entries>:<unread|unsaved>:<unique>`.
pub const GAP_PREFIX: &str = "rmq-gap:";

/// A gap marker found in Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub name: String,
    pub entries: u64,
    /// Trimmed before any archiver read them (`unread`), or read and not saved (`unsaved`).
    pub unsaved: bool,
}

impl Marker {
    pub fn parse(name: &str) -> Option<Marker> {
        let rest = name.strip_prefix(GAP_PREFIX)?;
        let mut parts = rest.splitn(3, ':');
        let entries = parts.next()?.parse().ok()?;
        let unsaved = match parts.next()? {
            "unread" => false,
            "unsaved" => true,
            _ => return None,
        };
        Some(Marker { name: name.to_string(), entries, unsaved })
    }

    /// The warning that goes with it.
    pub fn what(&self) -> String {
        if self.unsaved {
            format!(
                "{} log entries read by an archiver that stopped were trimmed (log-maxlen) before they were saved: lost to the archive",
                self.entries
            )
        } else {
            format!("{} log entries were trimmed (log-maxlen) before an archiver read them: lost to the archive", self.entries)
        }
    }
}

/// The fields of an entry, or `None` when the log no longer holds it (a pending entry that
/// was trimmed).
pub type Fields = Option<Vec<(Vec<u8>, Vec<u8>)>>;

/// What one read gave.
#[derive(Debug, Default)]
pub struct Read {
    pub entries: Vec<(StreamId, Fields)>,
    /// Entries the log trimmed before the group read them.
    pub gap: u64,
    /// The group was created by this read.
    pub created: bool,
    /// The queue has no log stream (its log is off, or nothing was logged yet).
    pub no_log: bool,
}

/// The consumer group's view of one queue's log (for `status`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GroupInfo {
    /// Entries in the log.
    pub length: u64,
    /// Entries not yet handed to any archiver (None when Redis cannot tell).
    pub lag: Option<u64>,
    /// Entries handed out and not yet acknowledged (saved).
    pub pending: u64,
}

/// The log reader of one archiver.
#[derive(Clone)]
pub struct Source {
    redis: Arc<dyn Backend>,
    pub group: String,
    pub consumer: String,
}

/// True for a valid rmq queue name (what a `log:{…}` key found by SCAN must hold).
pub fn valid_queue(q: &str) -> bool {
    !q.is_empty() && q.len() <= 200 && q.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.:-#/".contains(&c))
}

impl Source {
    pub fn new(redis: Arc<dyn Backend>, group: &str, consumer: &str) -> Source {
        Source { redis, group: group.to_string(), consumer: consumer.to_string() }
    }

    pub fn redis(&self) -> &Arc<dyn Backend> {
        &self.redis
    }

    /// The queues to follow: with patterns, every queue rmq lists (RMQ.QUEUES: every queue
    /// with any key; in a cluster, on every master) that matches, and every plain name given;
    /// without, every listed queue whose log is on.
    pub async fn discover(&self, pats: &Patterns) -> Result<Vec<String>> {
        let mut out: BTreeSet<String> = self.redis.queues().await?.into_iter().filter(|q| valid_queue(q) && pats.matches(q)).collect();
        if pats.is_all_logged() {
            let mut logged = BTreeSet::new();
            for q in out {
                if self.log_on(&q).await? {
                    logged.insert(q);
                }
            }
            return Ok(logged.into_iter().collect());
        }
        out.extend(pats.literals().filter(|q| valid_queue(q)).map(|s| s.to_string()));
        Ok(out.into_iter().collect())
    }

    /// Whether the queue's `log` setting is on.
    async fn log_on(&self, queue: &str) -> Result<bool> {
        let v = self.redis.call("config", Some(queue), vec![b"GET".to_vec(), b"log".to_vec()]).await?;
        Ok(match v {
            Value::Array(mut a) if a.len() == 2 => as_string(a.pop().unwrap_or(Value::Nil))? == "1",
            _ => false,
        })
    }

    /// Turns the queue's log on unless it is on; true when it was turned on now.
    pub async fn ensure_log(&self, queue: &str) -> Result<bool> {
        if self.log_on(queue).await? {
            return Ok(false);
        }
        self.redis.call("config", Some(queue), vec![b"SET".to_vec(), b"log".to_vec(), b"1".to_vec()]).await?;
        Ok(true)
    }

    /// New entries for the group, with the gap check (see [`CHECK_GAP`]).
    pub async fn read_new(&self, queue: &str, count: usize, archived_before: bool) -> Result<Read> {
        let key = log_key(queue);
        let mut check = redis::cmd("EVAL");
        check.arg(CHECK_GAP).arg(1).arg(&key).arg(&self.group).arg(if archived_before { "1" } else { "0" });
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(&self.group).arg(&self.consumer).arg("COUNT").arg(count.max(1)).arg("STREAMS").arg(&key).arg(">");
        let mut replies = self.redis.transaction(&key, vec![check, read]).await?.into_iter();
        let (Some(check), Some(read)) = (replies.next(), replies.next()) else {
            return Err(Error::Failed("the log read gave an unexpected reply".into()));
        };
        let Value::Array(parts) = check else {
            return Err(Error::Failed(format!("the log check gave {check:?}")));
        };
        let mut parts = parts.into_iter();
        let created = as_i64(parts.next().unwrap_or(Value::Nil))?;
        let gap = as_i64(parts.next().unwrap_or(Value::Nil))?;
        if created == -1 {
            return Ok(Read { no_log: true, ..Default::default() });
        }
        let entries = match read {
            Value::ServerError(e) => return Err(Error::Failed(format!("reading {key}: {e:?}"))),
            v => stream_entries(v),
        };
        Ok(Read { entries: parse_entries(entries)?, gap: gap.max(0) as u64, created: created == 1, no_log: false })
    }

    /// Entries this consumer read before and did not acknowledge (after a restart), after
    /// `after`. A trimmed one comes back without fields.
    pub async fn read_pending(&self, queue: &str, after: StreamId, count: usize) -> Result<Read> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(log_key(queue))
            .arg(after.to_string());
        let v = match self.redis.key_command(&log_key(queue), cmd).await {
            Ok(v) => v,
            // No log or no group yet: nothing is pending.
            Err(e) if no_group(&e) => return Ok(Read::default()),
            Err(e) => return Err(e.into()),
        };
        Ok(Read { entries: parse_entries(stream_entries(v))?, ..Default::default() })
    }

    /// Takes over entries another archiver (or this one, before a restart under another name)
    /// read and left unacknowledged for `min_idle_ms`. Returns the next cursor, the entries,
    /// and how many pending entries the log had trimmed meanwhile (lost).
    pub async fn claim(&self, queue: &str, start: &str, min_idle_ms: u64, count: usize) -> Result<(String, Vec<(StreamId, Fields)>, u64)> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM).arg(1).arg(log_key(queue)).arg(&self.group).arg(&self.consumer).arg(min_idle_ms).arg(start).arg(count.max(1));
        let v = match self.redis.key_command(&log_key(queue), cmd).await {
            Ok(v) => v,
            Err(e) if no_group(&e) => return Ok(("0-0".into(), Vec::new(), 0)),
            Err(e) => return Err(e.into()),
        };
        let Value::Array(mut parts) = v else {
            return Ok(("0-0".into(), Vec::new(), 0));
        };
        let deleted = if parts.len() >= 3 {
            match parts.pop() {
                Some(Value::Array(d)) => d.len() as u64,
                _ => 0,
            }
        } else {
            0
        };
        let entries = parts.pop().unwrap_or(Value::Nil);
        let next = as_string(parts.pop().unwrap_or(Value::Nil))?;
        // A claimed entry that the log no longer holds is listed in `deleted` and comes back
        // as nil here; keep only real entries.
        let entries = parse_entries(entries)?.into_iter().filter(|(_, f)| f.is_some()).collect();
        Ok((next, entries, deleted))
    }

    /// The gap markers waiting on a queue's log (see [`CHECK_GAP`]).
    pub async fn markers(&self, queue: &str) -> Result<Vec<Marker>> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("CONSUMERS").arg(log_key(queue)).arg(&self.group);
        let v = match self.redis.key_command(&log_key(queue), cmd).await {
            Ok(v) => v,
            Err(e) if no_group(&e) || (!e.unavailable && e.text.contains("no such key")) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let Value::Array(consumers) = v else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for c in consumers {
            for (k, v) in pairs(c)? {
                if k == "name" {
                    if let Some(m) = Marker::parse(&as_string(v)?) {
                        out.push(m);
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Removes a gap marker once the gap is saved in the database.
    pub async fn drop_marker(&self, queue: &str, name: &str) -> Result<()> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("DELCONSUMER").arg(log_key(queue)).arg(&self.group).arg(name);
        match self.redis.key_command(&log_key(queue), cmd).await {
            Ok(_) => Ok(()),
            Err(e) if no_group(&e) || (!e.unavailable && e.text.contains("no such key")) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Acknowledges saved entries.
    pub async fn ack(&self, queue: &str, ids: &[StreamId]) -> Result<()> {
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(log_key(queue)).arg(&self.group);
            for id in chunk {
                cmd.arg(id.to_string());
            }
            match self.redis.key_command(&log_key(queue), cmd).await {
                Ok(_) => {}
                // The log (and the group with it) is gone: nothing left to acknowledge.
                Err(e) if no_group(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The group's view of a queue's log; `None` when there is no log or no group.
    pub async fn group_info(&self, queue: &str) -> Result<Option<GroupInfo>> {
        let key = log_key(queue);
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(&key);
        let groups = match self.redis.key_command(&log_key(queue), cmd).await {
            Ok(v) => v,
            Err(e) if !e.unavailable && e.text.contains("no such key") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(&key);
        let length = as_i64(self.redis.key_command(&log_key(queue), cmd).await?)?.max(0) as u64;
        let Value::Array(groups) = groups else {
            return Ok(None);
        };
        for g in groups {
            let fields = pairs(g)?;
            let name = fields.iter().find(|(k, _)| k == "name").map(|(_, v)| as_string(v.clone())).transpose()?;
            if name.as_deref() != Some(self.group.as_str()) {
                continue;
            }
            let mut info = GroupInfo { length, ..Default::default() };
            for (k, v) in fields {
                match k.as_str() {
                    "lag" if !matches!(v, Value::Nil) => info.lag = Some(as_i64(v)?.max(0) as u64),
                    "pending" => info.pending = as_i64(v)?.max(0) as u64,
                    _ => {}
                }
            }
            return Ok(Some(info));
        }
        Ok(None)
    }
}

/// The entries of the one stream in an XREADGROUP reply (`[[key, entries]]`; RESP3: a map).
fn stream_entries(v: Value) -> Value {
    match v {
        Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
            Value::Array(mut kv) if kv.len() == 2 => kv.pop().unwrap_or(Value::Nil),
            _ => Value::Nil,
        },
        Value::Map(mut m) if !m.is_empty() => m.swap_remove(0).1,
        _ => Value::Nil,
    }
}

/// A refusal because the log or its group does not exist.
fn no_group(e: &RedisError) -> bool {
    !e.unavailable && e.text.contains("NOGROUP")
}

/// `[[id, [field, value, …] | nil], …]`.
fn parse_entries(v: Value) -> Result<Vec<(StreamId, Fields)>> {
    let Value::Array(items) = v else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            continue;
        };
        if pair.len() != 2 {
            continue;
        }
        let fields = pair.pop().unwrap_or(Value::Nil);
        let id: StreamId = as_string(pair.pop().unwrap_or(Value::Nil))?.parse().map_err(Error::Failed)?;
        let fields = match fields {
            Value::Array(flat) => {
                let mut f = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    f.push((as_bytes(k)?, as_bytes(v)?));
                }
                Some(f)
            }
            Value::Map(m) => Some(m.into_iter().map(|(k, v)| Ok((as_bytes(k)?, as_bytes(v)?))).collect::<Result<Vec<_>, RedisError>>()?),
            _ => None,
        };
        out.push((id, fields));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_markers_name_their_size_and_kind() {
        let m = Marker::parse("rmq-gap:40:unread:120").unwrap();
        assert_eq!((m.entries, m.unsaved), (40, false));
        assert!(m.what().starts_with("40 log entries were trimmed"));
        assert!(Marker::parse("rmq-gap:5:unsaved:1700000000000-3").unwrap().unsaved);
        assert_eq!(Marker::parse("rmq-gap:x:unread:1"), None);
        assert_eq!(Marker::parse("bench"), None);
    }

    #[test]
    fn only_valid_queue_names_are_followed() {
        assert!(valid_queue("orders.eu-1:v2/#a"));
        assert!(!valid_queue("a b"));
        assert!(!valid_queue(""));
        assert!(!valid_queue(&"x".repeat(201)));
    }
}
