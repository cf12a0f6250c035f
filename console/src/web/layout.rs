//! The page shell every page shares, and small pieces used across pages.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::{fmt, App};
use crate::audit::Entry;

/// Which menu entry is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Queues,
    Archive,
    Audit,
    None,
}

/// A whole HTML page.
pub fn page(app: &App, title: &str, nav: Nav, body: Markup) -> Markup {
    let (edition, error) = {
        let h = app.history();
        (h.latest().map(|s| s.edition).unwrap_or("unknown edition"), h.last_error.clone())
    };
    let v = env!("CARGO_PKG_VERSION");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · rmq console" }
                link rel="stylesheet" href={ "/assets/console.css?v=" (v) };
                link rel="icon" href={ "/assets/favicon.svg?v=" (v) } type="image/svg+xml";
                script src={ "/assets/console.js?v=" (v) } defer {}
            }
            body data-refresh=(app.refresh.as_millis()) {
                header.top {
                    a.brand href="/" { "rmq" span { " console" } }
                    nav {
                        a href="/" class=[(nav == Nav::Queues).then_some("on")] { "Queues" }
                        @if app.archive.is_some() {
                            a href="/archive" class=[(nav == Nav::Archive).then_some("on")] { "Archive" }
                        }
                        @if app.audit.is_some() {
                            a href="/audit" class=[(nav == Nav::Audit).then_some("on")] { "Audit log" }
                        }
                        a href="/metrics" { "Metrics" }
                    }
                    span.conn { (app.url) " · " (edition) }
                    @if app.read_only { span.badge.ro title="--read-only: no action is offered" { "read-only" } }
                }
                @if let Some((at, text)) = error {
                    div.banner.bad {
                        "Reading Redis failed (" (fmt::time(at)) "): " (text)
                        ". The figures below are from the last reading that worked."
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page response.
pub fn html_response(status: StatusCode, m: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

/// A page that says what went wrong.
pub fn error_page(app: &App, status: StatusCode, title: &str, text: &str) -> Response {
    html_response(
        status,
        page(
            app,
            title,
            Nav::None,
            html! {
                h1 { (title) }
                p.error { (text) }
                p { a href="/" { "Back to the queues" } }
            },
        ),
    )
}

/// The hidden form token of every POST form.
pub fn csrf(app: &App) -> Markup {
    html! { input type="hidden" name="csrf" value=(app.csrf); }
}

/// What the last action did, shown at the top of the page it led back to.
pub fn notice(e: &Entry) -> Markup {
    let what = match (e.action.as_str(), e.affected) {
        ("push", _) => format!("Pushed message {}", e.ids.first().map_or("", |s| s.as_str())),
        ("settings", _) => format!("Settings changed: {}", e.detail),
        ("pause", _) => "Queue paused: FETCH hands out nothing until it is resumed".to_string(),
        ("resume", _) => "Queue resumed".to_string(),
        (a, Some(n)) => format!(
            "{}: {} message{}{}",
            capitalize(a),
            fmt::count(n),
            if n == 1 { "" } else { "s" },
            if e.detail.is_empty() { String::new() } else { format!(" ({})", e.detail) }
        ),
        (a, None) => capitalize(a),
    };
    html! {
        @if e.ok() {
            div.banner.good { (what) " · " a href="/audit" { "audit #" (e.seq) } }
        } @else {
            div.banner.bad { (capitalize(&e.action)) " failed: " (e.outcome) " · " a href="/audit" { "audit #" (e.seq) } }
        }
    }
}

pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The name shown for a state.
pub fn state_label(state: &str) -> &'static str {
    match state {
        "ready" => "Ready",
        "delayed" => "Delayed",
        "inflight" => "In flight",
        "failed" => "Failed",
        "errors" => "Errors",
        _ => "All",
    }
}

/// The five states, in the order of the tabs.
pub const STATES: [&str; 5] = ["ready", "delayed", "inflight", "failed", "errors"];
