//! The audit log page: the latest actions, newest first.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::layout::{self, Nav};
use super::{fmt, Shared};

/// Entries shown.
const SHOW: usize = 500;

pub async fn page(State(app): State<Shared>) -> Response {
    let Some(audit) = &app.audit else {
        return layout::error_page(
            &app,
            StatusCode::NOT_FOUND,
            "Audit log",
            "A read-only console takes no action, so it keeps no audit log.",
        );
    };
    let entries = audit.recent(SHOW);
    let body = html! {
        h1 { "Audit log" }
        p.muted { "Every action taken in this console, newest first (the latest " (SHOW) "). The full log is "
            code { (audit.path().display()) } ", one JSON object a line." }
        table.audit {
            thead { tr { th { "#" } th { "Time" } th { "Who" } th { "Action" } th { "Queue" } th { "Ids" } th { "Detail" } th.n { "Confirmed" } th.n { "Changed" } th { "Outcome" } } }
            tbody {
                @for e in &entries {
                    tr class=[(!e.ok()).then_some("failed")] {
                        td.n { (e.seq) }
                        td { (fmt::time(e.time)) }
                        td { (e.who) br; span.muted { (e.from) } }
                        td { (e.action) }
                        td { a href=(fmt::queue_url(&e.queue)) { (e.queue) } }
                        td.ids {
                            @for id in e.ids.iter().take(5) { code { (id) } " " }
                            @if e.ids.len() > 5 { "… " (e.ids.len()) " in all" }
                        }
                        td { (e.detail) }
                        td.n { @if let Some(n) = e.confirmed { (fmt::count(n)) } }
                        td.n { @if let Some(n) = e.affected { (fmt::count(n)) } }
                        td { @if e.ok() { "ok" } @else { span.error { (e.outcome) } } }
                    }
                }
                @if entries.is_empty() { tr { td colspan="10" .muted { "No action yet." } } }
            }
        }
    };
    layout::html_response(StatusCode::OK, layout::page(&app, "Audit log", Nav::Audit, body))
}
