//! What the CLI prints: text or JSON, messages, errors, and the exit statuses.

use std::process::ExitCode;

use redis::Value;
use rmq_client::{Error, Message};

/// Exit statuses (listed in `rmq --help`).
pub mod exit {
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAVAILABLE: u8 = 3;
    pub const SPOOLED: u8 = 4;
    pub const NOTHING: u8 = 5;
}

/// Text or JSON.
#[derive(Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    pub fn json(&self, v: &impl serde::Serialize) {
        println!("{}", serde_json::to_string(v).expect("json"));
    }

    /// Prints `v` as JSON, or `text` otherwise.
    pub fn either(&self, v: &impl serde::Serialize, text: impl FnOnce() -> String) {
        if self.json {
            self.json(v);
        } else {
            println!("{}", text());
        }
    }

    pub fn messages(&self, msgs: &[Message]) {
        self.messages_of(msgs, false);
    }

    /// Messages; `show_queue` starts each text line with the message's queue (the partitions
    /// of a partitioned queue). JSON always has it.
    pub fn messages_of(&self, msgs: &[Message], show_queue: bool) {
        if self.json {
            self.json(&msgs);
            return;
        }
        for m in msgs {
            if show_queue {
                println!("[{}] {}", m.queue, message_line(m));
            } else {
                println!("{}", message_line(m));
            }
        }
    }

    /// Reports an error on stderr (JSON under --json) and gives its exit status.
    pub fn error(&self, e: &Error) -> ExitCode {
        self.fail(&e.to_string(), e.kind(), status_of(e))
    }

    /// Reports a failure that is not an [`Error`] (stale receipts, unknown ids …).
    pub fn fail(&self, text: &str, kind: &str, status: u8) -> ExitCode {
        if self.json {
            eprintln!("{}", serde_json::json!({ "error": text, "kind": kind, "status": status }));
        } else {
            eprintln!("rmq: {text}");
        }
        ExitCode::from(status)
    }
}

pub fn status_of(e: &Error) -> u8 {
    match e {
        Error::Unavailable(_) => exit::UNAVAILABLE,
        _ => exit::ERROR,
    }
}

/// A usage error from clap: as clap prints it, or as JSON when `--json` was given.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args().any(|a| a == "--json");
    let informational =
        matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
    if !json || informational {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("usage error").trim_start_matches("error: ");
    Out { json: true }.fail(first, "usage", exit::USAGE)
}

/// One line per message: id, then the fields that are set, then the body.
fn message_line(m: &Message) -> String {
    let mut line = m.id.clone();
    let mut field = |k: &str, v: &str| {
        if !v.is_empty() {
            line += &format!("  {k}={v}");
        }
    };
    field("receipt", &m.receipt);
    field("state", &m.state);
    field("attempt", &m.attempt.to_string());
    field("tag", &m.tag);
    field("key", &m.key);
    for (k, v) in &m.headers {
        line += &format!("  {k}={v}");
    }
    if !m.error.is_empty() {
        line += &format!("  error={:?}", m.error);
    }
    match std::str::from_utf8(&m.body) {
        Ok(b) => line += &format!("  body={b:?}"),
        Err(_) => line += &format!("  body=<{} bytes, not UTF-8; --json shows base64>", m.body.len()),
    }
    line
}

/// A reply value as JSON (bulk strings as text when UTF-8, else base64 in an object).
pub fn value_json(v: &Value) -> serde_json::Value {
    use base64::Engine;
    use serde_json::json;
    match v {
        Value::Nil => serde_json::Value::Null,
        Value::Int(i) => json!(i),
        Value::Double(d) => json!(d),
        Value::Boolean(b) => json!(b),
        Value::Okay => json!("OK"),
        Value::SimpleString(s) => json!(s),
        Value::BulkString(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!({
                "base64": base64::engine::general_purpose::STANDARD.encode(b)
            }),
        },
        Value::VerbatimString { text, .. } => json!(text),
        Value::Array(a) | Value::Set(a) => serde_json::Value::Array(a.iter().map(value_json).collect()),
        Value::Map(m) => {
            let mut o = serde_json::Map::new();
            for (k, v) in m {
                let key = match value_json(k) {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                o.insert(key, value_json(v));
            }
            serde_json::Value::Object(o)
        }
        other => json!(format!("{other:?}")),
    }
}

/// A reply value as short text.
pub fn value_text(v: &Value) -> String {
    match value_json(v) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// `HH:MM:SS` (UTC) of a unix time in ms, without a date crate.
pub fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    format!("{:02}:{:02}:{:02} UTC", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
