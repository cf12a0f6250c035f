//! `rmq push` and `rmq spool …`: producing, and the local spool of messages Redis could not
//! take.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use rmq_client::{Confirm, Error, Producer, ProducerConfig, Push};

use crate::output::exit;
use crate::Ctx;

/// Push a message and print its id
///
/// When Redis cannot take it (down, unreachable, wrong address), the message goes to the
/// local spool, a warning says so, and the exit status is 4: it is NOT in Redis until
/// `rmq spool drain` (or a running `rmq work`) sends it. With --no-spool it fails instead
/// (exit 3). With --confirm, "Redis has it" means its master and a replica (WAIT).
///
/// For a partitioned queue (`rmq partition create`), the message goes to the partition of
/// its --key (a random partition without one).
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    rmq push jobs '{\"to\":\"ann@example.com\"}' --tag email --key customer-7\n  \
    echo hello | rmq push jobs - --header trace=abc --delay 5000\n  \
    rmq push orders '{\"sku\":42}' --key customer-7 --confirm")]
pub struct PushArgs {
    /// The queue: 1–200 bytes of A-Z a-z 0-9 _ . : - # /
    /// The queue's name.
    queue: String,
    /// The body (any bytes); `-` reads it from stdin.
    body: String,
    /// Your id for the message (1–128 printable ASCII bytes, no spaces). A second push of
    /// the same id within the queue's dedup window is dropped. Default: a new UUID v7.
    #[arg(long)]
    id: Option<String>,
    /// What kind of message this is; `rmq work` and the worker pick the handler by it.
    #[arg(long)]
    tag: Option<String>,
    /// Your own key (a customer or order id …): stored and handed back; for a partitioned
    /// queue, it picks the partition (so one key's messages stay in order).
    #[arg(long)]
    key: Option<String>,
    /// A header, NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Due in this many milliseconds (delayed until then).
    #[arg(long, conflicts_with = "at", value_name = "MS")]
    delay: Option<u64>,
    /// Due at this unix time, in milliseconds.
    #[arg(long, value_name = "UNIX_MS")]
    at: Option<u64>,
    /// Confirm: after the push, WAIT until --confirm-replicas replicas have it (at most
    /// --confirm-timeout), so that it survives the loss of its master. Unconfirmed, it is
    /// sent again with the same id, then spooled (exit 4).
    #[arg(long)]
    confirm: bool,
    /// With --confirm: how many replicas must have the message.
    #[arg(long, default_value_t = 1, value_name = "N", requires = "confirm")]
    confirm_replicas: u32,
    /// With --confirm: how long to wait for them, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS", requires = "confirm")]
    confirm_timeout: u64,
}

/// Look at or send the local spool (messages Redis could not take)
#[derive(Subcommand)]
pub enum SpoolCmd {
    /// What the spool holds: records waiting, bytes, quarantined records.
    #[command(after_help = "Example:\n  rmq spool status")]
    Status,
    /// Send the spool to Redis now (exit 3 if Redis is still unavailable).
    #[command(after_help = "Example:\n  rmq --url redis://127.0.0.1:6399 spool drain")]
    Drain,
}

/// The CLI's default spool: one per user and per server, so messages spooled for one server
/// are never sent to another.
pub fn default_spool_for(url: &str) -> PathBuf {
    rmq_client::spool::default_dir().join(server_dir_name(url))
}

/// `host-port-db`, from the URL, as a directory name.
fn server_dir_name(url: &str) -> String {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    let raw = match url.into_connection_info() {
        Ok(info) => {
            let db = info.redis_settings().db();
            match info.addr() {
                ConnectionAddr::Tcp(h, p) | ConnectionAddr::TcpTls { host: h, port: p, .. } => {
                    format!("{h}-{p}-{db}")
                }
                ConnectionAddr::Unix(path) => format!("unix-{}-{db}", path.display()),
                other => format!("{other}-{db}"),
            }
        }
        Err(_) => "default".into(),
    };
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// Says on stderr when the spool holds messages that never reached Redis.
pub fn warn_if_spool_pending(ctx: &Ctx) {
    let Some(dir) = &ctx.spool else { return };
    if rmq_client::spool::has_pending(dir).unwrap_or(false) {
        eprintln!(
            "rmq: WARNING: the spool {} holds messages that never reached Redis; send them \
             with `rmq spool drain` (a running `rmq work` drains it too)",
            dir.display()
        );
    }
}

fn read_body(body: &str) -> std::io::Result<Vec<u8>> {
    if body == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b)?;
        Ok(b)
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

pub async fn push(ctx: &Ctx, a: &PushArgs) -> Result<ExitCode, Error> {
    let mut p = Push::new(a.queue.clone(), read_body(&a.body)?);
    p.id = a.id.clone();
    p.tag = a.tag.clone().unwrap_or_default();
    p.key = a.key.clone().unwrap_or_default();
    for h in &a.headers {
        let Some((k, v)) = h.split_once('=') else {
            return Err(Error::Invalid(format!("--header wants NAME=VALUE, got {h:?}")));
        };
        p.headers.push((k.to_string(), v.to_string()));
    }
    p.delay = a.delay.map(Duration::from_millis);
    p.at = a.at;
    let confirm = a.confirm.then(|| Confirm { replicas: a.confirm_replicas, timeout: Duration::from_millis(a.confirm_timeout) });
    let cfg = ProducerConfig { spool_dir: ctx.spool.clone(), retries: 2, background_drain: false, confirm, ..Default::default() };
    let producer = Producer::new(ctx.client()?, cfg).await?;
    let r = producer.push(p).await?;
    ctx.out.either(&serde_json::json!({ "id": r.id, "queue": r.queue, "spooled": r.spooled }), || r.id.clone());
    if r.spooled {
        let dir = ctx.spool.as_deref().unwrap_or(Path::new("?"));
        eprintln!(
            "rmq: WARNING: the message was NOT sent: Redis could not take it ({}). It is kept \
             in the spool {}; send it with `rmq spool drain` once Redis is back.",
            r.unavailable.as_deref().unwrap_or("unavailable"),
            dir.display()
        );
        return Ok(ExitCode::from(exit::SPOOLED));
    }
    warn_if_spool_pending(ctx);
    Ok(ExitCode::SUCCESS)
}

pub async fn spool(ctx: &Ctx, s: &SpoolCmd) -> Result<ExitCode, Error> {
    let Some(dir) = ctx.spool.clone() else {
        return Err(Error::Config("--no-spool: there is no spool to look at".into()));
    };
    let cfg = ProducerConfig { spool_dir: Some(dir.clone()), background_drain: false, ..Default::default() };
    let producer = Producer::new(ctx.client()?, cfg).await?;
    match s {
        SpoolCmd::Status => {
            let st = producer.spool_status().await?;
            ctx.out.either(&st, || {
                let mut t = format!(
                    "spool       {}\nrecords     {}\nbytes       {}\nsegments    {}\nquarantined {}",
                    dir.display(),
                    st.records,
                    st.bytes,
                    st.segments,
                    st.quarantined
                );
                if st.corrupt > 0 {
                    t += &format!("\ncorrupt     {} (moved to the quarantine by the next drain)", st.corrupt);
                }
                t
            });
            Ok(ExitCode::SUCCESS)
        }
        SpoolCmd::Drain => {
            let bar = indicatif::ProgressBar::new(0);
            if !std::io::stderr().is_terminal() || ctx.out.json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} re-sending [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
                    .expect("template")
                    .progress_chars("=> "),
            );
            let (b1, b2) = (bar.clone(), bar.clone());
            let report = producer.drain_with(move |t| b1.set_length(t), move |n| b2.set_position(n)).await?;
            bar.finish_and_clear();
            if ctx.out.json {
                ctx.out.json(&report);
            } else if !report.busy {
                println!(
                    "sent {}, refused {} and corrupt {} (quarantined), remaining {}",
                    report.sent, report.refused, report.corrupt, report.remaining
                );
                if report.torn_bytes > 0 {
                    println!("cut a torn tail of {} bytes", report.torn_bytes);
                }
            }
            if report.refused + report.corrupt > 0 {
                eprintln!("rmq: records were moved to the quarantine ({}); see `rmq spool status`", dir.join("quarantine").display());
            }
            if let Some(why) = &report.stopped {
                return Ok(ctx.out.fail(&format!("drain stopped: {why}"), "unavailable", exit::UNAVAILABLE));
            }
            if report.busy {
                return Ok(ctx.out.fail("another process is draining this spool", "busy", exit::ERROR));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
