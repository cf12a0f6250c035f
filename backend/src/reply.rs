//! Reading replies: strings, numbers, and maps (RESP3 maps or flat RESP2 arrays).

use redis::Value;

use crate::RedisError;

fn protocol(what: &str, v: &Value) -> RedisError {
    RedisError::refused(format!("unexpected reply: expected {what}, got {v:?}"))
}

/// The bytes of a string reply (a number as its digits, nil as nothing).
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

/// An integer reply, or a string of one (nil: 0).
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

/// [`as_i64`], negative as 0.
pub fn as_u64(v: Value) -> Result<u64, RedisError> {
    Ok(as_i64(v)?.max(0) as u64)
}

/// The field–value pairs of a map reply: a RESP3 map, or a flat RESP2 array.
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

/// A message's headers: a map of name to value (the Lua edition's empty table comes back as an
/// empty array).
pub fn headers(v: Value) -> Result<Vec<(String, String)>, RedisError> {
    match v {
        Value::Array(a) if a.is_empty() => Ok(Vec::new()),
        v => pairs(v)?.into_iter().map(|(k, v)| Ok((k, as_string(v)?))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_come_as_resp3_maps_or_flat_arrays() {
        let flat = Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Int(1)]);
        let map = Value::Map(vec![(Value::SimpleString("a".into()), Value::Int(1))]);
        assert_eq!(pairs(flat).unwrap(), pairs(map).unwrap());
        assert!(pairs(Value::Array(vec![Value::Int(1)])).is_err(), "an odd array is no map");
        assert_eq!(as_i64(Value::BulkString(b" 42 ".to_vec())).unwrap(), 42);
        assert_eq!(as_u64(Value::Int(-3)).unwrap(), 0);
        assert!(as_i64(Value::BulkString(b"x".to_vec())).is_err());
    }
}
