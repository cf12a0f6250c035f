//! `rmq`: the command line of rmq-client. See `rmq --help` and docs/client.md.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rmq_client::{
    Client, Config, EditionChoice, Error, Fetch, HandlerError, Message, NackKind, Producer, ProducerConfig, Push, Worker, WorkerConfig,
};
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
#[command(name = "rmq", version, about = "rmq: a reliable message queue in Redis — push, work, inspect, spool")]
struct Cli {
    /// Redis URL: redis://[user:password@]host[:port][/db], rediss:// for TLS.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true)]
    url: String,
    /// The local spool of messages Redis could not take.
    #[arg(long, env = "RMQ_SPOOL", default_value = "./datas/rmq", global = true)]
    spool: PathBuf,
    /// Machine-readable output (JSON) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Which edition to use: the RMQ.* module or the Lua library (auto: whichever is there).
    #[arg(long, value_enum, default_value = "auto", global = true)]
    edition: EditionArg,
    /// Connect timeout, ms.
    #[arg(long, default_value_t = 2000, global = true)]
    connect_timeout: u64,
    /// Command timeout, ms.
    #[arg(long, default_value_t = 5000, global = true)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum EditionArg {
    Auto,
    Module,
    Lua,
}

#[derive(Subcommand)]
enum Cmd {
    /// Push a message and print its id. When Redis cannot take it, it is spooled (exit 0).
    Push(PushArgs),
    /// The local spool.
    #[command(subcommand)]
    Spool(SpoolCmd),
    /// Fetch messages (they are in flight until ACKed, NACKed or their lock runs out).
    Fetch {
        queue: String,
        #[arg(long)]
        count: Option<u32>,
        /// Lock, ms.
        #[arg(long)]
        lock: Option<u64>,
        /// Wait up to this many ms for a message (0: forever).
        #[arg(long)]
        block: Option<u64>,
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Acknowledge deliveries: the messages are done.
    Ack {
        queue: String,
        #[arg(required = true)]
        receipts: Vec<String>,
    },
    /// Give a delivery back: retry (default), fail or error.
    Nack {
        queue: String,
        receipt: String,
        #[arg(long, conflicts_with_all = ["fail", "error"])]
        retry: bool,
        #[arg(long, conflicts_with = "error")]
        fail: bool,
        #[arg(long)]
        error: bool,
        /// With retry: wait this many ms first.
        #[arg(long, conflicts_with_all = ["fail", "error"])]
        delay: Option<u64>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Look at messages without changing anything.
    Peek {
        queue: String,
        #[arg(value_enum, default_value = "ready")]
        state: StateArg,
        #[arg(long)]
        start: Option<u64>,
        #[arg(long)]
        count: Option<u64>,
    },
    /// Move expired, failed and errored messages back to ready (what to run on deploy).
    Recover {
        queue: String,
        #[arg(long)]
        expired: bool,
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        errors: bool,
    },
    /// Counters of one queue, or a table of every queue.
    Stats {
        queue: Option<String>,
        /// Redraw every --interval ms until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value_t = 1000)]
        interval: u64,
        /// With --watch: stop after this many redraws.
        #[arg(long, hide = true)]
        iterations: Option<u64>,
    },
    /// List the queues that hold messages.
    Queues,
    /// Run COMMAND for every message, body on stdin: exit 0 ACKs, anything else NACKs with its
    /// stderr as the reason. Stops gracefully on ctrl-c / SIGTERM.
    Work(WorkArgs),
    /// The web console on 127.0.0.1:8080: every queue, every message, actions, audit log,
    /// /metrics (docs/console.md).
    Console(rmq_console::ConsoleArgs),
    /// A headless Prometheus exporter: GET /metrics (docs/console.md).
    Metrics(rmq_console::MetricsArgs),
}

#[derive(Args)]
struct PushArgs {
    queue: String,
    /// The body; `-` reads it from stdin.
    body: String,
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    #[arg(long)]
    key: Option<String>,
    /// A header, name=value (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Due in this many ms.
    #[arg(long, conflicts_with = "at")]
    delay: Option<u64>,
    /// Due at this unix time, ms.
    #[arg(long)]
    at: Option<u64>,
}

#[derive(Subcommand)]
enum SpoolCmd {
    /// What the spool holds: records waiting, bytes, quarantined records.
    Status,
    /// Re-send the spool now (exits non-zero if Redis is still unavailable).
    Drain,
}

#[derive(Args)]
struct WorkArgs {
    queue: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Lock per message, ms (TOUCHed every half lock while COMMAND runs).
    #[arg(long, default_value_t = 30_000)]
    lock: u64,
    /// A failing COMMAND sends the message to errors instead of retrying it.
    #[arg(long)]
    failed_is_error: bool,
    /// Grace period for running commands on ctrl-c / SIGTERM, ms.
    #[arg(long, default_value_t = 30_000)]
    grace: u64,
    #[arg(long)]
    consumer: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
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

const STAT_COLUMNS: [&str; 13] = [
    "ready",
    "delayed",
    "inflight",
    "failed",
    "errors",
    "pushed",
    "acked",
    "retried",
    "dead",
    "errored",
    "dups",
    "offset",
    "oldest_ready_ms",
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RMQ_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rmq: {e}");
            ExitCode::FAILURE
        }
    }
}

fn client(cli: &Cli) -> Result<Client, Error> {
    let mut cfg = Config::new(cli.url.clone());
    cfg.connect_timeout = Duration::from_millis(cli.connect_timeout);
    cfg.command_timeout = Duration::from_millis(cli.timeout);
    cfg.edition = match cli.edition {
        EditionArg::Auto => EditionChoice::Auto,
        EditionArg::Module => EditionChoice::Module,
        EditionArg::Lua => EditionChoice::Lua,
    };
    Client::new(cfg)
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).expect("json"));
}

fn print_messages(msgs: &[Message], json: bool) {
    if json {
        print_json(&msgs);
        return;
    }
    for m in msgs {
        let mut line = m.id.clone();
        if !m.receipt.is_empty() {
            line += &format!("  receipt={}", m.receipt);
        }
        if !m.state.is_empty() {
            line += &format!("  state={}", m.state);
        }
        line += &format!("  attempt={}", m.attempt);
        if !m.tag.is_empty() {
            line += &format!("  tag={}", m.tag);
        }
        if !m.key.is_empty() {
            line += &format!("  key={}", m.key);
        }
        for (k, v) in &m.headers {
            line += &format!("  {k}={v}");
        }
        if !m.error.is_empty() {
            line += &format!("  error={:?}", m.error);
        }
        line += &format!("  body={:?}", m.body_str());
        println!("{line}");
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let c = client(&cli)?;
    match &cli.cmd {
        Cmd::Push(a) => push(&cli, c, a).await,
        Cmd::Spool(s) => spool(&cli, c, s).await,
        Cmd::Fetch { queue, count, lock, block, consumer } => {
            let f = Fetch {
                count: *count,
                lock: lock.map(Duration::from_millis),
                block: block.map(Duration::from_millis),
                consumer: consumer.clone(),
            };
            let msgs = c.fetch(queue, &f).await?;
            print_messages(&msgs, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ack { queue, receipts } => {
            let r: Vec<&str> = receipts.iter().map(|s| s.as_str()).collect();
            let n = c.ack(queue, &r).await?;
            if cli.json {
                print_json(&serde_json::json!({ "acked": n }));
            } else {
                println!("{n}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Nack { queue, receipt, retry: _, fail, error, delay, reason } => {
            let kind = if *fail {
                NackKind::Fail
            } else if *error {
                NackKind::Error
            } else {
                NackKind::Retry { delay: delay.map(Duration::from_millis) }
            };
            let ok = c.nack(queue, receipt, kind, reason.as_deref()).await?;
            if cli.json {
                print_json(&serde_json::json!({ "nacked": ok as u8 }));
            } else {
                println!("{}", ok as u8);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Peek { queue, state, start, count } => {
            let msgs = c.peek(queue, Some(state.name()), *start, *count).await?;
            print_messages(&msgs, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Recover { queue, expired, failed, errors } => {
            let mut parts = Vec::new();
            if *expired {
                parts.push("EXPIRED");
            }
            if *failed {
                parts.push("FAILED");
            }
            if *errors {
                parts.push("ERRORS");
            }
            let [e, f, r] = c.recover(queue, &parts).await?;
            if cli.json {
                print_json(&serde_json::json!({ "expired": e, "failed": f, "errors": r }));
            } else {
                println!("expired {e}, failed {f}, errors {r} moved back to ready");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Queues => {
            let qs = c.queues().await?;
            if cli.json {
                print_json(&qs);
            } else {
                for q in qs {
                    println!("{q}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stats { queue, watch, interval, iterations } => stats(&cli, c, queue.as_deref(), *watch, *interval, *iterations).await,
        Cmd::Work(a) => work(&cli, c, a).await,
        Cmd::Console(a) => Ok(rmq_console::console(std::sync::Arc::new(c), a).await?),
        Cmd::Metrics(a) => Ok(rmq_console::metrics(std::sync::Arc::new(c), a).await?),
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

async fn push(cli: &Cli, c: Client, a: &PushArgs) -> Result<ExitCode, Error> {
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
    let cfg = ProducerConfig { spool_dir: Some(cli.spool.clone()), retries: 2, background_drain: false, ..Default::default() };
    let producer = Producer::new(c, cfg).await?;
    let r = producer.push(p).await?;
    if r.spooled {
        eprintln!("rmq: Redis is unavailable; the message was spooled to {} (send it later with `rmq spool drain`)", cli.spool.display());
    }
    if cli.json {
        print_json(&serde_json::json!({ "id": r.id, "spooled": r.spooled }));
    } else {
        println!("{}", r.id);
    }
    Ok(ExitCode::SUCCESS)
}

async fn spool(cli: &Cli, c: Client, s: &SpoolCmd) -> Result<ExitCode, Error> {
    let cfg = ProducerConfig { spool_dir: Some(cli.spool.clone()), background_drain: false, ..Default::default() };
    let producer = Producer::new(c, cfg).await?;
    match s {
        SpoolCmd::Status => {
            let st = producer.spool_status().await?;
            if cli.json {
                print_json(&st);
            } else {
                println!("spool       {}", cli.spool.display());
                println!("records     {}", st.records);
                println!("bytes       {}", st.bytes);
                println!("segments    {}", st.segments);
                println!("quarantined {}", st.quarantined);
                if st.corrupt > 0 {
                    println!("corrupt     {} (moved to the quarantine by the next drain)", st.corrupt);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SpoolCmd::Drain => {
            let bar = indicatif::ProgressBar::new(0);
            if !std::io::stderr().is_terminal() || cli.json {
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
            if cli.json {
                print_json(&report);
            } else if report.busy {
                eprintln!("rmq: another process is draining this spool");
            } else {
                println!(
                    "sent {}, refused {} and corrupt {} (quarantined), remaining {}",
                    report.sent, report.refused, report.corrupt, report.remaining
                );
                if report.torn_bytes > 0 {
                    println!("cut a torn tail of {} bytes", report.torn_bytes);
                }
            }
            if report.refused + report.corrupt > 0 {
                eprintln!("rmq: records were moved to the quarantine ({}); see `rmq spool status`", cli.spool.join("quarantine").display());
            }
            if let Some(why) = &report.stopped {
                eprintln!("rmq: drain stopped: {why}");
                return Ok(ExitCode::FAILURE);
            }
            if report.busy {
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn stats_table(rows: &[(String, rmq_client::Stats)]) -> String {
    let mut head = vec!["queue".to_string()];
    head.extend(STAT_COLUMNS.iter().map(|s| s.to_string()));
    let mut cells: Vec<Vec<String>> = vec![head];
    for (q, st) in rows {
        let mut r = vec![q.clone()];
        r.extend(STAT_COLUMNS.iter().map(|k| st.get(*k).copied().unwrap_or(0).to_string()));
        cells.push(r);
    }
    let widths: Vec<usize> = (0..cells[0].len()).map(|i| cells.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &cells {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { format!("{:<w$}", c, w = widths[i]) } else { format!("{:>w$}", c, w = widths[i]) })
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

async fn stats(cli: &Cli, c: Client, queue: Option<&str>, watch: bool, interval: u64, iterations: Option<u64>) -> Result<ExitCode, Error> {
    let mut n = 0u64;
    loop {
        let qs = match queue {
            Some(q) => vec![q.to_string()],
            None => c.queues().await?,
        };
        let mut rows = Vec::new();
        for q in qs {
            let st = c.stats(&q).await?;
            rows.push((q, st));
        }
        if cli.json {
            let m: std::collections::BTreeMap<_, _> = rows.iter().map(|(q, s)| (q.clone(), s.clone())).collect();
            match (queue, watch) {
                (Some(_), false) => print_json(&rows[0].1),
                _ => print_json(&m),
            }
        } else if let (Some(q), false) = (queue, watch) {
            let st = &rows[0].1;
            println!("queue {q}");
            for k in STAT_COLUMNS {
                println!("  {:<16}{}", k, st.get(k).copied().unwrap_or(0));
            }
        } else {
            let table = stats_table(&rows);
            if watch && std::io::stdout().is_terminal() {
                // Clear the screen and draw again at the top.
                print!("\x1b[2J\x1b[H");
            }
            let now = chrono_like_now();
            print!("{now}  {} queue(s)\n{table}", rows.len());
            if rows.is_empty() {
                println!("(no queue holds messages)");
            }
            let _ = std::io::stdout().flush();
        }
        n += 1;
        if !watch || iterations.is_some_and(|i| n >= i) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
            _ = rmq_client::shutdown_signal() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// `HH:MM:SS` (UTC) without a date crate.
fn chrono_like_now() -> String {
    let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:02}:{:02}:{:02} UTC", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

async fn work(cli: &Cli, c: Client, a: &WorkArgs) -> Result<ExitCode, Error> {
    let cfg = WorkerConfig {
        lock: Duration::from_millis(a.lock.max(1)),
        concurrency: a.concurrency.max(1),
        failed_is_error: a.failed_is_error,
        no_handler_is_error: true,
        grace: Duration::from_millis(a.grace),
        consumer: a.consumer.clone(),
        ..Default::default()
    };
    let command = a.command.clone();
    let queue = a.queue.clone();
    let handler = move |m: Message| {
        let command = command.clone();
        let queue = queue.clone();
        async move { run_command(&command, &queue, m).await }
    };
    let w = Worker::new(c, a.queue.clone(), cfg).handle_any(handler);
    let report = w.run().await?;
    if cli.json {
        print_json(&report);
    } else {
        eprintln!(
            "rmq work: stopped; acked {}, retried {}, errored {}, abandoned {}",
            report.acked, report.retried, report.errored, report.abandoned
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the command with the body on stdin and the message's fields in the environment.
async fn run_command(command: &[String], queue: &str, m: Message) -> Result<(), HandlerError> {
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("RMQ_QUEUE", queue)
        .env("RMQ_ID", &m.id)
        .env("RMQ_TAG", &m.tag)
        .env("RMQ_KEY", &m.key)
        .env("RMQ_ATTEMPT", m.attempt.to_string())
        .env("RMQ_RECEIPT", &m.receipt)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        // A handler abandoned at the end of the grace period takes its process with it.
        .kill_on_drop(true);
    for (k, v) in &m.headers {
        let name: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        cmd.env(format!("RMQ_HEADER_{name}"), v);
    }
    let mut child = cmd.spawn().map_err(|e| HandlerError::error(format!("cannot run {}: {e}", command[0])))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = m.body.clone();
    let feeder = tokio::spawn(async move {
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let out = child.wait_with_output().await.map_err(|e| HandlerError::error(format!("waiting for {}: {e}", command[0])))?;
    let _ = feeder.await;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !stderr.is_empty() {
        eprintln!("{stderr}");
    }
    if out.status.success() {
        Ok(())
    } else {
        let reason = if stderr.is_empty() { format!("{} exited with {}", command[0], out.status) } else { stderr };
        Err(HandlerError::failed(reason))
    }
}
