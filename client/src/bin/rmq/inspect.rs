//! The one-shot commands: fetch, ack, nack, touch, peek, get, del, requeue, purge,
//! recover, config, log, replay, queues.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use rmq_client::{Client, Error, Fetch, NackKind, Rotation};

use crate::output::{clock, exit, value_json, value_text};
use crate::Ctx;

/// Fetch messages and print them with their receipts
///
/// Each message is then in flight (invisible to others) until it is acked, nacked, or its
/// lock runs out.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    rmq fetch jobs --count 10 --lock 60000\n  \
    rmq --json fetch jobs --block 5000")]
pub struct FetchArgs {
    /// The queue's name.
    queue: String,
    /// How many messages at most (default 1).
    #[arg(long, value_name = "N")]
    count: Option<u32>,
    /// How long the messages stay locked, in milliseconds (default: the queue's lock-ms).
    #[arg(long, value_name = "MS")]
    lock: Option<u64>,
    /// Wait up to this many milliseconds for a message (0: wait for ever). Default: answer
    /// at once.
    #[arg(long, value_name = "MS")]
    block: Option<u64>,
    /// A name for the consumer, shown by `rmq peek QUEUE inflight`.
    #[arg(long, value_name = "NAME")]
    consumer: Option<String>,
}

/// Acknowledge deliveries: their messages are done and deleted
///
/// Exit 5 when any receipt was stale (already acked or nacked, or its lock ran out and its
/// message went back or to another consumer); it says which tokens are message ids.
#[derive(Args)]
#[command(after_help = "Example:\n  rmq ack jobs \"$receipt\"")]
pub struct AckArgs {
    /// The queue's name.
    queue: String,
    /// Receipts, as `rmq fetch` printed them (not message ids).
    #[arg(required = true)]
    receipts: Vec<String>,
}

/// Give a delivery back: retry (default), dead-letter (--fail) or to errors (--error)
///
/// Exit 5 when the receipt was stale.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    rmq nack jobs \"$receipt\" --delay 60000 --reason 'mail server busy'\n  \
    rmq nack jobs \"$receipt\" --error --reason 'bad address'")]
pub struct NackArgs {
    /// The queue's name.
    queue: String,
    /// The receipt, as `rmq fetch` printed it.
    receipt: String,
    /// Retry: back to ready, or delayed by --delay or the queue's backoff (the default).
    #[arg(long, conflicts_with_all = ["fail", "error"])]
    retry: bool,
    /// To the failed (dead letter) state now, no retry.
    #[arg(long, conflicts_with = "error")]
    fail: bool,
    /// To the errors state now, for a person to look at.
    #[arg(long)]
    error: bool,
    /// With retry: wait this many milliseconds first (instead of the queue's backoff).
    #[arg(long, conflicts_with_all = ["fail", "error"], value_name = "MS")]
    delay: Option<u64>,
    /// Why; stored with the message as its error.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

/// Extend a delivery's lock (the heartbeat of a long job)
///
/// Prints the new deadline (unix ms). Exit 5 when the receipt was stale.
#[derive(Args)]
#[command(after_help = "Example:\n  rmq touch jobs \"$receipt\" --lock 120000")]
pub struct TouchArgs {
    /// The queue's name.
    queue: String,
    /// The receipt, as `rmq fetch` printed it.
    receipt: String,
    /// The new lock, in milliseconds from now (default: the queue's lock-ms).
    #[arg(long, value_name = "MS")]
    lock: Option<u64>,
}

/// Look at messages in one state without changing anything
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    rmq peek jobs\n  \
    rmq peek jobs errors --count 50\n  \
    rmq --json peek jobs inflight")]
pub struct PeekArgs {
    /// The queue's name.
    queue: String,
    /// Which state.
    #[arg(value_enum, default_value = "ready")]
    state: StateArg,
    /// Skip this many messages first (0-based position).
    #[arg(long, value_name = "N")]
    start: Option<u64>,
    /// How many at most (default 10).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// Show one message by id, in whatever state it is
///
/// Exit 5 when there is none.
#[derive(Args)]
#[command(after_help = "Example:\n  rmq get jobs order-42")]
pub struct GetArgs {
    /// The queue's name.
    queue: String,
    /// The message's id.
    id: String,
}

/// Delete messages by id, from any state
///
/// Prints how many; exit 5 when none was found.
#[derive(Args)]
#[command(after_help = "Example:\n  rmq del jobs order-41 order-42")]
pub struct DelArgs {
    /// The queue's name.
    queue: String,
    /// Message ids.
    #[arg(required = true)]
    ids: Vec<String>,
}

/// Move failed, errored or delayed messages back to ready now, by id
///
/// Prints how many; exit 5 when none was moved.
#[derive(Args)]
#[command(after_help = "Example:\n  rmq requeue jobs order-7 order-9")]
pub struct RequeueArgs {
    /// The queue's name.
    queue: String,
    /// Message ids.
    #[arg(required = true)]
    ids: Vec<String>,
}

/// Delete every message of one state (or all)
///
/// Settings, counters and the log stay.
#[derive(Args)]
#[command(after_help = "Example:\n  rmq purge jobs failed")]
pub struct PurgeArgs {
    /// The queue's name.
    queue: String,
    /// Which state (required: there is no default).
    #[arg(value_enum)]
    state: PurgeState,
}

/// Move expired, failed and errored messages back to ready
///
/// What to run after a deploy that fixed the cause of failures. Without an option: all
/// three.
#[derive(Args)]
#[command(after_help = "Examples:\n  rmq recover jobs\n  rmq recover jobs --failed")]
pub struct RecoverArgs {
    /// The queue's name.
    queue: String,
    /// In-flight messages whose lock ran out.
    #[arg(long)]
    expired: bool,
    /// Failed (dead-lettered) messages; their attempts start again from 0.
    #[arg(long)]
    failed: bool,
    /// Errored messages; their attempts start again from 0.
    #[arg(long)]
    errors: bool,
}

/// Show or change a queue's settings
#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Print the queue's effective settings, or one of them.
    #[command(after_help = "Examples:\n  rmq config get jobs\n  rmq config get jobs lock-ms")]
    Get {
        /// The queue's name.
        queue: String,
        /// lock-ms, max-attempts, backoff-ms, backoff-max-ms, maxlen, ordered,
        /// dedup-window-ms, log, log-maxlen, …
        name: Option<String>,
    },
    /// Set settings of the queue (all or none: a bad pair changes nothing).
    #[command(after_help = "Example:\n  rmq config set jobs lock-ms 60000 max-attempts 3")]
    Set {
        /// The queue's name.
        queue: String,
        /// NAME VALUE pairs; times are in milliseconds, booleans 0 or 1.
        #[arg(required = true, num_args = 2.., value_names = ["NAME", "VALUE"])]
        pairs: Vec<String>,
    },
}

/// Show the queue's message log, oldest first
///
/// Only while the queue's `log` setting is 1: push, fetch, ack, retry … events.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    rmq config set jobs log 1\n  \
    rmq log jobs --from 40 --count 20")]
pub struct LogArgs {
    /// The queue's name.
    queue: String,
    /// Entries of messages whose offset is at least this.
    #[arg(long, value_name = "OFFSET")]
    from: Option<u64>,
    /// How many entries at most (default 100).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// Push copies of logged messages again
///
/// The copies get new ids and a header replay-of = the original id.
#[derive(Args)]
#[command(after_help = "Example:\n  rmq replay jobs --from 42 --to 50")]
pub struct ReplayArgs {
    /// The queue's name.
    queue: String,
    /// The first message offset to copy.
    #[arg(long, value_name = "OFFSET")]
    from: u64,
    /// The last message offset to copy (default: the end of the log).
    #[arg(long, value_name = "OFFSET")]
    to: Option<u64>,
}

/// List the queues on this server (in a cluster: on every master)
#[derive(Args)]
#[command(after_help = "Example:\n  rmq queues")]
pub struct QueuesArgs {}

#[derive(Clone, Copy, ValueEnum)]
pub enum StateArg {
    Ready,
    Delayed,
    Inflight,
    Failed,
    Errors,
}

impl StateArg {
    fn name(self) -> &'static str {
        match self {
            StateArg::Ready => "READY",
            StateArg::Delayed => "DELAYED",
            StateArg::Inflight => "INFLIGHT",
            StateArg::Failed => "FAILED",
            StateArg::Errors => "ERRORS",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PurgeState {
    Ready,
    Delayed,
    Inflight,
    Failed,
    Errors,
    All,
}

/// The queues a command on `name` covers: its partitions when it is a partitioned queue,
/// else itself; and whether it is partitioned.
async fn targets(c: &Client, name: &str) -> Result<(Vec<String>, bool), Error> {
    Ok(match c.partitioned_or_plain(name).await? {
        Some(p) => (p.partitions, true),
        None => (vec![name.to_string()], false),
    })
}

/// Refuses a command that works on one physical queue only, for a partitioned `name`.
async fn one_queue_only(c: &Client, name: &str, what: &str) -> Result<(), Error> {
    if c.partitioned_or_plain(name).await?.is_some() {
        return Err(Error::Invalid(format!(
            "'{name}' is a partitioned queue: {what} works on one of its partitions (see `rmq partition show {name}`)"
        )));
    }
    Ok(())
}

pub async fn fetch(ctx: &Ctx, a: &FetchArgs) -> Result<ExitCode, Error> {
    let f = Fetch {
        count: a.count,
        lock: a.lock.map(Duration::from_millis),
        block: a.block.map(Duration::from_millis),
        consumer: a.consumer.clone(),
    };
    let c = ctx.client()?;
    let (queues, partitioned) = targets(&c, &a.queue).await?;
    let msgs = if partitioned { Rotation::new(queues).fetch(&c, &f).await? } else { c.fetch(&a.queue, &f).await? };
    ctx.out.messages_of(&msgs, partitioned);
    Ok(ExitCode::SUCCESS)
}

/// After receipts were found stale: says so, and which of them are message ids (a common
/// mistake: ACK takes the receipt that FETCH handed out, not the id).
async fn stale(ctx: &Ctx, c: &Client, queues: &[String], tokens: &[&str], stale: usize) -> ExitCode {
    let mut text = if tokens.len() == 1 {
        "the receipt was stale: nothing changed (already acked or nacked, or its lock ran out \
         and the message went back or to another consumer)"
            .to_string()
    } else {
        format!(
            "{stale} of {} receipts were stale: they changed nothing (already acked or nacked, \
             or their lock ran out and the message went back or to another consumer)",
            tokens.len()
        )
    };
    for t in tokens {
        for q in queues {
            if let Ok(Some(_)) = c.get(q, t).await {
                text += &format!("; '{t}' is a message id, not a receipt: use the receipt `rmq fetch` printed");
                break;
            }
        }
    }
    ctx.out.fail(&text, "stale", exit::NOTHING)
}

pub async fn ack(ctx: &Ctx, a: &AckArgs) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    let r: Vec<&str> = a.receipts.iter().map(|s| s.as_str()).collect();
    // A receipt is stale in every queue but its own, so a partitioned queue's receipts can be
    // given to each partition: each counts once.
    let (queues, _) = targets(&c, &a.queue).await?;
    let mut n = 0;
    for q in &queues {
        n += c.ack(q, &r).await?;
        if n as usize >= r.len() {
            break;
        }
    }
    ctx.out.either(&serde_json::json!({ "acked": n }), || n.to_string());
    if (n as usize) < r.len() {
        return Ok(stale(ctx, &c, &queues, &r, r.len() - n as usize).await);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn nack(ctx: &Ctx, a: &NackArgs) -> Result<ExitCode, Error> {
    let kind = if a.fail {
        NackKind::Fail
    } else if a.error {
        NackKind::Error
    } else {
        NackKind::Retry { delay: a.delay.map(Duration::from_millis) }
    };
    let c = ctx.client()?;
    let (queues, _) = targets(&c, &a.queue).await?;
    let mut ok = false;
    for q in &queues {
        if c.nack(q, &a.receipt, kind, a.reason.as_deref()).await? {
            ok = true;
            break;
        }
    }
    ctx.out.either(&serde_json::json!({ "nacked": ok as u8 }), || (ok as u8).to_string());
    if !ok {
        return Ok(stale(ctx, &c, &queues, &[a.receipt.as_str()], 1).await);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn touch(ctx: &Ctx, a: &TouchArgs) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    let (queues, _) = targets(&c, &a.queue).await?;
    let mut deadline = 0;
    for q in &queues {
        deadline = c.touch(q, &a.receipt, a.lock.map(Duration::from_millis)).await?;
        if deadline > 0 {
            break;
        }
    }
    ctx.out.either(&serde_json::json!({ "deadline": deadline }), || deadline.to_string());
    if deadline == 0 {
        return Ok(stale(ctx, &c, &queues, &[a.receipt.as_str()], 1).await);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn peek(ctx: &Ctx, a: &PeekArgs) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    let (queues, partitioned) = targets(&c, &a.queue).await?;
    let mut msgs = Vec::new();
    for q in &queues {
        msgs.extend(c.peek(q, Some(a.state.name()), a.start, a.count).await?);
    }
    ctx.out.messages_of(&msgs, partitioned);
    Ok(ExitCode::SUCCESS)
}

pub async fn get(ctx: &Ctx, a: &GetArgs) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    let (queues, partitioned) = targets(&c, &a.queue).await?;
    for q in &queues {
        if let Some(m) = c.get(q, &a.id).await? {
            ctx.out.messages_of(std::slice::from_ref(&m), partitioned);
            return Ok(ExitCode::SUCCESS);
        }
    }
    Ok(ctx.out.fail(&format!("no message with id '{}' in queue '{}'", a.id, a.queue), "not_found", exit::NOTHING))
}

/// Prints a count; exit 5 when it is 0.
fn counted(ctx: &Ctx, field: &str, n: u64, none: impl FnOnce() -> String) -> ExitCode {
    ctx.out.either(&serde_json::json!({ field: n }), || n.to_string());
    if n == 0 {
        return ctx.out.fail(&none(), "not_found", exit::NOTHING);
    }
    ExitCode::SUCCESS
}

pub async fn del(ctx: &Ctx, a: &DelArgs) -> Result<ExitCode, Error> {
    let ids: Vec<&str> = a.ids.iter().map(|s| s.as_str()).collect();
    let c = ctx.client()?;
    let mut n = 0;
    for q in targets(&c, &a.queue).await?.0 {
        n += c.del(&q, &ids).await?;
    }
    Ok(counted(ctx, "deleted", n, || format!("no message with these ids in queue '{}'", a.queue)))
}

pub async fn requeue(ctx: &Ctx, a: &RequeueArgs) -> Result<ExitCode, Error> {
    let ids: Vec<&str> = a.ids.iter().map(|s| s.as_str()).collect();
    let c = ctx.client()?;
    let mut n = 0;
    for q in targets(&c, &a.queue).await?.0 {
        n += c.requeue(&q, &ids).await?;
    }
    Ok(counted(ctx, "requeued", n, || {
        format!("nothing requeued: no failed, errored or delayed message with these ids in queue '{}'", a.queue)
    }))
}

pub async fn purge(ctx: &Ctx, a: &PurgeArgs) -> Result<ExitCode, Error> {
    let state = match a.state {
        PurgeState::Ready => "READY",
        PurgeState::Delayed => "DELAYED",
        PurgeState::Inflight => "INFLIGHT",
        PurgeState::Failed => "FAILED",
        PurgeState::Errors => "ERRORS",
        PurgeState::All => "ALL",
    };
    let c = ctx.client()?;
    let mut n = 0;
    for q in targets(&c, &a.queue).await?.0 {
        n += c.purge(&q, state).await?;
    }
    ctx.out.either(&serde_json::json!({ "deleted": n }), || n.to_string());
    Ok(ExitCode::SUCCESS)
}

pub async fn recover(ctx: &Ctx, a: &RecoverArgs) -> Result<ExitCode, Error> {
    let mut parts = Vec::new();
    if a.expired {
        parts.push("EXPIRED");
    }
    if a.failed {
        parts.push("FAILED");
    }
    if a.errors {
        parts.push("ERRORS");
    }
    let c = ctx.client()?;
    let (queues, partitioned) = targets(&c, &a.queue).await?;
    let mut each = Vec::new();
    let mut total = [0u64; 3];
    for q in &queues {
        let r = c.recover(q, &parts).await?;
        for (t, x) in total.iter_mut().zip(r) {
            *t += x;
        }
        each.push((q.clone(), r));
    }
    let [e, f, r] = total;
    let line = |[e, f, r]: [u64; 3]| format!("expired {e}, failed {f}, errors {r} moved back to ready");
    if ctx.out.json {
        let mut v = serde_json::json!({ "expired": e, "failed": f, "errors": r });
        if partitioned {
            let per: serde_json::Map<String, serde_json::Value> =
                each.iter().map(|(q, [e, f, r])| (q.clone(), serde_json::json!({ "expired": e, "failed": f, "errors": r }))).collect();
            v["partitions"] = serde_json::Value::Object(per);
        }
        ctx.out.json(&v);
    } else {
        if partitioned {
            for (q, r) in &each {
                println!("{q}: {}", line(*r));
            }
            print!("total: ");
        }
        println!("{}", line(total));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn config(ctx: &Ctx, cmd: &ConfigCmd) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    match cmd {
        ConfigCmd::Get { queue, name } => {
            let (queues, partitioned) = targets(&c, queue).await?;
            let mut each = Vec::new();
            for q in &queues {
                each.push((q.clone(), c.config_get(q, name.as_deref()).await?));
            }
            let same = each.windows(2).all(|w| w[0].1 == w[1].1);
            let as_map = |pairs: &[(String, String)]| -> serde_json::Map<String, serde_json::Value> {
                pairs.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect()
            };
            let text = |pairs: &[(String, String)]| {
                let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                pairs.iter().map(|(k, v)| format!("{k:<w$}  {v}")).collect::<Vec<_>>().join("\n")
            };
            if !partitioned || same {
                // A partitioned queue whose partitions agree shows as one queue.
                ctx.out.either(&as_map(&each[0].1), || text(&each[0].1));
            } else if ctx.out.json {
                let per: serde_json::Map<String, serde_json::Value> =
                    each.iter().map(|(q, p)| (q.clone(), serde_json::Value::Object(as_map(p)))).collect();
                ctx.out.json(&per);
            } else {
                let blocks: Vec<String> = each.iter().map(|(q, p)| format!("{q}:\n{}", text(p))).collect();
                println!("{}", blocks.join("\n"));
            }
        }
        ConfigCmd::Set { queue, pairs } => {
            if pairs.len() % 2 != 0 {
                return Err(Error::Invalid(format!(
                    "config set wants NAME VALUE pairs; '{}' has no value",
                    pairs.last().map(String::as_str).unwrap_or("")
                )));
            }
            let kv: Vec<(&str, &str)> = pairs.chunks(2).map(|p| (p[0].as_str(), p[1].as_str())).collect();
            for q in targets(&c, queue).await?.0 {
                c.config_set(&q, &kv).await?;
            }
            ctx.out.either(&serde_json::json!({ "ok": true }), || "OK".to_string());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn log(ctx: &Ctx, a: &LogArgs) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    one_queue_only(&c, &a.queue, "log").await?;
    let entries = c.log(&a.queue, a.from, a.count).await?;
    if ctx.out.json {
        let list: Vec<serde_json::Value> =
            entries.iter().map(|e| serde_json::Value::Object(e.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())).collect();
        ctx.out.json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        let field = |name: &str| e.iter().find(|(k, _)| k == name).map(|(_, v)| value_text(v)).unwrap_or_default();
        let time = field("time").parse::<u64>().map(clock).unwrap_or_default();
        let mut line = format!("{:>8}  {time}  {:<8} {}", field("offset"), field("event"), field("id"));
        for (k, v) in e {
            if !matches!(k.as_str(), "offset" | "time" | "event" | "id") {
                line += &format!("  {k}={}", value_text(v));
            }
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn replay(ctx: &Ctx, a: &ReplayArgs) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    one_queue_only(&c, &a.queue, "replay").await?;
    let n = c.replay(&a.queue, a.from, a.to).await?;
    ctx.out.either(&serde_json::json!({ "replayed": n }), || n.to_string());
    Ok(ExitCode::SUCCESS)
}

pub async fn queues(ctx: &Ctx, _: &QueuesArgs) -> Result<ExitCode, Error> {
    let qs = ctx.client()?.queues().await?;
    if ctx.out.json {
        ctx.out.json(&qs);
    } else {
        for q in &qs {
            println!("{q}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
