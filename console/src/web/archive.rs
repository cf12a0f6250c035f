//! The Archive page (with `--archive-db URL`): the archived queues with their lag and gaps; a
//! search of one queue's archived messages by id, key, tag, status, time range, body text and
//! offsets; a message's full history; and the replay of a selection (a POST through
//! `actions.rs`: confirmed with its count, refused on a read-only console, audited).
//!
//! Every query is the archive crate's own (`rmq_archive::search`, `status`), the same that
//! `rmq archive search|status` run. Work per view: one query of at most a page of rows, paged by
//! offset (`offset > the last one shown`, never `OFFSET n`); the message page reads its rows and
//! at most [`HISTORY_LIMIT`] log entries; the list of queues reads the archive's per-queue table
//! (no message is counted) and the lag of them all in one Redis pipeline.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use rmq_archive::fold::Status;
use rmq_archive::search::{self, Filter};
use rmq_archive::status::{self, QueueStatus};
use rmq_archive::store::Message;
use rmq_archive::when::format_ms;

use super::layout::{self, Nav};
use super::message::{body_view, is_text};
use super::queue::preview;
use super::{actions, fmt, App, Shared};
use crate::archive::Archive;
use crate::audit::Entry;

/// Page sizes offered, and the default.
const SIZES: [i64; 4] = [20, 50, 100, 200];
const DEFAULT_SIZE: i64 = 50;
/// Most log entries a message's history shows.
pub const HISTORY_LIMIT: i64 = 1000;
/// Most archived messages with one id that the message page lists.
const SAME_ID: i64 = 50;

/// The archive's routes; none without `--archive-db`.
pub fn routes(configured: bool) -> Router<Shared> {
    if !configured {
        return Router::new();
    }
    Router::new().route("/archive", get(page)).route("/archive/messages/{id}", get(message)).route("/archive/replay", post(actions::replay))
}

/// A selection of archived messages as the search form and the URLs carry it: the operator's
/// own words, checked and turned into a [`Filter`] by the archive crate (the same rules as
/// `rmq archive search`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub queue: String,
    pub id: String,
    pub key: String,
    pub tag: String,
    pub statuses: Vec<String>,
    /// Created at or after / before: `2h`, `2026-11-22`, `2026-11-22T10:00:00Z`, unix ms.
    pub since: String,
    pub until: String,
    /// The body (stored as text) contains this.
    pub body: String,
    pub from_offset: String,
    pub to_offset: String,
}

impl Selection {
    /// From form or query pairs (other names are ignored).
    pub fn from_pairs(pairs: &[(String, String)]) -> Selection {
        let mut s = Selection::default();
        for (k, v) in pairs {
            let t = v.trim().to_string();
            match k.as_str() {
                "queue" => s.queue = t,
                "id" => s.id = t,
                "key" => s.key = t,
                "tag" => s.tag = t,
                "status" if !t.is_empty() && !s.statuses.contains(&t) => s.statuses.push(t),
                "since" => s.since = t,
                "until" => s.until = t,
                // Spaces may be what is searched for.
                "body" => s.body = v.clone(),
                "from_offset" => s.from_offset = t,
                "to_offset" => s.to_offset = t,
                _ => {}
            }
        }
        s
    }

    /// The fields given, as (name, value) pairs (a status once per value).
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        let mut p = vec![("queue", self.queue.as_str()), ("id", &self.id), ("key", &self.key), ("tag", &self.tag)];
        p.extend(self.statuses.iter().map(|s| ("status", s.as_str())));
        p.extend([
            ("since", self.since.as_str()),
            ("until", &self.until),
            ("body", &self.body),
            ("from_offset", &self.from_offset),
            ("to_offset", &self.to_offset),
        ]);
        p.retain(|(_, v)| !v.is_empty());
        p
    }

    /// `?queue=…&…` with `extra` pairs after the selection's.
    pub fn query(&self, extra: &[(&str, &str)]) -> String {
        let mut p = self.pairs();
        p.extend_from_slice(extra);
        fmt::query(&p)
    }

    /// The filter, or what is wrong with the selection.
    pub fn filter(&self) -> Result<Filter, String> {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let offset = |s: &str, name: &str| -> Result<Option<i64>, String> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse().map(Some).map_err(|_| format!("{name}: {s:?} is not a whole number"))
        };
        let args = rmq_archive::cli::FilterArgs {
            queue: self.queue.clone(),
            id: opt(&self.id),
            key: opt(&self.key),
            tag: opt(&self.tag),
            status: self.statuses.clone(),
            since: opt(&self.since),
            until: opt(&self.until),
            body_contains: opt(&self.body),
            from_offset: offset(&self.from_offset, "from_offset")?,
            to_offset: offset(&self.to_offset, "to_offset")?,
        };
        rmq_archive::cli::filter_of(&args).map_err(|e| e.to_string())
    }

    /// The criteria besides the queue, for the audit log (`status=failed since=2h`).
    pub fn describe(&self) -> String {
        self.pairs().iter().filter(|(k, _)| *k != "queue").map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

/// The query string's pairs.
fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

fn get_pair<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A failed read of the archive database.
pub fn db_error(app: &App, e: rmq_archive::Error) -> Response {
    tracing::warn!("archive: {e}");
    layout::error_page(app, StatusCode::SERVICE_UNAVAILABLE, "Archive", &format!("The archive database: {e}"))
}

fn not_configured(app: &App) -> Response {
    layout::error_page(app, StatusCode::NOT_FOUND, "Archive", "This console has no archive: start it with --archive-db URL.")
}

/// `GET /archive`: the archived queues, or a search of one queue.
pub async fn page(State(app): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    let Some(archive) = &app.archive else { return not_configured(&app) };
    let pairs = query_pairs(raw);
    let sel = Selection::from_pairs(&pairs);
    let done = get_pair(&pairs, "done").and_then(|d| d.parse().ok()).and_then(|s| app.audit.as_ref()?.get(s));
    if sel.queue.is_empty() {
        return queues(&app, archive, done).await;
    }
    let size = get_pair(&pairs, "size").and_then(|s| s.parse().ok()).filter(|s| SIZES.contains(s)).unwrap_or(DEFAULT_SIZE);
    let after = get_pair(&pairs, "after").and_then(|s| s.parse::<i64>().ok());
    let filter = match sel.filter() {
        Ok(f) => f,
        Err(e) => {
            let body = html! {
                (heading(Some(&sel.queue)))
                (search_form(&sel, size))
                p.error { (e) }
            };
            return layout::html_response(StatusCode::BAD_REQUEST, layout::page(&app, "Archive", Nav::Archive, body));
        }
    };
    let mut rows = match search::find(&archive.db, &filter, after, size + 1).await {
        Ok(r) => r,
        Err(e) => return db_error(&app, e),
    };
    let more = rows.len() as i64 > size;
    rows.truncate(size as usize);
    let size_s = size.to_string();
    let size_q = if size == DEFAULT_SIZE { "" } else { size_s.as_str() };
    let body = html! {
        @if let Some(e) = &done { (layout::notice(e)) }
        (heading(Some(&sel.queue)))
        (search_form(&sel, size))
        table.archive {
            thead { tr { th.n { "Offset" } th { "Id" } th { "Status" } th { "Created" } th { "Tag" } th { "Key" } th.n { "Attempts" } th { "Last error" } th { "Body" } } }
            tbody {
                @for m in &rows {
                    tr {
                        td.n { (m.offset) }
                        td.id { a href=(fmt::archive_message_url(&m.queue, &m.id, Some(m.offset))) { (m.id) } }
                        td { span class={ "badge st-" (m.status) } { (m.status) } }
                        td { (m.create_time) }
                        td { (m.tag) }
                        td { (m.key) }
                        td.n { (m.attempts) }
                        td { @if let Some(e) = &m.error { (e) } }
                        td.body { (body_preview(m)) }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="9" .muted { "No archived message matches." } }
                }
            }
        }
        nav.pager {
            @if after.is_some() { a href={ "/archive" (sel.query(&[("size", size_q)])) } { "← first page" } }
            span {
                (rows.len()) " message" @if rows.len() != 1 { "s" }
                @if let (Some(first), Some(last)) = (rows.first(), rows.last()) { ", offsets " (first.offset) " to " (last.offset) }
            }
            @if more {
                @if let Some(last) = rows.last() {
                    a href={ "/archive" (sel.query(&[("size", size_q), ("after", &last.offset.to_string())])) } { "next →" }
                }
            }
        }
        @if !app.read_only && !rows.is_empty() { (replay_form(&app, &sel)) }
    };
    layout::html_response(StatusCode::OK, layout::page(&app, &format!("Archive of {}", sel.queue), Nav::Archive, body))
}

/// The start of a body for the list: text, or a note for binary and missing ones.
fn body_preview(m: &Message) -> Markup {
    match (&m.body, m.body_encoding.as_deref()) {
        (None, _) => html! { span.muted { "(not archived)" } },
        (Some(_), Some("base64")) => match m.body_bytes() {
            Ok(Some(b)) => html! { code { (preview(&b, 80)) } },
            _ => html! { span.muted { "(binary)" } },
        },
        (Some(t), _) => html! { code { (preview(t.as_bytes(), 80)) } },
    }
}

fn heading(queue: Option<&str>) -> Markup {
    html! {
        h1 {
            @match queue {
                Some(q) => { a href="/archive" { "Archive" } " / " (q) " " a.small href=(fmt::queue_url(q)) title="the queue in Redis now" { "(live queue)" } }
                None => { "Archive" }
            }
        }
    }
}

fn search_form(sel: &Selection, size: i64) -> Markup {
    let field = |label: &str, name: &str, value: &str, hint: &str| {
        html! { label { span { (label) } input name=(name) value=(value) placeholder=(hint); } }
    };
    html! {
        form.search method="get" action="/archive" {
            div.fields {
                label { span { "Queue" } input name="queue" value=(sel.queue) required; }
                (field("Id", "id", &sel.id, "message id"))
                (field("Key", "key", &sel.key, ""))
                (field("Tag", "tag", &sel.tag, ""))
                (field("Created since", "since", &sel.since, "2h, 7d, 2026-11-22, 2026-11-22T10:00:00Z"))
                (field("Created before", "until", &sel.until, "same forms"))
                (field("Body contains", "body", &sel.body, "text, case-sensitive"))
                (field("Offsets from", "from_offset", &sel.from_offset, ""))
                (field("Offsets up to", "to_offset", &sel.to_offset, ""))
            }
            fieldset.statuses {
                legend { "Status (none ticked: any)" }
                @for st in Status::ALL {
                    label { input type="checkbox" name="status" value=(st.as_str()) checked[sel.statuses.iter().any(|s| s == st.as_str())]; " " (st.as_str()) }
                }
            }
            div.buttons {
                label { "Per page " select name="size" { @for s in SIZES { option value=(s) selected[s == size] { (s) } } } }
                button.primary { "Search" }
            }
        }
    }
}

/// The replay of everything the search matches.
fn replay_form(app: &App, sel: &Selection) -> Markup {
    html! {
        section.actions {
            h2 { "Replay" }
            details {
                summary { "Replay every message this search matches (all pages)…" }
                form method="post" action="/archive/replay" {
                    (layout::csrf(app))
                    @for (k, v) in sel.pairs() { input type="hidden" name=(k) value=(v); }
                    (replay_fields(&sel.queue))
                    button { "Replay…" }
                }
            }
        }
    }
}

/// The target queue and run name of a replay form.
fn replay_fields(queue: &str) -> Markup {
    html! {
        label { "To queue " input name="to" placeholder=(queue); span.muted { " (empty: back to " (queue) ")" } }
        label { "Run name " input name="run" value="replay"; }
        p.muted {
            "Each message is pushed again as a new message with its body, tag, key and headers, plus "
            code { "replay-of" } " headers naming the original. Its id comes from the original and the run name: "
            "the same replay run again within the target queue's dedup window pushes nothing twice; another run name pushes again. "
            "The console replays up to " (fmt::count(actions::MAX_REPLAY)) " messages at once (more: " code { "rmq archive replay" } ")."
        }
    }
}

/// The list of archived queues: events saved, lag, gaps, last warning.
async fn queues(app: &App, archive: &Archive, done: Option<Entry>) -> Response {
    let mut rows: Vec<QueueStatus> = match status::archived_queues(&archive.db).await {
        Ok(m) => m.into_values().collect(),
        Err(e) => return db_error(app, e),
    };
    let lag_error = status::add_lag(&archive.source, &mut rows).await.err();
    let body = html! {
        @if let Some(e) = &done { (layout::notice(e)) }
        (heading(None))
        p.muted { "Every message of the archived queues, in " code { (archive.shown()) } " (written by " code { "rmq archive run" } ", group " code { (archive.group()) } ")." }
        (search_form(&Selection::default(), DEFAULT_SIZE))
        h2 { "Archived queues" }
        @if let Some(e) = lag_error { p.error { "Redis did not tell the lag: " (e) } }
        table.archived {
            thead { tr { th { "Queue" } th.n { "Entries saved" } th.n { "Lag" } th.n { "Gaps" } th.n { "Entries lost" } th { "Last saved" } th { "Last warning" } } }
            tbody {
                @for q in &rows {
                    tr class=[(q.gaps > 0).then_some("failed")] {
                        td.name { a href={ "/archive" (fmt::query(&[("queue", &q.queue)])) } { (q.queue) } }
                        td.n { (fmt::count(q.events.max(0) as u64)) }
                        td.n { @match q.lag { Some(l) => { (fmt::count(l)) }, None => { span.muted title="no log, or Redis did not tell" { "?" } } } }
                        td.n { (q.gaps) }
                        td.n { (fmt::count(q.gap_entries.max(0) as u64)) }
                        td { (q.last_saved.clone().unwrap_or_default()) }
                        td { @if let (Some(w), Some(t)) = (&q.last_warning, &q.last_warning_time) { span.muted { (t) } " " (w) } }
                    }
                }
                @if rows.is_empty() { tr { td colspan="7" .muted { "No queue archived yet." } } }
            }
        }
    };
    layout::html_response(StatusCode::OK, layout::page(app, "Archive", Nav::Archive, body))
}

/// `GET /archive/messages/{id}?queue=Q[&offset=N]`: an archived message, its body and its full
/// history. Without an offset, the latest message with that id (others are listed).
pub async fn message(State(app): State<Shared>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let Some(archive) = &app.archive else { return not_configured(&app) };
    let pairs = query_pairs(raw);
    let queue = get_pair(&pairs, "queue").unwrap_or("").trim().to_string();
    if !rmq_archive::source::valid_queue(&queue) {
        return layout::error_page(&app, StatusCode::BAD_REQUEST, "Archive", "Which queue? (queue=NAME is needed)");
    }
    let offset = get_pair(&pairs, "offset").and_then(|o| o.parse::<i64>().ok());
    let view = get_pair(&pairs, "view").unwrap_or("");
    let mut filter = Filter { queue: queue.clone(), id: Some(id.clone()), ..Default::default() };
    let same_id = match search::find(&archive.db, &filter, None, SAME_ID).await {
        Ok(r) => r,
        Err(e) => return db_error(&app, e),
    };
    let wanted = match offset {
        None => same_id.last().cloned(),
        Some(o) => match same_id.iter().find(|m| m.offset == o) {
            Some(m) => Some(m.clone()),
            // An id given to more messages than listed: that one by its offset.
            None => {
                filter.from_offset = Some(o);
                filter.to_offset = Some(o);
                match search::find(&archive.db, &filter, None, 1).await {
                    Ok(mut r) => r.pop(),
                    Err(e) => return db_error(&app, e),
                }
            }
        },
    };
    let Some(m) = wanted else {
        let body = html! {
            (heading(Some(&queue)))
            p { "No archived message with id " code { (id) } @if let Some(o) = offset { " at offset " (o) } " in this queue." }
            p { a href={ (fmt::queue_url(&queue)) "/find" (fmt::query(&[("id", &id)])) } { "Look for it in the queue now" } }
        };
        return layout::html_response(StatusCode::NOT_FOUND, layout::page(&app, &id, Nav::Archive, body));
    };
    let events = match search::history(&archive.db, &queue, m.offset, HISTORY_LIMIT + 1).await {
        Ok(e) => e,
        Err(e) => return db_error(&app, e),
    };
    let cut_history = events.len() as i64 > HISTORY_LIMIT;
    let body_bytes = m.body_bytes().ok().flatten();
    let here = |v: &str| format!("{}&view={v}", fmt::archive_message_url(&queue, &m.id, Some(m.offset)));
    let body = html! {
        h1 { a href="/archive" { "Archive" } " / " a href={ "/archive" (fmt::query(&[("queue", &queue)])) } { (queue) } " / " (m.id) }
        @if same_id.len() > 1 {
            p.muted { "The id " code { (m.id) } " was given to " (same_id.len()) " archived messages; this is the one at offset " (m.offset) ". The others: "
                @for o in same_id.iter().filter(|o| o.offset != m.offset) { a href=(fmt::archive_message_url(&queue, &o.id, Some(o.offset))) { (o.offset) } " " } }
        }
        table.fields {
            tr { th { "Status" } td { span class={ "badge st-" (m.status) } { (m.status) } } }
            tr { th { "Id" } td { code { (m.id) } } }
            tr { th { "Offset" } td { (m.offset) } }
            tr { th { "Tag" } td { (m.tag) } }
            tr { th { "Key" } td { (m.key) } }
            tr { th { "Attempts" } td { (m.attempts) } }
            tr { th { "Deliveries" } td { (m.deliveries) } }
            tr { th { "Created" } td { (m.create_time) } }
            tr { th { "Last change" } td { (m.update_time) " (" (m.last_event) ")" } }
            @if let Some(d) = &m.due_time { tr { th { "Due" } td { (d) } } }
            @if let Some(d) = &m.deadline_time { tr { th { "Lock deadline" } td { (d) } } }
            @if let Some(c) = &m.consumer { tr { th { "Consumer" } td { (c) } } }
            @if let Some(e) = &m.error { tr { th { "Last error" } td.error { (e) } } }
        }
        h2 { "Headers" }
        @if m.headers.is_empty() { p.muted { "None." } } @else {
            table.fields { @for (k, v) in &m.headers { tr { th { (k) } td { (v) } } } }
        }
        @match &body_bytes {
            Some(b) => {
                @let (shown, text, cut) = body_view(b, view);
                h2 { "Body " span.muted { "(" (fmt::count(b.len() as u64)) " bytes)" } }
                nav.tabs.small {
                    @if serde_json::from_slice::<serde_json::Value>(b).is_ok() { a href=(here("json")) class=[(shown == "json").then_some("on")] { "JSON" } }
                    @if std::str::from_utf8(b).is_ok_and(is_text) { a href=(here("text")) class=[(shown == "text").then_some("on")] { "Text" } }
                    a href=(here("hex")) class=[(shown == "hex").then_some("on")] { "Hex" }
                }
                pre.body { (text) }
                @if cut { p.muted { "Cut: only the start of the body is shown." } }
            }
            None => {
                h2 { "Body" }
                p.muted { "Not archived: the log was trimmed before the archive saw this message's push." }
            }
        }
        h2 { "History" }
        table.history {
            thead { tr { th.n { "#" } th { "Time" } th { "Event" } th.n { "Attempt" } th { "Consumer" } th { "Due" } th { "Lock deadline" } th { "Error" } th { "Log entry" } } }
            tbody {
                @for (i, e) in events.iter().take(HISTORY_LIMIT as usize).enumerate() {
                    tr class=[matches!(e.event.as_str(), "fail" | "error").then_some("failed")] {
                        td.n { (i + 1) }
                        td { (format_ms(e.time_ms)) }
                        td { (e.event) }
                        td.n { @if let Some(a) = e.attempt { (a) } }
                        td { @if let Some(c) = &e.consumer { (c) } }
                        td { @if let Some(d) = e.due_ms { (format_ms(d)) } }
                        td { @if let Some(d) = e.deadline_ms { (format_ms(d)) } }
                        td { @if let Some(x) = &e.error { (x) } }
                        td.muted { (e.pos.ms) "-" (e.pos.seq) }
                    }
                }
                @if events.is_empty() { tr { td colspan="9" .muted { "No log entry of this message is archived." } } }
            }
        }
        @if cut_history { p.muted { "Only the first " (HISTORY_LIMIT) " entries are shown." } }
        p { a href={ (fmt::queue_url(&queue)) "/find" (fmt::query(&[("id", &m.id)])) } { "Look for it in the queue now" } }
        @if !app.read_only && body_bytes.is_some() {
            section.actions {
                h2 { "Replay" }
                details {
                    summary { "Replay this message…" }
                    form method="post" action="/archive/replay" {
                        (layout::csrf(&app))
                        input type="hidden" name="queue" value=(queue);
                        input type="hidden" name="id" value=(m.id);
                        input type="hidden" name="from_offset" value=(m.offset);
                        input type="hidden" name="to_offset" value=(m.offset);
                        (replay_fields(&queue))
                        button { "Replay…" }
                    }
                }
            }
        }
    };
    layout::html_response(StatusCode::OK, layout::page(&app, &m.id, Nav::Archive, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_selection_round_trips_through_its_query() {
        let s = Selection::from_pairs(&pairs(&[
            ("queue", "orders"),
            ("status", "failed"),
            ("status", "errored"),
            ("status", "failed"),
            ("since", " 2h "),
            ("body", " refund"),
            ("size", "20"),
        ]));
        assert_eq!(s.statuses, ["failed", "errored"]);
        assert_eq!((s.since.as_str(), s.body.as_str()), ("2h", " refund"));
        assert_eq!(s.query(&[]), "?queue=orders&status=failed&status=errored&since=2h&body=+refund");
        let back: Vec<(String, String)> = form_urlencoded::parse(&s.query(&[]).as_bytes()[1..]).into_owned().collect();
        assert_eq!(Selection::from_pairs(&back), s);
        assert_eq!(s.describe(), "status=failed status=errored since=2h body= refund");
    }

    #[test]
    fn a_bad_selection_says_what_is_wrong() {
        let bad = |p: &[(&str, &str)]| Selection::from_pairs(&pairs(p)).filter().unwrap_err();
        assert!(bad(&[("queue", "a b")]).contains("not a valid queue name"));
        assert!(bad(&[("queue", "q"), ("status", "lost")]).contains("is not one of"));
        assert!(bad(&[("queue", "q"), ("since", "soonish")]).contains("since"));
        assert!(bad(&[("queue", "q"), ("from_offset", "x")]).contains("from_offset"));
        let f = Selection::from_pairs(&pairs(&[("queue", "q"), ("status", "failed"), ("to_offset", "9")])).filter().unwrap();
        assert_eq!((f.statuses, f.to_offset), (vec![Status::Failed], Some(9)));
    }
}
