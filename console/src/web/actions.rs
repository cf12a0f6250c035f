//! The console's actions: every one a POST with the form token, refused on a read-only console,
//! recorded in the audit log. Requeue, delete, purge and recover first show a confirmation page
//! that says how many messages they touch; the confirmed form comes back with `confirmed=N`.
//! After an action the browser is sent back (303) to the queue page, which shows the outcome.
//! The archive's replay (`POST /archive/replay`) goes the same way: confirmed with the number
//! of archived messages it pushes again, then back to the archive page.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::html;

use rmq_archive::replay::ReplayOptions;
use rmq_archive::search;

use super::access::{cross_site, Who};
use super::archive::Selection;
use super::layout::{self, Nav, STATES};
use super::queue::read_info;
use super::{fmt, App, Shared};
use crate::audit::Entry;
use crate::backend::RedisError;
use crate::reply;
use crate::snapshot::unix_ms;

/// Most ids one request may name.
const MAX_IDS: usize = 1000;

/// The submitted form, in order, repeated names kept.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect()
    }
}

/// What an action will do.
enum Plan {
    Requeue(Vec<String>),
    Delete(Vec<String>),
    Purge(String),
    Recover(Vec<&'static str>),
    Push { args: Vec<Vec<u8>>, summary: String },
    Settings(Vec<(String, String)>),
    Pause(bool),
}

impl Plan {
    fn name(&self) -> &'static str {
        match self {
            Plan::Requeue(_) => "requeue",
            Plan::Delete(_) => "delete",
            Plan::Purge(_) => "purge",
            Plan::Recover(_) => "recover",
            Plan::Push { .. } => "push",
            Plan::Settings(_) => "settings",
            Plan::Pause(true) => "pause",
            Plan::Pause(false) => "resume",
        }
    }

    fn needs_confirmation(&self) -> bool {
        matches!(self, Plan::Requeue(_) | Plan::Delete(_) | Plan::Purge(_) | Plan::Recover(_))
    }

    fn ids(&self) -> Vec<String> {
        match self {
            Plan::Requeue(ids) | Plan::Delete(ids) => ids.clone(),
            _ => Vec::new(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Plan::Purge(s) => s.clone(),
            Plan::Recover(parts) => parts.join(" "),
            Plan::Push { summary, .. } => summary.clone(),
            Plan::Settings(pairs) => pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
            _ => String::new(),
        }
    }
}

fn ids_of(f: &Fields) -> Result<Vec<String>, String> {
    let ids = f.all("id");
    if ids.is_empty() {
        return Err("Select at least one message.".into());
    }
    if ids.len() > MAX_IDS {
        return Err(format!("At most {MAX_IDS} messages at once."));
    }
    Ok(ids)
}

fn parse(action: &str, f: &Fields) -> Result<Plan, String> {
    match action {
        "requeue" => Ok(Plan::Requeue(ids_of(f)?)),
        "delete" => Ok(Plan::Delete(ids_of(f)?)),
        "purge" => {
            let s = f.get("state").unwrap_or("");
            if STATES.contains(&s) || s == "all" {
                Ok(Plan::Purge(s.to_string()))
            } else {
                Err(format!("Cannot purge {s:?}: name a state."))
            }
        }
        "recover" => {
            let asked = f.all("part");
            let parts: Vec<&'static str> = ["expired", "failed", "errors"].into_iter().filter(|p| asked.iter().any(|a| a == p)).collect();
            if parts.is_empty() {
                return Err("Choose what to recover.".into());
            }
            Ok(Plan::Recover(parts))
        }
        "push" => push_plan(f),
        "settings" => {
            let mut pairs = Vec::new();
            for (k, v) in &f.0 {
                let Some(name) = k.strip_prefix("set.") else {
                    continue;
                };
                let v = v.trim();
                if f.get(&format!("was.{name}")).map(str::trim) != Some(v) {
                    pairs.push((name.to_string(), v.to_string()));
                }
            }
            Ok(Plan::Settings(pairs))
        }
        "pause" => Ok(Plan::Pause(true)),
        "resume" => Ok(Plan::Pause(false)),
        _ => Err(format!("No such action: {action}.")),
    }
}

fn push_plan(f: &Fields) -> Result<Plan, String> {
    let body = f.get("body").unwrap_or("");
    let mut args = vec![body.as_bytes().to_vec()];
    let mut summary = format!("{} bytes", body.len());
    for (field, kw) in [("tag", "TAG"), ("key", "KEY")] {
        let v = f.get(field).unwrap_or("").trim();
        if !v.is_empty() {
            args.push(kw.as_bytes().to_vec());
            args.push(v.as_bytes().to_vec());
            summary += &format!(" {field}={v}");
        }
    }
    for line in f.get("headers").unwrap_or("").lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("Header {line:?}: write name=value."));
        };
        args.push(b"HEADER".to_vec());
        args.push(k.trim().as_bytes().to_vec());
        args.push(v.trim().as_bytes().to_vec());
    }
    let delay = f.get("delay").unwrap_or("").trim();
    if !delay.is_empty() {
        if delay.parse::<u64>().is_err() {
            return Err("Delay: a whole number of milliseconds.".into());
        }
        args.push(b"DELAY".to_vec());
        args.push(delay.as_bytes().to_vec());
        summary += &format!(" delay={delay}ms");
    }
    Ok(Plan::Push { args, summary })
}

fn bad(app: &App, status: StatusCode, text: &str) -> Response {
    layout::error_page(app, status, "Not done", text)
}

pub async fn act(
    State(app): State<Shared>,
    Path((q, action)): Path<(String, String)>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields(form);
    if let Some(refused) = refuse(&app, &headers, &f) {
        return refused;
    }
    let plan = match parse(&action, &f) {
        Ok(p) => p,
        Err(e) => return bad(&app, StatusCode::BAD_REQUEST, &e),
    };
    let back = f.get("back").or(f.get("state")).filter(|s| STATES.contains(s)).unwrap_or("").to_string();
    let confirmed = match f.get("confirmed") {
        Some(n) => n.parse::<u64>().ok(),
        None if plan.needs_confirmation() => return confirm(&app, &q, &plan, &f).await,
        None => None,
    };
    if let Plan::Settings(pairs) = &plan {
        if pairs.is_empty() {
            return redirect(&q, &back, None);
        }
    }
    let result = run(&app, &q, &plan).await;
    let mut ids = plan.ids();
    let (affected, outcome) = match &result {
        Ok(d) => {
            ids.extend(d.pushed.clone());
            (d.affected, "ok".to_string())
        }
        Err(e) => (None, e.text.clone()),
    };
    let entry = Entry {
        seq: 0,
        time: unix_ms(),
        who: who.user,
        from: who.from,
        action: plan.name().to_string(),
        queue: q.clone(),
        ids,
        detail: plan.detail(),
        confirmed,
        affected,
        outcome,
    };
    let ran = match &result {
        Ok(_) => "it succeeded".to_string(),
        Err(e) => format!("Redis refused it: {}", e.text),
    };
    record(&app, entry, &ran, |seq| redirect(&q, &back, Some(seq)))
}

/// The refusal of an action on a read-only console or from another site, or None.
fn refuse(app: &Shared, headers: &HeaderMap, f: &Fields) -> Option<Response> {
    if app.read_only {
        return Some(bad(app, StatusCode::FORBIDDEN, "This console is read-only (--read-only): it changes nothing."));
    }
    if let Some(why) = cross_site(app, headers, f.get("csrf")) {
        return Some(bad(app, StatusCode::FORBIDDEN, &format!("Refused as a cross-site request: {why}.")));
    }
    None
}

/// Writes an action that ran to the audit log, then answers with `then(its number)`, or with a
/// page that says the log could not be written (`ran`: how the action went).
fn record(app: &App, entry: Entry, ran: &str, then: impl FnOnce(u64) -> Response) -> Response {
    tracing::info!(action = %entry.action, queue = %entry.queue, who = %entry.who, outcome = %entry.outcome, "console action");
    let Some(audit) = &app.audit else {
        return bad(app, StatusCode::INTERNAL_SERVER_ERROR, "No audit log.");
    };
    match audit.append(entry) {
        Ok(e) => then(e.seq),
        Err(err) => {
            tracing::error!("audit log {}: {err}", audit.path().display());
            bad(app, StatusCode::INTERNAL_SERVER_ERROR, &format!("The action ran ({ran}), but the audit log could not be written: {err}."))
        }
    }
}

fn redirect(q: &str, back: &str, done: Option<u64>) -> Response {
    let done = done.map(|d| d.to_string()).unwrap_or_default();
    let to = format!("{}{}", fmt::queue_url(q), fmt::query(&[("state", back), ("done", &done)]));
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn id_args(ids: &[String]) -> Vec<Vec<u8>> {
    ids.iter().map(|i| i.as_bytes().to_vec()).collect()
}

/// What an action did.
#[derive(Default)]
struct Done {
    /// How many messages Redis changed, when it says.
    affected: Option<u64>,
    /// The id PUSH gave.
    pushed: Option<String>,
}

fn changed(n: u64) -> Done {
    Done { affected: Some(n), pushed: None }
}

async fn run(app: &App, q: &str, plan: &Plan) -> Result<Done, RedisError> {
    let r = &app.redis;
    match plan {
        Plan::Requeue(ids) => Ok(changed(reply::as_u64(r.call("requeue", Some(q), id_args(ids)).await?)?)),
        Plan::Delete(ids) => Ok(changed(reply::as_u64(r.call("del", Some(q), id_args(ids)).await?)?)),
        Plan::Purge(state) => Ok(changed(reply::as_u64(r.call("purge", Some(q), vec![state.to_uppercase().into_bytes()]).await?)?)),
        Plan::Recover(parts) => {
            let args = parts.iter().map(|p| p.to_uppercase().into_bytes()).collect();
            match r.call("recover", Some(q), args).await? {
                redis::Value::Array(v) => {
                    let mut n = 0;
                    for x in v {
                        n += reply::as_u64(x)?;
                    }
                    Ok(changed(n))
                }
                other => Err(RedisError::refused(format!("RECOVER replied {other:?}"))),
            }
        }
        Plan::Push { args, .. } => {
            let id = reply::as_string(r.call("push", Some(q), args.clone()).await?)?;
            Ok(Done { affected: Some(1), pushed: Some(id) })
        }
        Plan::Settings(pairs) => {
            let mut args = vec![b"SET".to_vec()];
            for (k, v) in pairs {
                args.push(k.as_bytes().to_vec());
                args.push(v.as_bytes().to_vec());
            }
            r.call("config", Some(q), args).await?;
            Ok(Done::default())
        }
        Plan::Pause(on) => {
            let v = if *on { "1" } else { "0" };
            r.call("config", Some(q), vec![b"SET".to_vec(), b"paused".to_vec(), v.as_bytes().to_vec()]).await?;
            Ok(Done::default())
        }
    }
}

/// The confirmation page: what will happen, to how many messages, and the same form again with
/// `confirmed` set.
async fn confirm(app: &App, q: &str, plan: &Plan, f: &Fields) -> Response {
    let stats = match read_info(app, q).await {
        Ok(i) => i.stats,
        Err(e) => return super::queue::redis_error(app, q, e),
    };
    let plural = |n: u64| if n == 1 { "message" } else { "messages" };
    let (count, what): (u64, String) = match plan {
        Plan::Requeue(ids) => {
            let n = ids.len() as u64;
            (
                n,
                format!(
                    "Requeue {n} {}: back to the end of the ready line (failed and errored ones start their attempts again).",
                    plural(n)
                ),
            )
        }
        Plan::Delete(ids) => {
            let n = ids.len() as u64;
            (n, format!("Delete {n} {} for good. This cannot be undone.", plural(n)))
        }
        Plan::Purge(state) => {
            let n = if state == "all" { stats.total() } else { stats.count(state) };
            (
                n,
                format!(
                    "Purge {}: delete all {} {} {} for good (settings and counters stay). This cannot be undone.",
                    layout::state_label(state).to_lowercase(),
                    fmt::count(n),
                    layout::state_label(state).to_lowercase(),
                    plural(n)
                ),
            )
        }
        Plan::Recover(parts) => {
            let mut n = 0;
            let mut said = Vec::new();
            for p in parts {
                match *p {
                    "expired" => {
                        said.push(format!("in-flight messages whose lock ran out (up to {} in flight)", fmt::count(stats.inflight)))
                    }
                    "failed" => {
                        n += stats.failed;
                        said.push(format!("{} failed", fmt::count(stats.failed)));
                    }
                    _ => {
                        n += stats.errors;
                        said.push(format!("{} errors", fmt::count(stats.errors)));
                    }
                }
            }
            if parts.contains(&"expired") {
                n += stats.inflight;
            }
            (n, format!("Recover: move {} back to ready.", said.join(", ")))
        }
        _ => (0, String::new()),
    };
    let back = fmt::queue_url(q);
    let back_state = f.get("back").or(f.get("state")).unwrap_or("");
    let ids = plan.ids();
    let body = html! {
        h1 { "Confirm: " (plan.name()) " in " (q) }
        p.confirm { (what) }
        @if !ids.is_empty() {
            ul.ids { @for id in ids.iter().take(50) { li { code { (id) } } } @if ids.len() > 50 { li { "… and " (ids.len() - 50) " more" } } }
        }
        form method="post" action={ (back) "/" (plan.name()) } {
            @for (k, v) in f.0.iter().filter(|(k, _)| k != "confirmed") {
                input type="hidden" name=(k) value=(v);
            }
            input type="hidden" name="confirmed" value=(count);
            button.danger.big { "Confirm: " (plan.name()) " " (fmt::count(count)) " " (plural(count)) }
            " "
            a href={ (back) (fmt::query(&[("state", back_state)])) } { "Cancel" }
        }
    };
    layout::html_response(StatusCode::OK, layout::page(app, "Confirm", Nav::Queues, body))
}

/// Most archived messages one replay from the console pushes (a request must end in reasonable
/// time; `rmq archive replay` has no such bound).
pub const MAX_REPLAY: u64 = 10_000;

/// `POST /archive/replay`: pushes the archived messages of a selection again (the archive
/// crate's replay, as `rmq archive replay` does). The first request shows a confirmation with
/// the number of messages; the confirmed one carries that number and runs only if the
/// selection still holds exactly that many. The confirmation pins the selection (relative
/// times become fixed ones, the offsets end at the last matching one), so messages archived
/// meanwhile do not join it.
pub async fn replay(
    State(app): State<Shared>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields(form);
    if let Some(refused) = refuse(&app, &headers, &f) {
        return refused;
    }
    let Some(archive) = &app.archive else {
        return bad(&app, StatusCode::NOT_FOUND, "This console has no archive (--archive-db).");
    };
    let sel = Selection::from_pairs(&f.0);
    let filter = match sel.filter() {
        Ok(f) => f,
        Err(e) => return bad(&app, StatusCode::BAD_REQUEST, &e),
    };
    let to = f.get("to").map(str::trim).filter(|t| !t.is_empty()).unwrap_or(&sel.queue).to_string();
    if !rmq_archive::source::valid_queue(&to) {
        return bad(&app, StatusCode::BAD_REQUEST, &format!("To queue {to:?}: not a valid queue name."));
    }
    let run = f.get("run").map(str::trim).filter(|r| !r.is_empty()).unwrap_or("replay").to_string();
    let (count, last) = match search::extent(&archive.db, &filter).await {
        Ok(x) => x,
        Err(e) => return super::archive::db_error(&app, e),
    };
    if count == 0 {
        return bad(&app, StatusCode::BAD_REQUEST, "No archived message matches this selection: nothing to replay.");
    }
    if count > MAX_REPLAY {
        return bad(
            &app,
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "This selection holds {} messages; the console replays up to {} at once. Narrow it (offsets, times), or run `rmq archive replay`.",
                fmt::count(count),
                fmt::count(MAX_REPLAY)
            ),
        );
    }
    let confirmed = f.get("confirmed").and_then(|n| n.parse::<u64>().ok());
    if confirmed != Some(count) {
        let mut pinned = sel.clone();
        if let Some(ms) = filter.since_ms {
            pinned.since = ms.to_string();
        }
        if let Some(ms) = filter.until_ms {
            pinned.until = ms.to_string();
        }
        if let Some(l) = last {
            pinned.to_offset = filter.to_offset.map_or(l, |t| t.min(l)).to_string();
        }
        return confirm_replay(&app, &pinned, &to, &run, count, confirmed);
    }
    let opts = ReplayOptions { filter, to: Some(to.clone()), dry_run: false, run_name: run.clone() };
    let mut ids = Vec::new();
    let result = rmq_archive::replay::replay(
        &archive.db,
        app.redis.as_ref(),
        &opts,
        |_| {},
        |m, sent| {
            if sent && ids.len() < MAX_IDS {
                ids.push(m.id.clone());
            }
        },
        |_| {},
    )
    .await;
    let criteria = sel.describe();
    let mut detail = format!("to {to}, run {run}{}{criteria}", if criteria.is_empty() { "" } else { ", " });
    let (affected, outcome) = match &result {
        Ok(r) => {
            detail += &format!("; {} already there, {} without body", r.already_there, r.skipped_without_body);
            (Some(r.sent - r.already_there), "ok".to_string())
        }
        Err(e) => (None, e.to_string()),
    };
    let entry = Entry {
        seq: 0,
        time: unix_ms(),
        who: who.user,
        from: who.from,
        action: "replay".to_string(),
        queue: sel.queue.clone(),
        ids,
        detail,
        confirmed,
        affected,
        outcome,
    };
    let ran = match &result {
        Ok(_) => "it succeeded".to_string(),
        Err(e) => format!("it failed: {e}"),
    };
    record(&app, entry, &ran, |seq| {
        let to = format!("/archive{}", sel.query(&[("done", &seq.to_string())]));
        (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
    })
}

/// The replay's confirmation: what will be pushed where, and the pinned selection again with
/// `confirmed` set. `before`: the count the operator had confirmed when the selection changed.
fn confirm_replay(app: &App, sel: &Selection, to: &str, run: &str, count: u64, before: Option<u64>) -> Response {
    let plural = if count == 1 { "message" } else { "messages" };
    let criteria = sel.describe();
    let body = html! {
        h1 { "Confirm: replay from the archive of " (sel.queue) }
        @if let Some(n) = before {
            div.banner.bad { "The selection changed since it was shown (" (fmt::count(n)) " then, " (fmt::count(count)) " now). Confirm again." }
        }
        p.confirm {
            "Replay " (fmt::count(count)) " archived " (plural) " of " (sel.queue) " to " (to)
            ": each is pushed again as a new message (a message whose body the archive never saw is skipped)."
        }
        p.muted { "Selection: queue " (sel.queue) @if !criteria.is_empty() { ", " (criteria) } ". Run name " code { (run) } "." }
        form method="post" action="/archive/replay" {
            (layout::csrf(app))
            @for (k, v) in sel.pairs() { input type="hidden" name=(k) value=(v); }
            input type="hidden" name="to" value=(to);
            input type="hidden" name="run" value=(run);
            input type="hidden" name="confirmed" value=(count);
            button.danger.big { "Confirm: replay " (fmt::count(count)) " " (plural) }
            " "
            a href={ "/archive" (sel.query(&[])) } { "Cancel" }
        }
    };
    layout::html_response(StatusCode::OK, layout::page(app, "Confirm", Nav::Archive, body))
}
