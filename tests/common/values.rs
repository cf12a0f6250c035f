//! Reading replies: maps in RESP3, flat field–value arrays in RESP2, read the same way.
#![allow(dead_code)]

use std::collections::BTreeMap;

use redis::Value;

pub fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        Value::Okay => b"OK".to_vec(),
        Value::Int(n) => n.to_string().into_bytes(),
        other => panic!("not a string: {other:?}"),
    }
}

pub fn text(v: &Value) -> String {
    String::from_utf8(bytes(v)).unwrap()
}

pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// A map reply (RESP3 map or RESP2 flat array) by field name.
pub fn map(v: &Value) -> BTreeMap<String, Value> {
    match v {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(flat) => {
            assert!(flat.len() % 2 == 0, "odd flat map: {flat:?}");
            flat.chunks(2).map(|p| (text(&p[0]), p[1].clone())).collect()
        }
        other => panic!("not a map: {other:?}"),
    }
}

pub fn array(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Nil => Vec::new(),
        other => panic!("not an array: {other:?}"),
    }
}

/// A FETCH/PEEK reply as a list of messages by field name (empty for null).
pub fn messages(v: &Value) -> Vec<BTreeMap<String, Value>> {
    array(v).iter().map(map).collect()
}

pub fn field(m: &BTreeMap<String, Value>, name: &str) -> String {
    text(m.get(name).unwrap_or_else(|| panic!("no field {name} in {m:?}")))
}

pub fn field_int(m: &BTreeMap<String, Value>, name: &str) -> i64 {
    int(m.get(name).unwrap_or_else(|| panic!("no field {name} in {m:?}")))
}

/// An error reply as Redis sent it: `ERR invalid queue name`.
pub fn error_line(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}
