//! Messages: what a producer pushes, and what FETCH, PEEK and GET hand out.

use std::time::Duration;

use redis::Value;
use serde::Serialize;

use crate::client::{as_bytes, as_string, as_u64};
use crate::error::{Error, Result};
use crate::spool::SpoolRecord;

/// A message to push. Build it with [`Push::new`] and the setters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Push {
    pub queue: String,
    pub body: Vec<u8>,
    /// The producer's id; the producer makes one when it is `None`.
    pub id: Option<String>,
    pub tag: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    /// Due in this long (DELAY).
    pub delay: Option<Duration>,
    /// Due at this unix time in ms (AT).
    pub at: Option<u64>,
}

impl Push {
    pub fn new(queue: impl Into<String>, body: impl Into<Vec<u8>>) -> Push {
        Push { queue: queue.into(), body: body.into(), ..Default::default() }
    }
    pub fn id(mut self, id: impl Into<String>) -> Push {
        self.id = Some(id.into());
        self
    }
    pub fn tag(mut self, tag: impl Into<String>) -> Push {
        self.tag = tag.into();
        self
    }
    pub fn key(mut self, key: impl Into<String>) -> Push {
        self.key = key.into();
        self
    }
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Push {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Push {
        self.delay = Some(d);
        self
    }
    pub fn at(mut self, unix_ms: u64) -> Push {
        self.at = Some(unix_ms);
        self
    }

    /// Checks what the server would refuse, so that a message is refused at once even while
    /// Redis is down (and never sits in the spool to be refused later).
    pub fn validate(&self) -> Result<()> {
        validate_queue(&self.queue)?;
        if let Some(id) = &self.id {
            validate_id(id)?;
        }
        for (i, (name, _)) in self.headers.iter().enumerate() {
            if name.is_empty() {
                return Err(Error::Invalid("HEADER name must not be empty".into()));
            }
            if self.headers[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::Invalid(format!("HEADER '{name}' given twice")));
            }
        }
        if self.delay.is_some() && self.at.is_some() {
            return Err(Error::Invalid("DELAY and AT cannot be used together".into()));
        }
        Ok(())
    }

    /// The arguments after the queue name.
    pub(crate) fn args(&self) -> Vec<Vec<u8>> {
        let mut a = vec![self.body.clone()];
        if let Some(id) = &self.id {
            a.push(b"ID".to_vec());
            a.push(id.as_bytes().to_vec());
        }
        if !self.tag.is_empty() {
            a.push(b"TAG".to_vec());
            a.push(self.tag.as_bytes().to_vec());
        }
        if !self.key.is_empty() {
            a.push(b"KEY".to_vec());
            a.push(self.key.as_bytes().to_vec());
        }
        for (k, v) in &self.headers {
            a.push(b"HEADER".to_vec());
            a.push(k.as_bytes().to_vec());
            a.push(v.as_bytes().to_vec());
        }
        if let Some(d) = self.delay {
            a.push(b"DELAY".to_vec());
            a.push(d.as_millis().to_string().into_bytes());
        }
        if let Some(at) = self.at {
            a.push(b"AT".to_vec());
            a.push(at.to_string().into_bytes());
        }
        a
    }

    /// The spool's copy: a delay becomes an absolute due time, so a message re-sent later
    /// is due when it was meant to be.
    pub(crate) fn to_record(&self, now_ms: u64) -> SpoolRecord {
        SpoolRecord {
            queue: self.queue.clone(),
            id: self.id.clone().unwrap_or_default(),
            body: self.body.clone(),
            tag: self.tag.clone(),
            key: self.key.clone(),
            headers: self.headers.clone(),
            at: self.at.or(self.delay.map(|d| now_ms + d.as_millis() as u64)),
            spooled_at: now_ms,
        }
    }

    pub(crate) fn from_record(r: &SpoolRecord) -> Push {
        Push {
            queue: r.queue.clone(),
            body: r.body.clone(),
            id: if r.id.is_empty() { None } else { Some(r.id.clone()) },
            tag: r.tag.clone(),
            key: r.key.clone(),
            headers: r.headers.clone(),
            delay: None,
            at: r.at,
        }
    }
}

/// Queue names: 1–200 bytes of `A-Z a-z 0-9 _ . : - # /`.
pub fn validate_queue(q: &str) -> Result<()> {
    let ok = !q.is_empty()
        && q.len() <= 200
        && q.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'#' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid("invalid queue name".into()))
    }
}

/// Ids: 1–128 bytes of 0x21–0x7E.
pub fn validate_id(id: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(Error::Invalid("ID must be 1 to 128 printable ASCII characters without spaces".into()))
    }
}

/// A new producer id: a UUID v7 (48 bits of unix ms, then 74 random bits), so ids sort by
/// time and two producers never make the same one. 36 printable bytes.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A message as FETCH, PEEK or GET hand it out. Fields a reply does not carry are empty.
///
/// Serialized (JSON, …) with the body as text when it is UTF-8, else as base64 with
/// `"body_encoding": "base64"`, so no byte of a binary body is lost; the empty optional
/// fields (receipt, deadline, state, due, consumer, error) are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub queue: String,
    pub id: String,
    pub body: Vec<u8>,
    /// For ACK, NACK, TOUCH (FETCH only).
    pub receipt: String,
    pub attempt: u64,
    /// The producer's label of what kind of message this is; the worker picks the handler
    /// by it.
    pub tag: String,
    /// The producer's own key (a customer or order id …): stored and handed back, never
    /// interpreted by rmq.
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub created: u64,
    pub offset: u64,
    /// Lock deadline, unix ms (FETCH; PEEK of in-flight messages).
    pub deadline: u64,
    /// PEEK/GET: ready, delayed, inflight, failed, errors.
    pub state: String,
    pub due: u64,
    pub consumer: String,
    pub error: String,
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use base64::Engine;
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("queue", &self.queue)?;
        m.serialize_entry("id", &self.id)?;
        match std::str::from_utf8(&self.body) {
            Ok(text) => m.serialize_entry("body", text)?,
            Err(_) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&self.body);
                m.serialize_entry("body", &b64)?;
                m.serialize_entry("body_encoding", "base64")?;
            }
        }
        if !self.receipt.is_empty() {
            m.serialize_entry("receipt", &self.receipt)?;
        }
        m.serialize_entry("attempt", &self.attempt)?;
        m.serialize_entry("tag", &self.tag)?;
        m.serialize_entry("key", &self.key)?;
        m.serialize_entry("headers", &self.headers)?;
        m.serialize_entry("created", &self.created)?;
        m.serialize_entry("offset", &self.offset)?;
        for (name, v) in [("deadline", self.deadline), ("due", self.due)] {
            if v != 0 {
                m.serialize_entry(name, &v)?;
            }
        }
        for (name, v) in [("state", &self.state), ("consumer", &self.consumer), ("error", &self.error)] {
            if !v.is_empty() {
                m.serialize_entry(name, v)?;
            }
        }
        m.end()
    }
}

impl Message {
    /// The body as text (lossy).
    pub fn body_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A message of FETCH … COMPACT: id body receipt attempt tag key headers created offset
    /// deadline, in that order.
    pub(crate) fn from_compact(queue: &str, values: Vec<Value>) -> Result<Message> {
        const FIELDS: [&str; 10] = ["id", "body", "receipt", "attempt", "tag", "key", "headers", "created", "offset", "deadline"];
        if values.len() != FIELDS.len() {
            return Err(Error::Protocol(format!("a COMPACT message has 10 values, got {}", values.len())));
        }
        Message::from_pairs(queue, FIELDS.iter().map(|f| f.to_string()).zip(values).collect())
    }

    pub(crate) fn from_pairs(queue: &str, fields: Vec<(String, Value)>) -> Result<Message> {
        let mut m = Message { queue: queue.to_string(), ..Default::default() };
        for (k, v) in fields {
            match k.as_str() {
                "id" => m.id = as_string(v)?,
                "body" => m.body = as_bytes(v)?,
                "receipt" => m.receipt = as_string(v)?,
                "attempt" => m.attempt = as_u64(v)?,
                "tag" => m.tag = as_string(v)?,
                "key" => m.key = as_string(v)?,
                "headers" => m.headers = crate::client::headers(v)?,
                "created" => m.created = as_u64(v)?,
                "offset" => m.offset = as_u64(v)?,
                "deadline" => m.deadline = as_u64(v)?,
                "state" => m.state = as_string(v)?,
                "due" => m.due = as_u64(v)?,
                "consumer" => m.consumer = as_string(v)?,
                "error" => m.error = as_string(v)?,
                _ => {}
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::pairs;

    #[test]
    fn ids_are_valid_unique_and_time_ordered() {
        let a: Vec<String> = (0..1000).map(|_| new_id()).collect();
        for id in &a {
            validate_id(id).unwrap();
        }
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 1000);
        assert!(a.first().unwrap()[..8] <= a.last().unwrap()[..8]);
    }

    #[test]
    fn validation_matches_the_server_rules() {
        assert!(Push::new("a/b:c#d-e_f.g", "x").validate().is_ok());
        assert!(Push::new("", "x").validate().is_err());
        assert!(Push::new("a b", "x").validate().is_err());
        assert!(Push::new("{a}", "x").validate().is_err());
        assert!(Push::new("q".repeat(201), "x").validate().is_err());
        assert!(Push::new("q", "x").id("has space").validate().is_err());
        assert!(Push::new("q", "x").id("i".repeat(129)).validate().is_err());
        assert!(Push::new("q", "x").id("i".repeat(128)).validate().is_ok());
        assert!(Push::new("q", "x").header("", "v").validate().is_err());
        assert!(Push::new("q", "x").header("a", "1").header("a", "2").validate().is_err());
        assert!(Push::new("q", "x").delay(Duration::from_secs(1)).at(5).validate().is_err());
    }

    #[test]
    fn record_keeps_the_due_time() {
        let p = Push::new("q", "b").id("x").tag("t").header("h", "v").delay(Duration::from_millis(500));
        let r = p.to_record(1000);
        assert_eq!(r.at, Some(1500));
        let back = Push::from_record(&r);
        assert_eq!(back.at, Some(1500));
        assert_eq!(back.delay, None);
        assert_eq!(back.id.as_deref(), Some("x"));
        assert_eq!(back.headers, p.headers);
    }

    #[test]
    fn messages_from_resp2_and_resp3_maps() {
        let flat = Value::Array(vec![
            Value::BulkString(b"id".to_vec()),
            Value::BulkString(b"m1".to_vec()),
            Value::BulkString(b"body".to_vec()),
            Value::BulkString(vec![0, 255]),
            Value::BulkString(b"attempt".to_vec()),
            Value::Int(2),
            Value::BulkString(b"headers".to_vec()),
            Value::Array(vec![Value::BulkString(b"h".to_vec()), Value::BulkString(b"v".to_vec())]),
        ]);
        let m = Message::from_pairs("q", pairs(flat).unwrap()).unwrap();
        assert_eq!((m.id.as_str(), m.attempt, m.body.clone()), ("m1", 2, vec![0, 255]));
        assert_eq!(m.header("h"), Some("v"));
        let map = Value::Map(vec![
            (Value::SimpleString("id".into()), Value::BulkString(b"m2".to_vec())),
            (Value::SimpleString("headers".into()), Value::Map(vec![])),
            (Value::SimpleString("deadline".into()), Value::Int(77)),
        ]);
        let m = Message::from_pairs("q", pairs(map).unwrap()).unwrap();
        assert_eq!((m.id.as_str(), m.deadline, m.headers.len()), ("m2", 77, 0));
    }
}
