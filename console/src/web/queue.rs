//! The queue page: counters and chart (live), a tab per state with paged PEEK, and the queue's
//! actions (pause/resume, recover, purge, push a test message, settings, find by id).
//!
//! Redis work per view: STATS and CONFIG GET in one pipeline, then one PEEK of at most a page:
//! O(page) whatever the size of the queue (PEEK START n walks list nodes, not messages, from
//! the nearer end).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, Nav, STATES};
use super::{chart, fmt, App, Shared};
use crate::backend::{Call, RedisError};
use crate::reply::{self, Message};
use crate::snapshot::{paused_from, unix_ms, QueueStats};

/// Page sizes offered.
pub const SIZES: [u64; 4] = [10, 20, 50, 100];

#[derive(Clone, Debug, Default, Deserialize)]
pub struct View {
    #[serde(default)]
    pub state: String,
    /// "newest" or "oldest" (the default).
    #[serde(default)]
    pub order: String,
    #[serde(default)]
    pub page: u64,
    #[serde(default)]
    pub size: u64,
    /// The audit entry of the action that led here.
    #[serde(default)]
    pub done: Option<u64>,
}

impl View {
    pub fn state(&self) -> &str {
        if STATES.contains(&self.state.as_str()) {
            &self.state
        } else {
            "ready"
        }
    }
    fn newest(&self) -> bool {
        self.order == "newest"
    }
    fn size(&self) -> u64 {
        if SIZES.contains(&self.size) {
            self.size
        } else {
            20
        }
    }
    fn sized(&self, size: u64) -> View {
        View { size, ..self.clone() }
    }
    fn ordered(&self, order: &str) -> View {
        View { order: order.to_string(), ..self.clone() }
    }
    fn query(&self, state: &str, page: u64) -> String {
        let page = page.to_string();
        let size = self.size().to_string();
        fmt::query(&[
            ("state", state),
            ("order", if self.newest() { "newest" } else { "" }),
            ("page", if page == "0" { "" } else { &page }),
            ("size", if size == "20" { "" } else { &size }),
        ])
    }
}

/// A queue's counters and settings, read in one round trip.
pub struct Info {
    pub stats: QueueStats,
    /// (name, value) as CONFIG GET gives them.
    pub settings: Vec<(String, String)>,
}

pub async fn read_info(app: &App, q: &str) -> Result<Info, RedisError> {
    let mut r = app.redis.call_many(vec![Call::new("stats", q, &[]), Call::new("config", q, &["GET"])]).await?.into_iter();
    let mut stats = QueueStats { name: q.to_string(), ..Default::default() };
    stats.apply_stats(r.next().unwrap_or(Err(RedisError::refused("no reply")))?)?;
    let config = r.next().unwrap_or(Err(RedisError::refused("no reply")));
    let settings: Vec<(String, String)> = match config.clone() {
        Ok(v) => reply::pairs(v)?.into_iter().map(|(k, v)| Ok((k, reply::as_string(v)?))).collect::<Result<_, RedisError>>()?,
        Err(_) => Vec::new(),
    };
    stats.paused = paused_from(config);
    Ok(Info { stats, settings })
}

/// Where the page starts and how many it shows, oldest first (as PEEK counts) or newest first.
fn window(total: u64, view: &View) -> (u64, u64) {
    let size = view.size();
    if view.newest() {
        let end = total.saturating_sub(view.page * size);
        let start = end.saturating_sub(size);
        (start, end - start)
    } else {
        (view.page * size, size)
    }
}

pub async fn page(State(app): State<Shared>, Path(q): Path<String>, Query(view): Query<View>) -> Response {
    let info = match read_info(&app, &q).await {
        Ok(i) => i,
        Err(e) => return redis_error(&app, &q, e),
    };
    let state = view.state();
    let (start, count) = window(info.stats.count(state), &view);
    let mut msgs = if count == 0 {
        Vec::new()
    } else {
        let args = vec![
            state.to_uppercase().into_bytes(),
            b"START".to_vec(),
            start.to_string().into_bytes(),
            b"COUNT".to_vec(),
            count.to_string().into_bytes(),
        ];
        match app.redis.call("peek", Some(&q), args).await.and_then(reply::messages) {
            Ok(m) => m,
            Err(e) => return redis_error(&app, &q, e),
        }
    };
    // Each row keeps its place in PEEK's order, for the message page.
    let mut placed: Vec<(u64, Message)> = msgs.drain(..).enumerate().map(|(i, m)| (start + i as u64, m)).collect();
    if view.newest() {
        placed.reverse();
    }
    let done = view.done.and_then(|s| app.audit.as_ref()?.get(s));
    let body = html! {
        @if let Some(e) = &done { (layout::notice(e)) }
        (header(&app, &q, &info))
        div id="live" data-live={ "/live" (fmt::queue_url(&q)) } { (live_part(&app, &q, &info.stats)) }
        (tabs(&q, &info.stats, &view))
        (list(&app, &q, &info.stats, &view, &placed))
        @if !app.read_only { (actions(&app, &q, &info)) }
    };
    layout::html_response(StatusCode::OK, layout::page(&app, &q, Nav::Queues, body))
}

/// The live part alone.
pub async fn live(State(app): State<Shared>, Path(q): Path<String>) -> Response {
    match read_info(&app, &q).await {
        Ok(i) => layout::html_response(StatusCode::OK, live_part(&app, &q, &i.stats)),
        Err(e) => layout::html_response(StatusCode::SERVICE_UNAVAILABLE, html! { p.error { "Redis: " (e.text) } }),
    }
}

pub fn redis_error(app: &App, q: &str, e: RedisError) -> Response {
    let status = if e.unavailable { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_REQUEST };
    layout::error_page(app, status, q, &format!("Redis: {}", e.text))
}

fn header(app: &App, q: &str, info: &Info) -> Markup {
    let paused = info.stats.paused == Some(true);
    html! {
        div.qhead {
            h1 { a href="/" { "Queues" } " / " (q) }
            @if paused { span.badge.paused title="FETCH hands out nothing; PUSH and the guard go on" { "paused" } }
            @if !app.read_only && info.stats.paused.is_some() {
                form.inline method="post" action={ (fmt::queue_url(q)) (if paused { "/resume" } else { "/pause" }) } {
                    (layout::csrf(app))
                    @if paused {
                        button.primary name="go" value="1" { "Resume" }
                    } @else {
                        button name="go" value="1" title="FETCH hands out nothing until resumed" { "Pause" }
                    }
                }
            }
        }
    }
}

fn live_part(app: &App, q: &str, s: &QueueStats) -> Markup {
    let h = app.history();
    let rates = h.queue_rates(q);
    let stalled = h.stalled_for(s);
    let window = Duration::from_millis(h.config().keep as u64 * app.refresh.as_millis() as u64);
    let now = h.latest().map_or_else(unix_ms, |l| l.taken_ms);
    html! {
        dl.totals {
            @for st in STATES {
                div { dt { (layout::state_label(st)) } dd class=[(matches!(st, "failed" | "errors") && s.count(st) > 0).then_some("bad")] { (fmt::count(s.count(st))) } }
            }
            div { dt { "Oldest ready" } dd { @if s.ready > 0 { (fmt::age(s.oldest_ready_ms)) } @else { "–" } } }
            div { dt { "Push" } dd { (fmt::rate(rates.push)) } }
            div { dt { "Ack" } dd { (fmt::rate(rates.ack)) } }
        }
        @if let Some(d) = stalled {
            p.banner.bad { "Stalled: messages are waiting and no ack was seen for " (fmt::age(d.as_millis() as u64)) "." }
        }
        p.muted {
            "Since the queue began: " (fmt::count(s.pushed)) " pushed, " (fmt::count(s.acked)) " acked, "
            (fmt::count(s.retried)) " retried, " (fmt::count(s.dead)) " dead, " (fmt::count(s.errored)) " errored, "
            (fmt::count(s.dups)) " duplicates"
            @if let Some(r) = s.removed { ", " (fmt::count(r)) " removed" }
            "."
        }
        (chart::throughput(&h.queue_series(q), window, now))
    }
}

fn tabs(q: &str, s: &QueueStats, view: &View) -> Markup {
    let base = fmt::queue_url(q);
    html! {
        nav.tabs {
            @for st in STATES {
                a href={ (base) (view.query(st, 0)) } class=[(st == view.state()).then_some("on")] {
                    (layout::state_label(st)) " " span.count { (fmt::count(s.count(st))) }
                }
            }
        }
    }
}

/// The state-specific column: (heading, value).
fn extra(state: &str, m: &Message, now: u64) -> (&'static str, String) {
    match state {
        "delayed" => ("Due", fmt::relative(m.due, now)),
        "inflight" => (
            "Lock",
            format!(
                "{}{}",
                if m.deadline <= now {
                    format!("ran out {} ago", fmt::age(now - m.deadline))
                } else {
                    format!("{} left", fmt::age(m.deadline - now))
                },
                if m.consumer.is_empty() { String::new() } else { format!(" · {}", m.consumer) }
            ),
        ),
        "failed" | "errors" => ("Last error", m.error.clone()),
        _ => ("Attempt", m.attempt.to_string()),
    }
}

/// The first characters of a body, as text with binary bytes shown as `·`.
pub fn preview(body: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(n * 4)]);
    let mut s: String = text.chars().take(n).map(|c| if c.is_control() || c == '\u{fffd}' { '·' } else { c }).collect();
    if text.chars().count() > n || body.len() > n * 4 {
        s.push('…');
    }
    s
}

fn list(app: &App, q: &str, s: &QueueStats, view: &View, rows: &[(u64, Message)]) -> Markup {
    let state = view.state();
    let total = s.count(state);
    let size = view.size();
    let pages = total.div_ceil(size).max(1);
    let page = view.page;
    let base = fmt::queue_url(q);
    let now = unix_ms();
    let heading = if state == "ready" { "Attempt" } else { extra(state, &Message::default(), now).0 };
    let can_requeue = matches!(state, "delayed" | "failed" | "errors");
    let (newest, oldest) = (view.ordered("newest"), view.ordered(""));
    let table = html! {
        table.messages {
            thead { tr {
                @if !app.read_only { th { input type="checkbox" data-select-all="id" title="select all on this page"; } }
                th { "Id" } th { "Created" } th { "Tag" } th { "Key" } th { (heading) } th { "Body" }
            } }
            tbody {
                @for (at, m) in rows {
                    tr {
                        @if !app.read_only { td { input type="checkbox" name="id" value=(m.id); } }
                        td.id { a href={ (base) "/message" (fmt::query(&[("state", state), ("at", &at.to_string()), ("id", &m.id)])) } { (m.id) } }
                        td title=(fmt::time(m.created)) { (fmt::age(now.saturating_sub(m.created))) " ago" }
                        td { (m.tag) }
                        td { (m.key) }
                        td { (extra(state, m, now).1) }
                        td.body { code { (preview(&m.body, 80)) } }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="7" .muted { "No " (layout::state_label(state).to_lowercase()) " message." } }
                }
            }
        }
    };
    html! {
        div.listbar {
            span { "Order: " }
            a href={ (base) (oldest.query(state, 0)) } class=[(!view.newest()).then_some("on")] { "oldest first" }
            " · "
            a href={ (base) (newest.query(state, 0)) } class=[view.newest().then_some("on")] { "newest first" }
            span.sep {}
            span { "Per page: " }
            @for sz in SIZES {
                a href={ (base) (view.sized(sz).query(state, 0)) } class=[(sz == size).then_some("on")] { (sz) }
                " "
            }
        }
        @if app.read_only {
            (table)
        } @else {
            form method="post" action={ (base) "/requeue" } {
                (layout::csrf(app))
                input type="hidden" name="back" value=(state);
                (table)
                @if !app.read_only && !rows.is_empty() {
                    div.buttons {
                        @if can_requeue {
                            button formaction={ (base) "/requeue" } { "Requeue selected…" }
                        }
                        button.danger formaction={ (base) "/delete" } { "Delete selected…" }
                    }
                }
            }
        }
        nav.pager {
            @if page > 0 { a href={ (base) (view.query(state, page - 1)) } { "← previous" } }
            span { "page " (page + 1) " of " (pages) " · " (fmt::count(total)) " " (layout::state_label(state).to_lowercase()) }
            @if page + 1 < pages { a href={ (base) (view.query(state, page + 1)) } { "next →" } }
        }
        @if !app.read_only && total > 0 {
            form.inline method="post" action={ (base) "/purge" } {
                (layout::csrf(app))
                input type="hidden" name="state" value=(state);
                button.danger { "Purge all " (fmt::count(total)) " " (layout::state_label(state).to_lowercase()) "…" }
            }
        }
    }
}

/// What a setting means, for the settings form.
fn setting_help(name: &str) -> &'static str {
    match name {
        "lock-ms" => "how long a fetched message stays invisible (ms)",
        "max-attempts" => "deliveries before a message goes to failed",
        "backoff-ms" => "first retry delay (doubles each attempt; 0: straight back)",
        "backoff-max-ms" => "longest retry delay",
        "maxlen" => "most messages ready + delayed + in flight (0: no limit)",
        "ordered" => "1: one message in flight at a time, in order",
        "dedup-window-ms" => "how long a producer id is remembered",
        "log" => "1: keep the message log",
        "log-maxlen" => "entries the log keeps",
        _ => "",
    }
}

fn actions(app: &App, q: &str, info: &Info) -> Markup {
    let base = fmt::queue_url(q);
    let s = &info.stats;
    html! {
        section.actions {
            h2 { "Actions" }
            details {
                summary { "Recover: move messages back to ready" }
                form method="post" action={ (base) "/recover" } {
                    (layout::csrf(app))
                    label { input type="checkbox" name="part" value="expired" checked; " in flight whose lock ran out (of " (fmt::count(s.inflight)) " in flight)" }
                    label { input type="checkbox" name="part" value="failed" checked; " failed (" (fmt::count(s.failed)) "), attempts start again" }
                    label { input type="checkbox" name="part" value="errors" checked; " errors (" (fmt::count(s.errors)) "), attempts start again" }
                    button { "Recover…" }
                }
            }
            details {
                summary { "Push a test message" }
                form method="post" action={ (base) "/push" } {
                    (layout::csrf(app))
                    label { "Body" textarea name="body" rows="4" { "{\"test\": true}" } }
                    label { "Tag " input name="tag"; }
                    label { "Key " input name="key"; }
                    label { "Headers (one name=value a line)" textarea name="headers" rows="2" {} }
                    label { "Delay (ms) " input name="delay" inputmode="numeric"; }
                    button { "Push" }
                }
            }
            details {
                summary { "Settings (RMQ.CONFIG)" }
                @if info.settings.is_empty() {
                    p.muted { "This server gave no settings." }
                } @else {
                    form method="post" action={ (base) "/settings" } {
                        (layout::csrf(app))
                        table.settings {
                            @for (k, v) in info.settings.iter().filter(|(k, _)| k != "paused") {
                                tr {
                                    th { label for={ "set-" (k) } { (k) } }
                                    td {
                                        input id={ "set-" (k) } name={ "set." (k) } value=(v) inputmode="numeric";
                                        input type="hidden" name={ "was." (k) } value=(v);
                                    }
                                    td.muted { (setting_help(k)) }
                                }
                            }
                        }
                        p.muted { "Only the settings you change are written (each becomes an override of the node's default)." }
                        button { "Save settings" }
                    }
                }
            }
            details {
                summary { "Find a message by id" }
                form method="get" action={ (base) "/find" } {
                    input name="id" placeholder="message id" required;
                    button { "Find" }
                    p.muted { "Looks in every state (RMQ.GET scans the queue; with the Lua edition, offered for queues of up to "
                        (fmt::count(super::message::FIND_LIMIT)) " messages)." }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_pages_count_back_from_the_end() {
        let v = |order: &str, page| View { order: order.into(), page, size: 10, ..Default::default() };
        assert_eq!(window(25, &v("", 0)), (0, 10));
        assert_eq!(window(25, &v("", 2)), (20, 10));
        assert_eq!(window(25, &v("newest", 0)), (15, 10));
        assert_eq!(window(25, &v("newest", 2)), (0, 5));
        assert_eq!(window(25, &v("newest", 3)), (0, 0));
    }

    #[test]
    fn previews_are_short_and_printable() {
        assert_eq!(preview(b"hello", 80), "hello");
        assert_eq!(preview(b"a\x00\xffb", 80), "a··b");
        assert_eq!(preview(&[b'x'; 100], 5), "xxxxx…");
    }
}
