//! Reading rmq replies: maps (RESP3 maps or flat RESP2 arrays), numbers, strings (shared with
//! the archive, crate `rmq-backend`), and messages.

use redis::Value;

use crate::backend::RedisError;
pub use rmq_backend::reply::{as_bytes, as_i64, as_string, as_u64, pairs};

fn protocol(what: &str, v: &Value) -> RedisError {
    RedisError::refused(format!("unexpected reply: expected {what}, got {v:?}"))
}

/// A message as PEEK and GET show it. Fields a reply does not carry stay empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub body: Vec<u8>,
    pub state: String,
    pub attempt: u64,
    pub tag: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub created: u64,
    pub offset: u64,
    pub due: u64,
    pub deadline: u64,
    pub consumer: String,
    pub error: String,
}

impl Message {
    pub fn from_reply(v: Value) -> Result<Message, RedisError> {
        let mut m = Message::default();
        for (k, v) in pairs(v)? {
            match k.as_str() {
                "id" => m.id = as_string(v)?,
                "body" => m.body = as_bytes(v)?,
                "state" => m.state = as_string(v)?,
                "attempt" => m.attempt = as_u64(v)?,
                "tag" => m.tag = as_string(v)?,
                "key" => m.key = as_string(v)?,
                "headers" => m.headers = rmq_backend::reply::headers(v)?,
                "created" => m.created = as_u64(v)?,
                "offset" => m.offset = as_u64(v)?,
                "due" => m.due = as_u64(v)?,
                "deadline" => m.deadline = as_u64(v)?,
                "consumer" => m.consumer = as_string(v)?,
                "error" => m.error = as_string(v)?,
                _ => {}
            }
        }
        Ok(m)
    }
}

/// The messages of a PEEK reply.
pub fn messages(v: Value) -> Result<Vec<Message>, RedisError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(Message::from_reply).collect(),
        other => Err(protocol("messages", &other)),
    }
}
