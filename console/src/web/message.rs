//! One message: its fields, headers and body (pretty JSON, text or hex), and its actions.
//!
//! A message is found by its place in its state's PEEK order (the list link gives it): one
//! PEEK of one message, then, if it moved, one PEEK of the 100 around it. Finding by id alone
//! needs RMQ.GET, which scans the queue: the module does it a slice at a time on a big queue
//! (other clients are served in between), so there it is offered for any queue; the Lua
//! edition scans in one function call, so there only for queues up to FIND_LIMIT messages.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, Nav, STATES};
use super::queue::{read_info, redis_error};
use super::{fmt, App, Shared};
use crate::reply::{self, Message};
use crate::snapshot::unix_ms;

/// The largest queue (messages in all states) the console runs the Lua edition's GET on.
pub const FIND_LIMIT: u64 = 100_000;
/// Messages looked at around the expected place when a message moved.
const NEAR: u64 = 50;
/// Bytes of a body shown as text or JSON; as hex.
const SHOW_TEXT: usize = 1 << 20;
const SHOW_HEX: usize = 64 << 10;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Where {
    #[serde(default)]
    state: String,
    #[serde(default)]
    at: u64,
    #[serde(default)]
    id: String,
    /// json, text or hex.
    #[serde(default)]
    view: String,
}

async fn peek(app: &App, q: &str, state: &str, start: u64, count: u64) -> Result<Vec<Message>, crate::backend::RedisError> {
    let args = vec![
        state.to_uppercase().into_bytes(),
        b"START".to_vec(),
        start.to_string().into_bytes(),
        b"COUNT".to_vec(),
        count.to_string().into_bytes(),
    ];
    app.redis.call("peek", Some(q), args).await.and_then(reply::messages)
}

pub async fn page(State(app): State<Shared>, Path(q): Path<String>, Query(w): Query<Where>) -> Response {
    if !STATES.contains(&w.state.as_str()) || w.id.is_empty() {
        return layout::error_page(&app, StatusCode::BAD_REQUEST, "Message", "Which message? (state and id are needed)");
    }
    let mut found = match peek(&app, &q, &w.state, w.at, 1).await {
        Ok(m) => m.into_iter().find(|m| m.id == w.id),
        Err(e) => return redis_error(&app, &q, e),
    };
    if found.is_none() {
        match peek(&app, &q, &w.state, w.at.saturating_sub(NEAR), 2 * NEAR + 1).await {
            Ok(m) => found = m.into_iter().find(|m| m.id == w.id),
            Err(e) => return redis_error(&app, &q, e),
        }
    }
    match found {
        Some(mut m) => {
            if m.state.is_empty() {
                m.state = w.state.clone();
            }
            show(&app, &q, &m, &w.view, Some(w.at))
        }
        None => {
            let base = fmt::queue_url(&q);
            let body = html! {
                h1 { a href="/" { "Queues" } " / " a href=(base) { (q) } " / " (w.id) }
                p { "This message is no longer where it was (" (layout::state_label(&w.state).to_lowercase())
                    ", place " (w.at + 1) "): it was acked, moved or deleted since." }
                p { a href={ (base) "/find" (fmt::query(&[("id", &w.id)])) } { "Look for it in every state" }
                    " · " a href={ (base) (fmt::query(&[("state", &w.state)])) } { "Back to " (layout::state_label(&w.state).to_lowercase()) } }
            };
            layout::html_response(StatusCode::NOT_FOUND, layout::page(&app, &w.id, Nav::Queues, body))
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Find {
    #[serde(default)]
    id: String,
    #[serde(default)]
    view: String,
}

/// A message by id in any state (RMQ.GET), for queues small enough.
pub async fn find(State(app): State<Shared>, Path(q): Path<String>, Query(f): Query<Find>) -> Response {
    let info = match read_info(&app, &q).await {
        Ok(i) => i,
        Err(e) => return redis_error(&app, &q, e),
    };
    let base = fmt::queue_url(&q);
    let total = info.stats.total();
    if total > FIND_LIMIT && !app.redis.edition().await.is_ok_and(|e| e == "module") {
        let body = html! {
            h1 { a href="/" { "Queues" } " / " a href=(base) { (q) } " / find" }
            p { "This queue holds " (fmt::count(total)) " messages. Looking a message up by id scans the whole queue inside Redis, in one call with the Lua edition, so the console does it there only for queues of up to "
                (fmt::count(FIND_LIMIT)) " messages. Browse the tabs, or run " code { "RMQ.GET " (q) " " (f.id) } " yourself at a quiet time." }
        };
        return layout::html_response(StatusCode::UNPROCESSABLE_ENTITY, layout::page(&app, "Find", Nav::Queues, body));
    }
    let v = match app.redis.call("get", Some(&q), vec![f.id.clone().into_bytes()]).await {
        Ok(v) => v,
        Err(e) => return redis_error(&app, &q, e),
    };
    if matches!(v, redis::Value::Nil) {
        let body = html! {
            h1 { a href="/" { "Queues" } " / " a href=(base) { (q) } " / find" }
            p { "No message with id " code { (f.id) } " in any state of this queue." }
        };
        return layout::html_response(StatusCode::NOT_FOUND, layout::page(&app, "Find", Nav::Queues, body));
    }
    match Message::from_reply(v) {
        Ok(m) => show(&app, &q, &m, &f.view, None),
        Err(e) => redis_error(&app, &q, e),
    }
}

/// The classic hex dump: offset, 16 bytes, and the bytes as ASCII.
pub fn hexdump(b: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in b.chunks(16).enumerate() {
        out.push_str(&format!("{:08x}  ", i * 16));
        for j in 0..16 {
            match chunk.get(j) {
                Some(x) => out.push_str(&format!("{x:02x} ")),
                None => out.push_str("   "),
            }
            if j == 7 {
                out.push(' ');
            }
        }
        out.push(' ');
        out.extend(chunk.iter().map(|&c| if (0x20..0x7f).contains(&c) { c as char } else { '.' }));
        out.push('\n');
    }
    out
}

/// UTF-8 without control characters (tabs and line breaks aside): shown as text.
pub fn is_text(t: &str) -> bool {
    t.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

/// The body in the view asked for, or the best one: JSON when it parses, text when it is UTF-8,
/// else hex. Returns (view, text, whether it was cut).
pub fn body_view(body: &[u8], asked: &str) -> (&'static str, String, bool) {
    let json = || serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| serde_json::to_string_pretty(&v).ok());
    let text = || std::str::from_utf8(body).ok().filter(|t| is_text(t));
    let as_hex = || {
        let cut = body.len() > SHOW_HEX;
        ("hex", hexdump(&body[..body.len().min(SHOW_HEX)]), cut)
    };
    let as_text = |t: &str| {
        let cut = t.len() > SHOW_TEXT;
        let mut end = t.len().min(SHOW_TEXT);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        ("text", t[..end].to_string(), cut)
    };
    match asked {
        "hex" => as_hex(),
        "text" => match text() {
            Some(t) => as_text(t),
            None => ("text", String::from_utf8_lossy(&body[..body.len().min(SHOW_TEXT)]).into_owned(), body.len() > SHOW_TEXT),
        },
        "json" => match json() {
            Some(j) => ("json", j, false),
            None => as_hex(),
        },
        _ => {
            if body.len() <= SHOW_TEXT {
                if let Some(j) = json() {
                    return ("json", j, false);
                }
            }
            match text() {
                Some(t) => as_text(t),
                None => as_hex(),
            }
        }
    }
}

/// The message page; `at` is its place in its state (None when found by id).
fn show(app: &App, q: &str, m: &Message, view: &str, at: Option<u64>) -> Response {
    let base = fmt::queue_url(q);
    let now = unix_ms();
    let (shown, text, cut) = body_view(&m.body, view);
    let is_json = serde_json::from_slice::<serde_json::Value>(&m.body).is_ok();
    let is_text = std::str::from_utf8(&m.body).is_ok_and(is_text);
    // The same page in another view.
    let here = |v: &str| -> String {
        match at {
            Some(at) => {
                format!("{base}/message{}", fmt::query(&[("state", &m.state), ("at", &at.to_string()), ("id", &m.id), ("view", v)]))
            }
            None => format!("{base}/find{}", fmt::query(&[("id", &m.id), ("view", v)])),
        }
    };
    let body = html! {
        h1 { a href="/" { "Queues" } " / " a href={ (base) (fmt::query(&[("state", &m.state)])) } { (q) } " / " (m.id) }
        table.fields {
            tr { th { "State" } td { span.badge { (layout::state_label(&m.state)) } } }
            tr { th { "Id" } td { code { (m.id) } } }
            tr { th { "Offset" } td { (m.offset) } }
            tr { th { "Tag" } td { (m.tag) } }
            tr { th { "Key" } td { (m.key) } }
            tr { th { "Attempts" } td { (m.attempt) } }
            tr { th { "Created" } td { (fmt::time(m.created)) " (" (fmt::relative(m.created, now)) ")" } }
            @if m.due > 0 { tr { th { "Due" } td { (fmt::time(m.due)) " (" (fmt::relative(m.due, now)) ")" } } }
            @if m.deadline > 0 { tr { th { "Lock deadline" } td { (fmt::time(m.deadline)) " (" (fmt::relative(m.deadline, now)) ")" } } }
            @if !m.consumer.is_empty() || m.state == "inflight" { tr { th { "Consumer" } td { (m.consumer) } } }
            @if !m.error.is_empty() { tr { th { "Last error" } td.error { (m.error) } } }
        }
        h2 { "Headers" }
        @if m.headers.is_empty() { p.muted { "None." } } @else {
            table.fields { @for (k, v) in &m.headers { tr { th { (k) } td { (v) } } } }
        }
        h2 { "Body " span.muted { "(" (fmt::count(m.body.len() as u64)) " bytes)" } }
        nav.tabs.small {
            @if is_json { a href=(here("json")) class=[(shown == "json").then_some("on")] { "JSON" } }
            @if is_text { a href=(here("text")) class=[(shown == "text").then_some("on")] { "Text" } }
            a href=(here("hex")) class=[(shown == "hex").then_some("on")] { "Hex" }
        }
        pre.body { (text) }
        @if cut { p.muted { "Cut: only the start of the body is shown." } }
        @if app.archive.is_some() {
            p { a href=(fmt::archive_message_url(q, &m.id, Some(m.offset as i64))) { "Its history in the archive" } }
        }
        @if !app.read_only { (actions(app, q, m)) }
    };
    layout::html_response(StatusCode::OK, layout::page(app, &m.id, Nav::Queues, body))
}

fn actions(app: &App, q: &str, m: &Message) -> Markup {
    let base = fmt::queue_url(q);
    html! {
        div.buttons {
            @if matches!(m.state.as_str(), "delayed" | "failed" | "errors") {
                form.inline method="post" action={ (base) "/requeue" } {
                    (layout::csrf(app))
                    input type="hidden" name="id" value=(m.id);
                    input type="hidden" name="back" value=(m.state);
                    button.primary { "Requeue…" }
                }
            }
            form.inline method="post" action={ (base) "/delete" } {
                (layout::csrf(app))
                input type="hidden" name="id" value=(m.id);
                input type="hidden" name="back" value=(m.state);
                button.danger { "Delete…" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_show_as_json_text_or_hex() {
        let (v, t, _) = body_view(br#"{"a":1}"#, "");
        assert_eq!((v, t.as_str()), ("json", "{\n  \"a\": 1\n}"));
        assert_eq!(body_view(b"plain words", "").0, "text");
        assert_eq!(body_view(&[0xff, 0x00, 0x41], "").0, "hex");
        assert_eq!(body_view(b"\x00\x01ok", "").0, "hex", "control bytes are not text");
        assert_eq!(body_view(b"line 1\n\tline 2", "").0, "text");
        assert_eq!(body_view(br#"{"a":1}"#, "hex").0, "hex");
        assert_eq!(body_view(b"not json", "json").0, "hex");
    }

    #[test]
    fn hexdump_lines_have_offset_bytes_and_ascii() {
        let d = hexdump(b"ABC\x00");
        assert!(d.starts_with("00000000  41 42 43 00 "), "{d}");
        assert!(d.trim_end().ends_with("ABC."), "{d}");
    }
}
