//! `rmq archive …`: the options (clap) and the commands. The `rmq` binary adds
//! [`ArchiveCmd`] as one subcommand and calls [`run`].

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::archiver::{self, RunConfig};
use crate::backend::{shutdown_signal, Backend};
use crate::db::{Db, DEFAULT_URL};
use crate::error::{Error, Result};
use crate::fold::Status;
use crate::names::Patterns;
use crate::replay::{self, ReplayOptions};
use crate::search::{self, Filter};
use crate::source::{valid_queue, Source};
use crate::status;
use crate::when::{now_ms, parse_duration, parse_time};

/// The SQL archive: every message of the followed queues, searchable and replayable.
#[derive(Subcommand, Debug, Clone)]
#[command(after_help = "Examples:\n  \
rmq archive run --queues 'orders,pay*' --db postgres://archive:secret@db1/archive\n  \
rmq archive status\n  \
rmq archive search --queue orders --id order-42\n  \
rmq archive replay --queue payments --status failed --since 1d --to payments-retry")]
pub enum ArchiveCmd {
    /// Archive the followed queues' logs into SQL until stopped (ctrl-c, SIGTERM).
    ///
    /// Several archivers in one group share the work; a restarted one saves first what it had
    /// read and not saved.
    Run(RunArgs),
    /// Create or upgrade the archive's tables, then exit.
    Migrate(MigrateArgs),
    /// Per queue: rows, last archived offset, lag in log entries, gaps found.
    Status(StatusArgs),
    /// Find archived messages: one line each, or JSON objects with --json.
    Search(SearchArgs),
    /// Push archived messages again (to their queue, or --to another).
    Replay(ReplayArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// The archive database: sqlite://FILE, postgres://user:pass@host/db or
    /// mysql://user:pass@host/db (MariaDB too).
    #[arg(long, env = "RMQ_ARCHIVE_DB", default_value = DEFAULT_URL)]
    pub db: String,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
rmq archive migrate                                          # ./rmq-archive.db\n  \
rmq archive migrate --db postgres://archive:secret@db1/archive")]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Args, Debug, Clone)]
pub struct GroupArgs {
    /// The consumer group on each queue's log; archivers in one group share the work.
    #[arg(long, default_value = "rmq-archive")]
    pub group: String,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
rmq archive run --queues 'orders,pay*'                      # into ./rmq-archive.db (SQLite)\n  \
rmq archive run --queues orders --db mysql://archive:secret@db1/archive --retain 30d\n  \
RMQ_LOG=info rmq archive run --consumer archiver-2           # every queue whose log is on")]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub group: GroupArgs,
    /// Queues to follow: names and patterns (`*`, `?`), comma-separated, e.g. 'orders,pay*'.
    /// Their log is turned on. Without it: every queue whose log is on.
    #[arg(long)]
    pub queues: Option<String>,
    /// This archiver's name in the group (default: the host name). A restarted archiver
    /// with the same name saves first what it had read and not saved.
    #[arg(long)]
    pub consumer: Option<String>,
    /// Log entries per transaction, at most.
    #[arg(long, default_value_t = 10000)]
    pub batch: usize,
    /// The longest an entry waits before its batch is written.
    #[arg(long, default_value = "200ms", value_parser = duration)]
    pub batch_time: Duration,
    /// Bytes of log entries per transaction, about (bounds memory with --batch).
    #[arg(long, default_value_t = 16 << 20)]
    pub batch_bytes: usize,
    /// Delete rows untouched for longer than this (e.g. 30d), a few hundred at a time.
    #[arg(long, value_parser = duration)]
    pub retain: Option<Duration>,
    /// Take over log entries that another archiver read and left unsaved this long.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub claim_idle: Duration,
    /// How often to look for new queues.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub discover_every: Duration,
    /// The longest pause between two reads of an idle queue.
    #[arg(long, default_value = "500ms", value_parser = duration)]
    pub poll_max: Duration,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
rmq archive status\n  \
rmq archive status --json --db postgres://archive:secret@db1/archive")]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub group: GroupArgs,
}

#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// The queue.
    #[arg(long)]
    pub queue: String,
    /// The message id.
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    /// Statuses, comma-separated: ready, delayed, inflight, acked, retried, failed, errored,
    /// deleted, purged.
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Created at or after: 2026-11-22, 2026-11-22T10:00:00Z, unix ms, or an age (2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// The body contains this text (case-sensitive; bodies stored as text only).
    #[arg(long)]
    pub body_contains: Option<String>,
    /// Offsets from this one …
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// … up to this one (inclusive).
    #[arg(long)]
    pub to_offset: Option<i64>,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
rmq archive search --queue orders --id order-42\n  \
rmq archive search --queue orders --status failed,errored --since 2026-11-22 --until 2026-11-23\n  \
rmq archive search --queue orders --key cust-7 --body-contains refund --json")]
pub struct SearchArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many messages, oldest offset first.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
rmq archive replay --queue payments --status failed --since 1d --to payments-retry --dry-run\n  \
rmq archive replay --queue payments --status failed --since 1d --to payments-retry\n  \
rmq archive replay --queue orders --from-offset 1200 --to-offset 1300")]
pub struct ReplayArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Push the copies to this queue instead of the original one.
    #[arg(long)]
    pub to: Option<String>,
    /// Show what would be pushed; push nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Name of this replay: part of each copy's id, so the same replay run again within the
    /// target's dedup window pushes nothing twice. Another name replays again.
    #[arg(long, default_value = "replay")]
    pub run_name: String,
}

fn duration(s: &str) -> std::result::Result<Duration, String> {
    parse_duration(s)
}

/// Runs an `rmq archive` command on the Redis that `redis` reaches. `json`: the CLI's global
/// --json.
pub async fn run(redis: Arc<dyn Backend>, json: bool, cmd: &ArchiveCmd) -> Result<ExitCode> {
    match cmd {
        ArchiveCmd::Run(a) => run_archiver(redis, json, a).await,
        ArchiveCmd::Migrate(a) => migrate(json, &a.db).await,
        ArchiveCmd::Status(a) => show_status(redis, json, a).await,
        ArchiveCmd::Search(a) => search_cmd(json, a).await,
        ArchiveCmd::Replay(a) => replay_cmd(redis, json, a).await,
    }
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).expect("json"));
}

async fn run_archiver(redis: Arc<dyn Backend>, json: bool, a: &RunArgs) -> Result<ExitCode> {
    if a.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let db = Db::open(&a.db.db, true).await?;
    let consumer = a.consumer.clone().unwrap_or_else(archiver::default_consumer);
    let shown_redis = crate::db::redact(&redis.url());
    let source = Source::new(redis, &a.group.group, &consumer);
    let cfg = RunConfig {
        patterns: Patterns::parse(a.queues.as_deref()),
        batch_max: a.batch,
        batch_bytes: a.batch_bytes.max(1),
        batch_time: a.batch_time,
        retain: a.retain,
        claim_idle: a.claim_idle,
        discover_every: a.discover_every,
        poll_max: a.poll_max.max(Duration::from_millis(1)),
        ..Default::default()
    };
    let what = a.queues.as_deref().map_or("every queue whose log is on".to_string(), |q| format!("queues {q}"));
    if !json {
        eprintln!(
            "rmq archive: archiving {what} from {} into {} (group {}, consumer {consumer}); ctrl-c stops",
            shown_redis, db.shown, a.group.group
        );
    }
    let report = archiver::run(source, db, cfg, shutdown_signal()).await?;
    if json {
        print_json(&report);
    } else {
        eprintln!(
            "rmq archive: stopped; saved {} log entries in {} batches ({} database retries, {} warnings)",
            report.events, report.batches, report.db_retries, report.warnings
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate(json: bool, a: &DbArgs) -> Result<ExitCode> {
    let db = Db::open(&a.db, true).await?;
    let applied = db.migrate().await?;
    let version = db.applied().await?.last().copied().unwrap_or(0);
    if json {
        let applied: Vec<_> = applied.iter().map(|(v, n)| serde_json::json!({ "version": v, "name": n })).collect();
        print_json(&serde_json::json!({ "database": db.shown, "version": version, "applied": applied }));
    } else {
        for (v, n) in &applied {
            println!("applied schema version {v} ({n})");
        }
        println!("{}: schema version {version}, up to date", db.shown);
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_status(redis: Arc<dyn Backend>, json: bool, a: &StatusArgs) -> Result<ExitCode> {
    let db = Db::open(&a.db.db, false).await?;
    db.check_schema().await?;
    let source = Source::new(redis, &a.group.group, "status");
    let rows = status::status(&db, Some(&source)).await?;
    if json {
        print_json(&rows);
    } else if rows.is_empty() {
        println!("{}: no queue archived yet", db.shown);
    } else {
        print!("{}", status::table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// The filter the options describe (times relative to now), or why they are wrong.
pub fn filter_of(f: &FilterArgs) -> Result<Filter> {
    if !valid_queue(&f.queue) {
        return Err(Error::Invalid(format!("--queue {:?} is not a valid queue name", f.queue)));
    }
    let now = now_ms();
    let mut statuses = Vec::new();
    for s in &f.status {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() {
            continue;
        }
        statuses.push(Status::parse(&s).ok_or_else(|| {
            let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            Error::Invalid(format!("--status {s:?} is not one of {}", all.join(", ")))
        })?);
    }
    let time = |s: &Option<String>, name: &str| -> Result<Option<i64>> {
        s.as_deref().map(|t| parse_time(t, now).map_err(|e| Error::Invalid(format!("--{name}: {e}")))).transpose()
    };
    Ok(Filter {
        queue: f.queue.clone(),
        id: f.id.clone(),
        key: f.key.clone(),
        tag: f.tag.clone(),
        statuses,
        since_ms: time(&f.since, "since")?,
        until_ms: time(&f.until, "until")?,
        body_contains: f.body_contains.clone(),
        from_offset: f.from_offset,
        to_offset: f.to_offset,
    })
}

async fn search_cmd(json: bool, a: &SearchArgs) -> Result<ExitCode> {
    let filter = filter_of(&a.filter)?;
    let db = Db::open(&a.db.db, false).await?;
    db.check_schema().await?;
    let found = search::find(&db, &filter, None, a.limit).await?;
    for m in &found {
        if json {
            print_json(m);
        } else {
            println!("{}", search::human_line(m));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay_cmd(redis: Arc<dyn Backend>, json: bool, a: &ReplayArgs) -> Result<ExitCode> {
    let filter = filter_of(&a.filter)?;
    let db = Db::open(&a.db.db, false).await?;
    db.check_schema().await?;
    let opts = ReplayOptions { filter, to: a.to.clone(), dry_run: a.dry_run, run_name: a.run_name.clone() };
    let bar = indicatif::ProgressBar::new(0);
    if !std::io::stderr().is_terminal() || json || a.dry_run {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} replaying [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    let (b1, b2) = (bar.clone(), bar.clone());
    let dry = a.dry_run;
    let report = replay::replay(
        &db,
        redis.as_ref(),
        &opts,
        move |n| b1.set_length(n),
        move |m, sent| {
            if dry {
                let what = if sent { "would push" } else { "no body, would skip" };
                if json {
                    print_json(&serde_json::json!({ "offset": m.offset, "id": m.id, "push": sent }));
                } else {
                    println!("{what}: {}", search::human_line(m));
                }
            }
        },
        move |n| b2.set_position(n),
    )
    .await?;
    bar.finish_and_clear();
    if json {
        print_json(&report);
    } else if report.dry_run {
        println!("dry run: {} of {} matching messages would be pushed to {}", report.sent, report.matched, report.target);
    } else {
        println!(
            "pushed {} messages to {} ({} were already there from an earlier run of this replay and were not pushed again)",
            report.sent - report.already_there,
            report.target,
            report.already_there
        );
    }
    if report.skipped_without_body > 0 {
        eprintln!(
            "rmq archive: {} matching messages have no archived body (their push entry was never archived) and were skipped",
            report.skipped_without_body
        );
    }
    Ok(ExitCode::SUCCESS)
}
