//! The tables, column by column: how a [`Row`] and a [`LogEvent`] are written to SQL and read
//! back. The SQL of the batch transaction is in `write.rs`, of searches in `search.rs`.

use std::collections::BTreeMap;

use base64::Engine;

use crate::db::{Backend, Cols, PgArray, Sql};
use crate::error::{Error, Result};
use crate::event::{LogEvent, Payload, StreamId};
use crate::fold::{Row, Status};
use crate::names::virtual_queue_name;
use crate::pgcopy::CopyRows;

pub const MESSAGES: &str = "redismq_message";
pub const EVENTS: &str = "redismq_message_event";
pub const REPLACED: &str = "redismq_message_replaced";
pub const QUEUES: &str = "redismq_archive_queue";
pub const GAPS: &str = "redismq_archive_gap";

/// Every column of `redismq_message`, in the order [`row_values`] writes them.
pub const ROW_COLS: [&str; 21] = [
    "queue",
    "offset",
    "id",
    "tag",
    "key",
    "body",
    "virtual_queue_name",
    "header",
    "status",
    "create_time",
    "update_time",
    "body_encoding",
    "attempts",
    "deliveries",
    "error",
    "consumer",
    "due_time",
    "deadline_time",
    "last_event",
    "log_ms",
    "log_seq",
];

/// The columns that events change; the message itself (body, tag, key, header) only comes
/// with a `push`. An update that leaves the message alone writes only these.
pub const STATE_COLS: [&str; 13] = [
    "id",
    "status",
    "create_time",
    "update_time",
    "attempts",
    "deliveries",
    "error",
    "consumer",
    "due_time",
    "deadline_time",
    "last_event",
    "log_ms",
    "log_seq",
];

/// Every column of `redismq_message_event`, in the order [`event_values`] writes them.
pub const EVENT_COLS: [&str; 12] = [
    "queue",
    "offset",
    "log_ms",
    "log_seq",
    "event",
    "message_id",
    "event_time",
    "consumer",
    "attempt",
    "due_time",
    "deadline_time",
    "error",
];

/// What a column holds, as the PostgreSQL array writes send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    /// Unix ms, made a timestamp by the statement.
    Ms,
    /// JSON, sent as text.
    Json,
}

/// The kind of each of [`ROW_COLS`].
pub const ROW_KINDS: [Kind; 21] = [
    Kind::Text, // queue
    Kind::Int,  // offset
    Kind::Text, // id
    Kind::Text, // tag
    Kind::Text, // key
    Kind::Text, // body
    Kind::Text, // virtual_queue_name
    Kind::Json, // header
    Kind::Text, // status
    Kind::Ms,   // create_time
    Kind::Ms,   // update_time
    Kind::Text, // body_encoding
    Kind::Int,  // attempts
    Kind::Int,  // deliveries
    Kind::Text, // error
    Kind::Text, // consumer
    Kind::Ms,   // due_time
    Kind::Ms,   // deadline_time
    Kind::Text, // last_event
    Kind::Int,  // log_ms
    Kind::Int,  // log_seq
];

/// The kind of each of [`EVENT_COLS`].
pub const EVENT_KINDS: [Kind; 12] = [
    Kind::Text, // queue
    Kind::Int,  // offset
    Kind::Int,  // log_ms
    Kind::Int,  // log_seq
    Kind::Text, // event
    Kind::Text, // message_id
    Kind::Ms,   // event_time
    Kind::Text, // consumer
    Kind::Int,  // attempt
    Kind::Ms,   // due_time
    Kind::Ms,   // deadline_time
    Kind::Text, // error
];

/// `(a, b, c)` with each name quoted.
pub fn col_list(b: Backend, cols: &[&str]) -> String {
    let v: Vec<String> = cols.iter().map(|c| b.col(c)).collect();
    format!("({})", v.join(", "))
}

/// The body as the `body` column holds it: the text when it is UTF-8 without NUL, else
/// base64; and which of the two (`body_encoding`).
pub fn encode_body(body: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(body) {
        Ok(s) if !s.contains('\0') => (s.to_string(), "text"),
        _ => (base64::engine::general_purpose::STANDARD.encode(body), "base64"),
    }
}

/// The bytes of a body read from the table.
pub fn decode_body(text: &str, encoding: &str) -> Result<Vec<u8>> {
    match encoding {
        "base64" => {
            base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| Error::Failed(format!("a base64 body does not decode: {e}")))
        }
        _ => Ok(text.as_bytes().to_vec()),
    }
}

/// The headers as the `header` column holds them: a JSON object of strings.
pub fn headers_json(h: &[(String, String)]) -> String {
    let m: BTreeMap<&str, &str> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    serde_json::to_string(&m).expect("strings serialize")
}

pub fn headers_from_json(s: &str) -> Vec<(String, String)> {
    let m: BTreeMap<String, serde_json::Value> = serde_json::from_str(s).unwrap_or_default();
    m.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// Appends `(…)` with every column of `r`, in [`ROW_COLS`] order.
pub fn row_values(sql: &mut Sql, r: &Row) {
    let (body, enc, tag, key, header) = match &r.payload {
        Some(p) => {
            let (b, e) = encode_body(&p.body);
            (Some(b), Some(e.to_string()), p.tag.clone(), p.key.clone(), headers_json(&p.headers))
        }
        None => (None, None, String::new(), String::new(), "{}".to_string()),
    };
    sql.push("(");
    sql.arg(r.queue.clone()).push(", ");
    sql.arg(r.offset).push(", ");
    sql.arg(r.id.clone()).push(", ");
    sql.arg(tag).push(", ");
    sql.arg(key).push(", ");
    sql.arg(body).push(", ");
    sql.arg(virtual_queue_name(&r.queue)).push(", ");
    sql.json(header).push(", ");
    state_values(sql, r, enc);
    sql.push(")");
}

/// The columns from `status` on, shared by full rows and state-only writes.
fn state_values(sql: &mut Sql, r: &Row, enc: Option<String>) {
    sql.arg(r.status.as_str().to_string()).push(", ");
    sql.ts(Some(r.create_ms)).push(", ");
    sql.ts(Some(r.update_ms)).push(", ");
    sql.arg(enc).push(", ");
    sql.arg(r.attempts).push(", ");
    sql.arg(r.deliveries).push(", ");
    sql.arg(r.error.clone()).push(", ");
    sql.arg(r.consumer.clone()).push(", ");
    sql.ts(r.due_ms).push(", ");
    sql.ts(r.deadline_ms).push(", ");
    sql.arg(r.last_event.clone()).push(", ");
    sql.arg(r.pos.ms).push(", ");
    sql.arg(r.pos.seq);
}

/// Appends `(…)` for a row whose message columns must stay as stored: the same columns as
/// [`row_values`], with placeholders for the message columns that the upsert does not set.
pub fn state_row_values(sql: &mut Sql, r: &Row) {
    sql.push("(");
    sql.arg(r.queue.clone()).push(", ");
    sql.arg(r.offset).push(", ");
    sql.arg(r.id.clone()).push(", ");
    sql.arg(String::new()).push(", ");
    sql.arg(String::new()).push(", ");
    sql.arg(None::<String>).push(", ");
    sql.arg(virtual_queue_name(&r.queue)).push(", ");
    sql.json("{}".to_string()).push(", ");
    state_values(sql, r, None);
    sql.push(")");
}

/// Where the PostgreSQL writes put a row's or an event's values, one at a time in column
/// order: one array per column ([`PgArrays`], for `UNNEST`) or rows of binary COPY data.
pub trait Put {
    fn int(&mut self, v: Option<i64>);
    fn text(&mut self, v: Option<&str>);
    /// Unix ms, for a `TIMESTAMPTZ` column.
    fn ms(&mut self, v: Option<i64>);
    /// JSON text, for a `JSONB` column.
    fn json(&mut self, v: &str);
    /// Before the first value of each row.
    fn row(&mut self);
}

/// One [`PgArray`] per column: each value goes to the next column's array.
pub struct PgArrays {
    pub cols: Vec<PgArray>,
    next: usize,
}

impl PgArrays {
    pub fn new(n: usize) -> PgArrays {
        PgArrays { cols: (0..n).map(|_| PgArray::default()).collect(), next: 0 }
    }

    fn col(&mut self) -> &mut PgArray {
        self.next += 1;
        &mut self.cols[self.next - 1]
    }
}

impl Put for PgArrays {
    fn int(&mut self, v: Option<i64>) {
        self.col().int(v);
    }
    fn text(&mut self, v: Option<&str>) {
        self.col().text(v);
    }
    fn ms(&mut self, v: Option<i64>) {
        self.col().ms(v);
    }
    fn json(&mut self, v: &str) {
        // Sent as text; the statement casts it.
        self.col().text(Some(v));
    }
    fn row(&mut self) {
        self.next = 0;
    }
}

impl Put for CopyRows {
    fn int(&mut self, v: Option<i64>) {
        CopyRows::int(self, v);
    }
    fn text(&mut self, v: Option<&str>) {
        CopyRows::text(self, v);
    }
    fn ms(&mut self, v: Option<i64>) {
        CopyRows::ms(self, v);
    }
    fn json(&mut self, v: &str) {
        CopyRows::json(self, v);
    }
    fn row(&mut self) {
        CopyRows::row(self);
    }
}

/// Puts a row (every column of [`ROW_COLS`]), with the same values as [`row_values`], or as
/// [`state_row_values`] when `state_only`.
pub fn put_row(out: &mut impl Put, r: &Row, state_only: bool) {
    let (body, enc, tag, key, header) = match (&r.payload, state_only) {
        (Some(p), false) => {
            let (b, e) = encode_body(&p.body);
            (Some(b), Some(e), p.tag.as_str(), p.key.as_str(), headers_json(&p.headers))
        }
        _ => (None, None, "", "", "{}".to_string()),
    };
    out.row();
    out.text(Some(&r.queue));
    out.int(Some(r.offset));
    out.text(Some(&r.id));
    out.text(Some(tag));
    out.text(Some(key));
    out.text(body.as_deref());
    out.text(Some(&virtual_queue_name(&r.queue)));
    out.json(&header);
    out.text(Some(r.status.as_str()));
    out.ms(Some(r.create_ms));
    out.ms(Some(r.update_ms));
    out.text(enc);
    out.int(Some(r.attempts));
    out.int(Some(r.deliveries));
    out.text(r.error.as_deref());
    out.text(r.consumer.as_deref());
    out.ms(r.due_ms);
    out.ms(r.deadline_ms);
    out.text(Some(&r.last_event));
    out.int(Some(r.pos.ms));
    out.int(Some(r.pos.seq));
}

/// Puts an event (every column of [`EVENT_COLS`]), with the same values as [`event_values`].
pub fn put_event(out: &mut impl Put, queue: &str, e: &LogEvent) {
    out.row();
    out.text(Some(queue));
    out.int(Some(e.offset));
    out.int(Some(e.pos.ms));
    out.int(Some(e.pos.seq));
    out.text(Some(&e.event));
    out.text(Some(&e.id));
    out.ms(Some(e.time_ms));
    out.text(e.consumer.as_deref());
    out.int(e.attempt);
    out.ms(e.due_ms);
    out.ms(e.deadline_ms);
    out.text(e.error.as_deref());
}

/// Appends `(…)` with every column of the event, in [`EVENT_COLS`] order.
pub fn event_values(sql: &mut Sql, queue: &str, e: &LogEvent) {
    sql.push("(");
    sql.arg(queue.to_string()).push(", ");
    sql.arg(e.offset).push(", ");
    sql.arg(e.pos.ms).push(", ");
    sql.arg(e.pos.seq).push(", ");
    sql.arg(e.event.clone()).push(", ");
    sql.arg(e.id.clone()).push(", ");
    sql.ts(Some(e.time_ms)).push(", ");
    sql.arg(e.consumer.clone()).push(", ");
    sql.arg(e.attempt).push(", ");
    sql.ts(e.due_ms).push(", ");
    sql.ts(e.deadline_ms).push(", ");
    sql.arg(e.error.clone());
    sql.push(")");
}

/// The SELECT list that [`state_from`] reads: a row's state without its message.
pub fn state_select(b: Backend) -> String {
    format!(
        "{}, id, status, {}, {}, attempts, deliveries, error, consumer, {}, {}, last_event, log_ms, log_seq, body_encoding",
        b.col("offset"),
        b.ms_of("create_time"),
        b.ms_of("update_time"),
        b.ms_of("due_time"),
        b.ms_of("deadline_time"),
    )
}

/// A row's state (payload `None`), and whether the stored row has its message.
pub fn state_from(queue: &str, rec: &impl Cols) -> Result<(Row, bool)> {
    let status = rec.text(2)?;
    let row = Row {
        queue: queue.to_string(),
        offset: rec.int(0)?,
        id: rec.text(1)?,
        payload: None,
        status: Status::parse(&status).unwrap_or(Status::Ready),
        create_ms: rec.int(3)?,
        update_ms: rec.int(4)?,
        attempts: rec.int(5)?,
        deliveries: rec.int(6)?,
        error: rec.opt_text(7)?,
        consumer: rec.opt_text(8)?,
        due_ms: rec.opt_int(9)?,
        deadline_ms: rec.opt_int(10)?,
        last_event: rec.text(11)?,
        pos: StreamId::new(rec.int(12)?, rec.int(13)?),
    };
    Ok((row, rec.opt_text(14)?.is_some()))
}

/// The SELECT list that [`event_from`] reads.
pub fn event_select(b: Backend) -> String {
    format!(
        "{}, log_ms, log_seq, event, message_id, {}, consumer, attempt, {}, {}, error",
        b.col("offset"),
        b.ms_of("event_time"),
        b.ms_of("due_time"),
        b.ms_of("deadline_time"),
    )
}

pub fn event_from(rec: &impl Cols) -> Result<LogEvent> {
    Ok(LogEvent {
        offset: rec.int(0)?,
        pos: StreamId::new(rec.int(1)?, rec.int(2)?),
        event: rec.text(3)?,
        id: rec.text(4)?,
        time_ms: rec.int(5)?,
        consumer: rec.opt_text(6)?,
        attempt: rec.opt_int(7)?,
        due_ms: rec.opt_int(8)?,
        deadline_ms: rec.opt_int(9)?,
        error: rec.opt_text(10)?,
        payload: None,
    })
}

/// A message as search and replay read it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Message {
    pub queue: String,
    pub offset: i64,
    pub id: String,
    pub status: String,
    pub tag: String,
    pub key: String,
    #[serde(serialize_with = "ser_headers")]
    pub headers: Vec<(String, String)>,
    /// The body as stored: text, or base64 (see `body_encoding`); `None` when the archive
    /// never saw the message's push entry.
    pub body: Option<String>,
    pub body_encoding: Option<String>,
    pub virtual_queue_name: String,
    pub create_time: String,
    pub update_time: String,
    #[serde(skip)]
    pub create_ms: i64,
    pub attempts: i64,
    pub deliveries: i64,
    pub error: Option<String>,
    pub consumer: Option<String>,
    pub due_time: Option<String>,
    pub deadline_time: Option<String>,
    pub last_event: String,
}

fn ser_headers<S: serde::Serializer>(h: &[(String, String)], s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(h.len()))?;
    for (k, v) in h {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

impl Message {
    /// The body's bytes (`None`: not archived).
    pub fn body_bytes(&self) -> Result<Option<Vec<u8>>> {
        match (&self.body, &self.body_encoding) {
            (Some(b), Some(e)) => decode_body(b, e).map(Some),
            _ => Ok(None),
        }
    }
}

/// The SELECT list that [`message_from`] reads.
pub fn message_select(b: Backend) -> String {
    format!(
        "queue, {}, id, status, tag, {}, {}, body, body_encoding, virtual_queue_name, {}, {}, attempts, deliveries, error, consumer, {}, {}, last_event",
        b.col("offset"),
        b.col("key"),
        b.json_text("header"),
        b.ms_of("create_time"),
        b.ms_of("update_time"),
        b.ms_of("due_time"),
        b.ms_of("deadline_time"),
    )
}

pub fn message_from(rec: &impl Cols) -> Result<Message> {
    let header = rec.text(6)?;
    let create_ms = rec.int(10)?;
    let update_ms = rec.int(11)?;
    let due = rec.opt_int(16)?;
    let deadline = rec.opt_int(17)?;
    Ok(Message {
        queue: rec.text(0)?,
        offset: rec.int(1)?,
        id: rec.text(2)?,
        status: rec.text(3)?,
        tag: rec.text(4)?,
        key: rec.text(5)?,
        headers: headers_from_json(&header),
        body: rec.opt_text(7)?,
        body_encoding: rec.opt_text(8)?,
        virtual_queue_name: rec.text(9)?,
        create_time: crate::when::format_ms(create_ms),
        update_time: crate::when::format_ms(update_ms),
        create_ms,
        attempts: rec.int(12)?,
        deliveries: rec.int(13)?,
        error: rec.opt_text(14)?,
        consumer: rec.opt_text(15)?,
        due_time: due.map(crate::when::format_ms),
        deadline_time: deadline.map(crate::when::format_ms),
        last_event: rec.text(18)?,
    })
}

/// The payload a message row would hold (for tests and replay).
pub fn payload_of(m: &Message) -> Result<Option<Payload>> {
    Ok(m.body_bytes()?.map(|body| Payload { body, tag: m.tag.clone(), key: m.key.clone(), headers: m.headers.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies_stay_text_and_binary_ones_become_base64() {
        assert_eq!(encode_body("héllo".as_bytes()), ("héllo".to_string(), "text"));
        let (b, e) = encode_body(b"\xff\x00x");
        assert_eq!(e, "base64");
        assert_eq!(decode_body(&b, e).unwrap(), b"\xff\x00x");
        // PostgreSQL text cannot hold NUL: a UTF-8 body with NUL goes as base64.
        assert_eq!(encode_body(b"a\0b").1, "base64");
    }

    #[test]
    fn headers_round_trip_through_json() {
        let h = vec![("b".to_string(), "2".to_string()), ("a".to_string(), "\"1\"".to_string())];
        let j = headers_json(&h);
        assert_eq!(j, r#"{"a":"\"1\"","b":"2"}"#);
        let mut back = headers_from_json(&j);
        back.sort();
        let mut want = h.clone();
        want.sort();
        assert_eq!(back, want);
    }
}
