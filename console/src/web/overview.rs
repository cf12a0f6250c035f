//! The overview: every queue of the node with its counts, age of the oldest ready message,
//! rates and flags, sortable and paged; node totals and the live throughput chart.
//!
//! Made from the sampler's latest snapshot: a page view asks Redis nothing.

use std::cmp::Ordering;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, Nav};
use super::{chart, fmt, App, Shared};
use crate::history::{History, Rates};
use crate::snapshot::{QueueStats, Snapshot};

/// Rows per page.
const PAGE: usize = 100;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct View {
    /// Column to sort by (see COLUMNS).
    #[serde(default)]
    sort: String,
    /// "1": descending.
    #[serde(default)]
    desc: String,
    /// Only queues whose name contains this.
    #[serde(default)]
    filter: String,
    #[serde(default)]
    page: usize,
}

/// (key, heading, sorts descending first)
const COLUMNS: [(&str, &str, bool); 10] = [
    ("name", "Queue", false),
    ("ready", "Ready", true),
    ("delayed", "Delayed", true),
    ("inflight", "In flight", true),
    ("failed", "Failed", true),
    ("errors", "Errors", true),
    ("oldest", "Oldest ready", true),
    ("push", "Push", true),
    ("ack", "Ack", true),
    ("status", "Status", true),
];

impl View {
    fn query(&self, page: usize, sort: Option<(&str, bool)>) -> String {
        let (s, d) = sort.unwrap_or((self.sort.as_str(), self.desc == "1"));
        let page = page.to_string();
        fmt::query(&[
            ("sort", s),
            ("desc", if d { "1" } else { "" }),
            ("filter", &self.filter),
            ("page", if page == "0" { "" } else { &page }),
        ])
    }
}

struct Row<'a> {
    q: &'a QueueStats,
    rates: Rates,
    stalled: Option<Duration>,
}

impl Row<'_> {
    /// Problems first: stalled, then errors of the reading, paused, then the rest.
    fn status_rank(&self) -> u8 {
        if self.stalled.is_some() {
            3
        } else if self.q.error.is_some() {
            2
        } else if self.q.paused == Some(true) {
            1
        } else {
            0
        }
    }
}

fn compare(a: &Row, b: &Row, key: &str) -> Ordering {
    let (x, y) = (a.q, b.q);
    match key {
        "ready" => x.ready.cmp(&y.ready),
        "delayed" => x.delayed.cmp(&y.delayed),
        "inflight" => x.inflight.cmp(&y.inflight),
        "failed" => x.failed.cmp(&y.failed),
        "errors" => x.errors.cmp(&y.errors),
        "oldest" => x.oldest_ready_ms.cmp(&y.oldest_ready_ms),
        "push" => a.rates.push.total_cmp(&b.rates.push),
        "ack" => a.rates.ack.total_cmp(&b.rates.ack),
        "status" => a.status_rank().cmp(&b.status_rank()),
        _ => Ordering::Equal,
    }
    .then_with(|| x.name.cmp(&y.name))
}

pub async fn page(State(app): State<Shared>, Query(view): Query<View>) -> Response {
    let live = format!("/live/overview{}", view.query(view.page, None));
    let body = html! {
        h1 { "Queues" }
        form.filter method="get" action="/" {
            input type="search" name="filter" value=(view.filter) placeholder="filter by name";
            @if !view.sort.is_empty() { input type="hidden" name="sort" value=(view.sort); }
            @if view.desc == "1" { input type="hidden" name="desc" value="1"; }
            button { "Filter" }
        }
        div id="live" data-live=(live) { (content(&app, &view)) }
    };
    layout::html_response(StatusCode::OK, layout::page(&app, "Queues", Nav::Queues, body))
}

/// The live part alone (the script re-fetches it every refresh).
pub async fn live(State(app): State<Shared>, Query(view): Query<View>) -> Response {
    layout::html_response(StatusCode::OK, content(&app, &view))
}

fn content(app: &App, view: &View) -> Markup {
    let h = app.history();
    let Some(snap) = h.latest() else {
        return html! { p.muted { "No reading of Redis yet." } };
    };
    let window = Duration::from_millis(h.config().keep as u64 * app.refresh.as_millis() as u64);
    html! {
        (summary(&h, &snap))
        (chart::throughput(&h.total_series(), window, snap.taken_ms))
        (table(&h, &snap, view))
    }
}

fn summary(h: &History, snap: &Snapshot) -> Markup {
    let sum = |f: fn(&QueueStats) -> u64| snap.queues.iter().map(f).sum::<u64>();
    let rates = h.total_rates();
    html! {
        dl.totals {
            div { dt { "Queues" } dd { (fmt::count(snap.queues.len() as u64)) } }
            div { dt { "Ready" } dd { (fmt::count(sum(|q| q.ready))) } }
            div { dt { "Delayed" } dd { (fmt::count(sum(|q| q.delayed))) } }
            div { dt { "In flight" } dd { (fmt::count(sum(|q| q.inflight))) } }
            div { dt { "Failed" } dd class=[(sum(|q| q.failed) > 0).then_some("bad")] { (fmt::count(sum(|q| q.failed))) } }
            div { dt { "Errors" } dd class=[(sum(|q| q.errors) > 0).then_some("bad")] { (fmt::count(sum(|q| q.errors))) } }
            div { dt { "Push" } dd { (fmt::rate(rates.push)) } }
            div { dt { "Ack" } dd { (fmt::rate(rates.ack)) } }
        }
        p.muted {
            "As of " (fmt::time(snap.taken_ms)) " (read in " (snap.took.as_millis()) " ms). "
            @if let Some(runs) = snap.info_u64("guard_runs") {
                "Guard: " (fmt::count(runs)) " ticks, "
                (fmt::count(snap.info_u64("guard_reclaimed").unwrap_or(0))) " reclaimed, "
                (fmt::count(snap.info_u64("guard_promoted").unwrap_or(0))) " promoted, last tick "
                (snap.info_u64("guard_last_us").unwrap_or(0)) " µs. "
            } @else {
                "No guard on this server (the Lua edition has none: FETCH reclaims and promotes). "
            }
            @if snap.info_u64("eviction_policy_ok") == Some(0) {
                strong.bad { "maxmemory-policy is not noeviction: Redis may drop queue keys under memory pressure." }
            }
        }
    }
}

fn table(h: &History, snap: &Snapshot, view: &View) -> Markup {
    let filter = view.filter.to_lowercase();
    let mut rows: Vec<Row> = snap
        .queues
        .iter()
        .filter(|q| filter.is_empty() || q.name.to_lowercase().contains(&filter))
        .map(|q| Row { q, rates: h.queue_rates(&q.name), stalled: h.stalled_for(q) })
        .collect();
    let key = if COLUMNS.iter().any(|c| c.0 == view.sort) { view.sort.as_str() } else { "name" };
    let desc = view.desc == "1";
    rows.sort_by(|a, b| {
        let o = compare(a, b, key);
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    let pages = rows.len().div_ceil(PAGE).max(1);
    let page = view.page.min(pages - 1);
    let shown = &rows[(page * PAGE).min(rows.len())..((page + 1) * PAGE).min(rows.len())];
    html! {
        table.queues {
            thead { tr {
                @for (k, label, first_desc) in COLUMNS {
                    @let on = k == key;
                    @let next_desc = if on { !desc } else { first_desc };
                    th class=[on.then_some("sorted")] {
                        a href={ "/" (view.query(0, Some((k, next_desc)))) } {
                            (label) @if on { @if desc { " ▼" } @else { " ▲" } }
                        }
                    }
                }
            } }
            tbody {
                @for r in shown {
                    @let q = r.q;
                    tr class=[r.stalled.map(|_| "stalled")] {
                        td.name { a href=(fmt::queue_url(&q.name)) { (q.name) } }
                        td.n { (fmt::count(q.ready)) }
                        td.n { (fmt::count(q.delayed)) }
                        td.n { (fmt::count(q.inflight)) }
                        td.n class=[(q.failed > 0).then_some("bad")] { (fmt::count(q.failed)) }
                        td.n class=[(q.errors > 0).then_some("bad")] { (fmt::count(q.errors)) }
                        td.n { @if q.ready > 0 { (fmt::age(q.oldest_ready_ms)) } @else { "–" } }
                        td.n { (fmt::rate(r.rates.push)) }
                        td.n { (fmt::rate(r.rates.ack)) }
                        td {
                            @if let Some(d) = r.stalled {
                                span.badge.bad title="messages are waiting and none was acked" { "stalled: no ack for " (fmt::age(d.as_millis() as u64)) }
                            }
                            @if q.paused == Some(true) { span.badge.paused { "paused" } }
                            @if let Some(e) = &q.error { span.badge.bad title=(e) { "unreadable" } }
                        }
                    }
                }
                @if shown.is_empty() {
                    tr { td colspan="10" .muted {
                        @if snap.queues.is_empty() { "No queue on this server yet." } @else { "No queue matches." }
                    } }
                }
            }
        }
        @if pages > 1 {
            nav.pager {
                @if page > 0 { a href={ "/" (view.query(page - 1, None)) } { "← previous" } }
                span { "page " (page + 1) " of " (pages) " · " (fmt::count(rows.len() as u64)) " queues" }
                @if page + 1 < pages { a href={ "/" (view.query(page + 1, None)) } { "next →" } }
            }
        }
        p.muted { "Rates are per second over the last minute; a queue is flagged stalled when messages wait, it is not paused, and no ack was seen for "
            (fmt::age(h.config().stall_after.as_millis() as u64)) ". Figures refresh by themselves." }
    }
}
