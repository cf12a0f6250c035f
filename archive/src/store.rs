//! The tables, column by column: how a [`Row`] and a [`LogEvent`] are written to SQL and read
//! back. The SQL of the batch transaction is in `write.rs`, of searches in `search.rs`.

use std::collections::BTreeMap;

use base64::Engine;
use sqlx::any::AnyRow;
use sqlx::Row as _;

use crate::db::{Backend, PgArray, Sql};
use crate::error::{Error, Result};
use crate::event::{LogEvent, Payload, StreamId};
use crate::fold::{Row, Status};
use crate::names::virtual_queue_name;

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

/// Adds a row to `cols` (one array per column of [`ROW_COLS`]), with the same values as
/// [`row_values`], or as [`state_row_values`] when `state_only`.
pub fn row_arrays(cols: &mut [PgArray], r: &Row, state_only: bool) {
    let (body, enc, tag, key, header) = match (&r.payload, state_only) {
        (Some(p), false) => {
            let (b, e) = encode_body(&p.body);
            (Some(b), Some(e), p.tag.as_str(), p.key.as_str(), headers_json(&p.headers))
        }
        _ => (None, None, "", "", "{}".to_string()),
    };
    cols[0].text(Some(&r.queue));
    cols[1].int(Some(r.offset));
    cols[2].text(Some(&r.id));
    cols[3].text(Some(tag));
    cols[4].text(Some(key));
    cols[5].text(body.as_deref());
    cols[6].text(Some(&virtual_queue_name(&r.queue)));
    cols[7].text(Some(&header));
    cols[8].text(Some(r.status.as_str()));
    cols[9].ms(Some(r.create_ms));
    cols[10].ms(Some(r.update_ms));
    cols[11].text(enc);
    cols[12].int(Some(r.attempts));
    cols[13].int(Some(r.deliveries));
    cols[14].text(r.error.as_deref());
    cols[15].text(r.consumer.as_deref());
    cols[16].ms(r.due_ms);
    cols[17].ms(r.deadline_ms);
    cols[18].text(Some(&r.last_event));
    cols[19].int(Some(r.pos.ms));
    cols[20].int(Some(r.pos.seq));
}

/// Adds an event to `cols` (one array per column of [`EVENT_COLS`]), with the same values as
/// [`event_values`].
pub fn event_arrays(cols: &mut [PgArray], queue: &str, e: &LogEvent) {
    cols[0].text(Some(queue));
    cols[1].int(Some(e.offset));
    cols[2].int(Some(e.pos.ms));
    cols[3].int(Some(e.pos.seq));
    cols[4].text(Some(&e.event));
    cols[5].text(Some(&e.id));
    cols[6].ms(Some(e.time_ms));
    cols[7].text(e.consumer.as_deref());
    cols[8].int(e.attempt);
    cols[9].ms(e.due_ms);
    cols[10].ms(e.deadline_ms);
    cols[11].text(e.error.as_deref());
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
pub fn state_from(queue: &str, rec: &AnyRow) -> Result<(Row, bool)> {
    let status: String = rec.try_get(2)?;
    let row = Row {
        queue: queue.to_string(),
        offset: rec.try_get(0)?,
        id: rec.try_get(1)?,
        payload: None,
        status: Status::parse(&status).unwrap_or(Status::Ready),
        create_ms: rec.try_get(3)?,
        update_ms: rec.try_get(4)?,
        attempts: rec.try_get(5)?,
        deliveries: rec.try_get(6)?,
        error: rec.try_get(7)?,
        consumer: rec.try_get(8)?,
        due_ms: rec.try_get(9)?,
        deadline_ms: rec.try_get(10)?,
        last_event: rec.try_get(11)?,
        pos: StreamId::new(rec.try_get(12)?, rec.try_get(13)?),
    };
    let enc: Option<String> = rec.try_get(14)?;
    Ok((row, enc.is_some()))
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

pub fn event_from(rec: &AnyRow) -> Result<LogEvent> {
    Ok(LogEvent {
        offset: rec.try_get(0)?,
        pos: StreamId::new(rec.try_get(1)?, rec.try_get(2)?),
        event: rec.try_get(3)?,
        id: rec.try_get(4)?,
        time_ms: rec.try_get(5)?,
        consumer: rec.try_get(6)?,
        attempt: rec.try_get(7)?,
        due_ms: rec.try_get(8)?,
        deadline_ms: rec.try_get(9)?,
        error: rec.try_get(10)?,
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

pub fn message_from(rec: &AnyRow) -> Result<Message> {
    let header: String = rec.try_get(6)?;
    let create_ms: i64 = rec.try_get(10)?;
    let update_ms: i64 = rec.try_get(11)?;
    let due: Option<i64> = rec.try_get(16)?;
    let deadline: Option<i64> = rec.try_get(17)?;
    Ok(Message {
        queue: rec.try_get(0)?,
        offset: rec.try_get(1)?,
        id: rec.try_get(2)?,
        status: rec.try_get(3)?,
        tag: rec.try_get(4)?,
        key: rec.try_get(5)?,
        headers: headers_from_json(&header),
        body: rec.try_get(7)?,
        body_encoding: rec.try_get(8)?,
        virtual_queue_name: rec.try_get(9)?,
        create_time: crate::when::format_ms(create_ms),
        update_time: crate::when::format_ms(update_ms),
        create_ms,
        attempts: rec.try_get(12)?,
        deliveries: rec.try_get(13)?,
        error: rec.try_get(14)?,
        consumer: rec.try_get(15)?,
        due_time: due.map(crate::when::format_ms),
        deadline_time: deadline.map(crate::when::format_ms),
        last_event: rec.try_get(18)?,
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
