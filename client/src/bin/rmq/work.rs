//! `rmq work QUEUE -- COMMAND …`: a worker that runs a command per message.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::Args;
use rmq_client::{Error, HandlerError, Message, Producer, ProducerConfig, Worker, WorkerConfig};
use tokio::io::AsyncWriteExt;

use crate::output::exit;
use crate::Ctx;

/// The command's exit status that means "this message is bad, do not retry it": the
/// message is dead-lettered (sysexits' EX_DATAERR).
pub const EXIT_DO_NOT_RETRY: i32 = 65;

/// Run COMMAND for every message of QUEUE, body on stdin
///
/// The command's exit status decides: 0 acks the message; 65 dead-letters it (no retry);
/// 126 or 127 (cannot execute, not found) means the worker is broken, not the message: the
/// message goes back to ready and `rmq work` stops (exit 1); anything else, or a kill by a
/// signal, retries it with the queue's backoff (--failed-is-error: to errors instead). Its
/// stderr is the reason stored with the message. The command is checked before the first
/// fetch.
///
/// For a partitioned queue, every partition is worked, in turn. The message's fields are in
/// the command's environment: RMQ_QUEUE (the message's queue: a partition for a partitioned
/// queue), RMQ_ID, RMQ_TAG, RMQ_KEY, RMQ_ATTEMPT, RMQ_RECEIPT, and RMQ_HEADER_<NAME> per
/// header (upper case, other characters as _). Each message is logged on stderr (start, outcome, reason). ctrl-c or
/// SIGTERM stops it gracefully. It also sends what the spool holds.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    rmq work emails --concurrency 4 --timeout 60000 -- ./send-email.sh\n  \
    rmq --url redis://127.0.0.1:6399 work jobs -- sh -c 'cat >> done.txt'")]
pub struct WorkArgs {
    /// The queue's name.
    queue: String,
    /// Commands running at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    concurrency: usize,
    /// Lock per message, in milliseconds; it is extended (TOUCH) every half lock while the
    /// command runs.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    lock: u64,
    /// Longest run of the command per message, in milliseconds (0: no limit). Past it the
    /// command is killed and the message retried with reason "timeout after … ms".
    #[arg(long, default_value_t = 3_600_000, value_name = "MS")]
    timeout: u64,
    /// A failing command sends the message to errors instead of retrying it.
    #[arg(long)]
    failed_is_error: bool,
    /// On ctrl-c / SIGTERM, how long running commands may take to finish, in milliseconds;
    /// then they are killed (their messages come back when their lock runs out).
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    grace: u64,
    /// How long to wait for a first answer from Redis at start, in milliseconds; then exit 3.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    startup_timeout: u64,
    /// A name for this worker, shown by `rmq peek QUEUE inflight` (default host:pid).
    #[arg(long, value_name = "NAME")]
    consumer: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Finds the program the way a shell would (a path as it is, a name in $PATH), and checks
/// it can be run, so a mistyped command fails before any message is fetched.
fn check_command(program: &str) -> Result<PathBuf, Error> {
    let runnable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let bad = |why: &str| Error::Config(format!("cannot run '{program}': {why}"));
    if program.contains('/') {
        let p = PathBuf::from(program);
        if !p.exists() {
            return Err(bad("no such file"));
        }
        if !runnable(&p) {
            return Err(bad("not an executable file"));
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| runnable(p)).ok_or_else(|| bad("not found in PATH"))
}

pub async fn work(ctx: &Ctx, a: &WorkArgs) -> Result<ExitCode, Error> {
    check_command(&a.command[0])?;
    let client = ctx.client()?;
    // A long-running command: it sends the spool too (now and whenever it fills).
    let _drainer = match &ctx.spool {
        Some(dir) => {
            let cfg = ProducerConfig { spool_dir: Some(dir.clone()), ..Default::default() };
            Some(Producer::new(client.clone(), cfg).await?)
        }
        None => None,
    };
    let cfg = WorkerConfig {
        lock: Duration::from_millis(a.lock.max(1)),
        concurrency: a.concurrency.max(1),
        timeout: (a.timeout > 0).then(|| Duration::from_millis(a.timeout)),
        failed_is_error: a.failed_is_error,
        no_handler_is_error: true,
        grace: Duration::from_millis(a.grace),
        startup_timeout: Duration::from_millis(a.startup_timeout),
        consumer: a.consumer.clone(),
        ..Default::default()
    };
    tracing::info!(queue = %a.queue, command = ?a.command, "rmq work: starting");
    let command = a.command.clone();
    let handler = move |m: Message| {
        let command = command.clone();
        let queue = m.queue.clone();
        async move { run_command(&command, &queue, m).await }
    };
    let w = Worker::new(client, a.queue.clone(), cfg).handle_any(handler);
    let report = match w.run().await {
        Ok(r) => r,
        Err(Error::WorkerFault(why)) => {
            return Ok(ctx.out.fail(
                &format!(
                    "rmq work stopped: {why}; the message went back to the queue (not to \
                     errors): fix the command and start again"
                ),
                "worker_fault",
                exit::ERROR,
            ))
        }
        Err(e) => return Err(e),
    };
    if ctx.out.json {
        ctx.out.json(&report);
    } else {
        eprintln!(
            "rmq work: stopped; acked {}, retried {}, errored {}, dead-lettered {}, abandoned {}, stale {}",
            report.acked, report.retried, report.errored, report.failed, report.abandoned, report.stale
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
        // A handler stopped by its timeout, or abandoned at the end of the grace period,
        // takes its process with it.
        .kill_on_drop(true);
    for (k, v) in &m.headers {
        let name: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        cmd.env(format!("RMQ_HEADER_{name}"), v);
    }
    let mut child = cmd.spawn().map_err(|e| HandlerError::worker_fault(format!("cannot start '{}': {e}", command[0])))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = m.body.clone();
    let feeder = tokio::spawn(async move {
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let out = child.wait_with_output().await.map_err(|e| HandlerError::worker_fault(format!("waiting for '{}': {e}", command[0])))?;
    let _ = feeder.await;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !stderr.is_empty() {
        eprintln!("{stderr}");
    }
    let reason = |what: String| {
        if stderr.is_empty() {
            what
        } else {
            stderr.clone()
        }
    };
    match out.status.code() {
        Some(0) => Ok(()),
        Some(EXIT_DO_NOT_RETRY) => {
            Err(HandlerError::dead_letter(reason(format!("'{}' exited with {EXIT_DO_NOT_RETRY} (do not retry)", command[0]))))
        }
        Some(c @ (126 | 127)) => Err(HandlerError::worker_fault(format!(
            "'{}' exited with {c} ({}){}",
            command[0],
            if c == 126 { "cannot execute" } else { "command not found" },
            if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
        ))),
        _ => Err(HandlerError::retry(reason(format!("'{}' {}", command[0], out.status)))),
    }
}
