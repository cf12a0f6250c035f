//! Reading rmq replies: maps (RESP3 maps or flat RESP2 arrays), numbers, strings, messages.

use redis::Value;

use crate::backend::RedisError;

fn protocol(what: &str, v: &Value) -> RedisError {
    RedisError::refused(format!("unexpected reply: expected {what}, got {v:?}"))
}

pub fn as_bytes(v: Value) -> Result<Vec<u8>, RedisError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::Double(d) => Ok(d.to_string().into_bytes()),
        Value::Nil => Ok(Vec::new()),
        Value::Okay => Ok(b"OK".to_vec()),
        other => Err(protocol("a string", &other)),
    }
}

pub fn as_string(v: Value) -> Result<String, RedisError> {
    Ok(String::from_utf8_lossy(&as_bytes(v)?).into_owned())
}

pub fn as_i64(v: Value) -> Result<i64, RedisError> {
    match v {
        Value::Int(i) => Ok(i),
        Value::Nil => Ok(0),
        Value::Double(d) => Ok(d as i64),
        other => {
            let s = as_string(other)?;
            s.trim().parse().map_err(|_| RedisError::refused(format!("expected an integer, got {s:?}")))
        }
    }
}

pub fn as_u64(v: Value) -> Result<u64, RedisError> {
    Ok(as_i64(v)?.max(0) as u64)
}

/// The field–value pairs of a map reply.
pub fn pairs(v: Value) -> Result<Vec<(String, Value)>, RedisError> {
    match v {
        Value::Map(m) => m.into_iter().map(|(k, v)| Ok((as_string(k)?, v))).collect(),
        Value::Array(a) => {
            if a.len() % 2 != 0 {
                return Err(protocol("a field-value array", &Value::Array(a)));
            }
            let mut out = Vec::with_capacity(a.len() / 2);
            let mut it = a.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((as_string(k)?, v));
            }
            Ok(out)
        }
        Value::Nil => Ok(Vec::new()),
        other => Err(protocol("a map", &other)),
    }
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
                "headers" => {
                    m.headers = match v {
                        // The Lua edition's empty table is an empty array.
                        Value::Array(a) if a.is_empty() => Vec::new(),
                        v => pairs(v)?.into_iter().map(|(k, v)| Ok((k, as_string(v)?))).collect::<Result<_, RedisError>>()?,
                    }
                }
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
