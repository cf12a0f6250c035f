//! Entries of a queue's message log (`log:{q}`), read into typed events.
//!
//! Every entry has `offset` (the message's), `event`, `id` and `time` (unix ms). A `push`
//! entry carries the message itself (`body`, `tag`, `key`, `headers` as a MessagePack flat
//! array), and `due` when it was pushed delayed. Delivery entries add `consumer`, `attempt`,
//! `deadline` (`fetch`), `due` (`delay`), `attempt` and `error` (`retry`, `delay`, `fail`,
//! `error`, `reclaim`). Fields this version does not know are ignored, so a newer server's
//! log still archives.

use std::fmt;
use std::str::FromStr;

/// A stream entry id, `ms-seq`: the total order of a queue's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: i64,
    pub seq: i64,
}

impl StreamId {
    pub fn new(ms: i64, seq: i64) -> StreamId {
        StreamId { ms, seq }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = String;
    fn from_str(s: &str) -> Result<StreamId, String> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        let bad = || format!("not a stream id: {s:?}");
        let ms: u64 = ms.parse().map_err(|_| bad())?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        // Stream ids are u64 pairs; rmq's are times in ms and small sequence numbers. The SQL
        // columns are signed 64-bit integers.
        if ms > i64::MAX as u64 || seq > i64::MAX as u64 {
            return Err(bad());
        }
        Ok(StreamId::new(ms as i64, seq as i64))
    }
}

/// What a `push` entry carries: the message itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    pub body: Vec<u8>,
    pub tag: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
}

/// One log entry of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// The entry's stream id: which of two events is newer.
    pub pos: StreamId,
    pub offset: i64,
    /// `push`, `fetch`, `ack`, `retry`, `delay`, `reclaim`, `fail`, `error`, `recover`,
    /// `requeue`, `delete`, `purge`, or a name a newer server added.
    pub event: String,
    /// The message id.
    pub id: String,
    pub time_ms: i64,
    pub consumer: Option<String>,
    pub attempt: Option<i64>,
    pub deadline_ms: Option<i64>,
    pub due_ms: Option<i64>,
    pub error: Option<String>,
    /// Only on `push`.
    pub payload: Option<Payload>,
}

impl LogEvent {
    /// Bytes this event holds in memory (for the batch's memory bound).
    pub fn size(&self) -> usize {
        let p = self
            .payload
            .as_ref()
            .map_or(0, |p| p.body.len() + p.tag.len() + p.key.len() + p.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>());
        128 + self.id.len() + self.error.as_ref().map_or(0, |e| e.len()) + p
    }
}

/// Text for a SQL text column: invalid UTF-8 becomes U+FFFD and NUL becomes U+FFFD
/// (PostgreSQL's text cannot hold NUL).
pub fn sql_text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.into_owned()
    }
}

fn number(name: &str, v: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("field {name} is not a number: {:?}", sql_text(v)))
}

/// Reads a log entry. An entry without `offset`, `event` or `id` is refused with the reason.
pub fn parse(pos: StreamId, fields: &[(Vec<u8>, Vec<u8>)]) -> Result<LogEvent, String> {
    let mut offset = None;
    let mut event = None;
    let mut id = None;
    let mut time_ms = None;
    let mut e = LogEvent {
        pos,
        offset: 0,
        event: String::new(),
        id: String::new(),
        time_ms: 0,
        consumer: None,
        attempt: None,
        deadline_ms: None,
        due_ms: None,
        error: None,
        payload: None,
    };
    let mut body = None;
    let mut tag = None;
    let mut key = None;
    let mut headers = None;
    for (k, v) in fields {
        match k.as_slice() {
            b"offset" => offset = Some(number("offset", v)?),
            b"event" => event = Some(sql_text(v)),
            b"id" => id = Some(sql_text(v)),
            b"time" => time_ms = Some(number("time", v)?),
            b"consumer" if !v.is_empty() => e.consumer = Some(sql_text(v)),
            b"attempt" => e.attempt = Some(number("attempt", v)?),
            b"deadline" => e.deadline_ms = Some(number("deadline", v)?),
            b"due" => e.due_ms = Some(number("due", v)?),
            b"error" if !v.is_empty() => e.error = Some(sql_text(v)),
            b"body" => body = Some(v.clone()),
            b"tag" => tag = Some(sql_text(v)),
            b"key" => key = Some(sql_text(v)),
            b"headers" => headers = Some(decode_headers(v)?),
            _ => {}
        }
    }
    e.offset = offset.ok_or("no offset field")?;
    e.event = event.ok_or("no event field")?;
    if e.event.is_empty() || e.event.len() > 32 {
        return Err(format!("event name {:?} is not an rmq event", e.event));
    }
    e.id = id.ok_or("no id field")?;
    // Entries always have a time; if one did not, the stream id's time is when it was written.
    e.time_ms = time_ms.unwrap_or(pos.ms);
    if e.event == "push" {
        e.payload = Some(Payload {
            body: body.unwrap_or_default(),
            tag: tag.unwrap_or_default(),
            key: key.unwrap_or_default(),
            headers: headers.unwrap_or_default(),
        });
    }
    Ok(e)
}

/// The record's headers: a MessagePack array of strings, name, value, name, value …
pub fn decode_headers(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let bad = |what: &str| format!("headers are not a MessagePack array of strings ({what})");
    let mut rd = b;
    let n = rmp::decode::read_array_len(&mut rd).map_err(|_| bad("no array"))? as usize;
    if !n.is_multiple_of(2) {
        return Err(bad("odd length"));
    }
    let mut strings = Vec::with_capacity(n);
    for _ in 0..n {
        let marker = rmp::decode::read_marker(&mut rd).map_err(|_| bad("truncated"))?;
        use rmp::Marker;
        let len = match marker {
            Marker::FixStr(l) => l as usize,
            Marker::Str8 | Marker::Bin8 => take(&mut rd, 1)?[0] as usize,
            Marker::Str16 | Marker::Bin16 => {
                let s = take(&mut rd, 2)?;
                u16::from_be_bytes([s[0], s[1]]) as usize
            }
            Marker::Str32 | Marker::Bin32 => {
                let s = take(&mut rd, 4)?;
                u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize
            }
            _ => return Err(bad("not a string")),
        };
        strings.push(sql_text(take(&mut rd, len)?));
    }
    let mut out = Vec::with_capacity(n / 2);
    let mut it = strings.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn take<'a>(rd: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rd.len() < n {
        return Err("headers are truncated".into());
    }
    let (head, tail) = rd.split_at(n);
    *rd = tail;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec())).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_array_len(&mut out, (pairs.len() * 2) as u32).unwrap();
        for (k, v) in pairs {
            rmp::encode::write_str(&mut out, k).unwrap();
            rmp::encode::write_str(&mut out, v).unwrap();
        }
        out
    }

    #[test]
    fn a_push_entry_carries_the_whole_message() {
        let h = headers(&[("trace", "t-1"), ("lang", "fr")]);
        let e = parse(
            StreamId::new(10, 2),
            &f(&[
                ("offset", b"42"),
                ("event", b"push"),
                ("id", b"order-42"),
                ("time", b"1765000000000"),
                ("body", b"\x00\xffbin"),
                ("tag", b"created"),
                ("key", b"cust-7"),
                ("headers", &h),
                ("due", b"1765000005000"),
            ]),
        )
        .unwrap();
        assert_eq!(e.offset, 42);
        assert_eq!(e.id, "order-42");
        assert_eq!(e.due_ms, Some(1765000005000));
        let p = e.payload.unwrap();
        assert_eq!(p.body, b"\x00\xffbin");
        assert_eq!(p.tag, "created");
        assert_eq!(p.headers, vec![("trace".into(), "t-1".into()), ("lang".into(), "fr".into())]);
    }

    #[test]
    fn delivery_fields_are_read_and_unknown_fields_ignored() {
        let e = parse(
            StreamId::new(1, 0),
            &f(&[
                ("offset", b"7"),
                ("event", b"fetch"),
                ("id", b"m"),
                ("time", b"5"),
                ("consumer", b"w1"),
                ("attempt", b"2"),
                ("deadline", b"30005"),
                ("shiny-new-field", b"x"),
            ]),
        )
        .unwrap();
        assert_eq!(e.consumer.as_deref(), Some("w1"));
        assert_eq!(e.attempt, Some(2));
        assert_eq!(e.deadline_ms, Some(30005));
        assert!(e.payload.is_none());
    }

    #[test]
    fn an_entry_without_offset_is_refused() {
        let err = parse(StreamId::new(1, 0), &f(&[("event", b"ack"), ("id", b"m")]));
        assert!(err.unwrap_err().contains("offset"));
    }

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        let a: StreamId = "1765000000000-3".parse().unwrap();
        let b: StreamId = "1765000000001-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1765000000000-3");
        assert!("x-1".parse::<StreamId>().is_err());
    }

    #[test]
    fn text_columns_never_get_nul_or_invalid_utf8() {
        assert_eq!(sql_text(b"a\0b\xff"), "a\u{FFFD}b\u{FFFD}");
    }
}
