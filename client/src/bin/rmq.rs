//! `rmq`: the command line of rmq-client. See `rmq --help` and docs/client.md.
//!
//! One `Cmd` variant and one `match` arm per subcommand; the bodies live in the modules
//! under `rmq/`, one per group of subcommands.

#[path = "rmq/inspect.rs"]
mod inspect;
#[path = "rmq/output.rs"]
mod output;
#[path = "rmq/partition.rs"]
mod partition;
#[path = "rmq/push.rs"]
mod push;
#[path = "rmq/stats.rs"]
mod stats;
#[path = "rmq/work.rs"]
mod work;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rmq_client::{Client, Config, EditionChoice, Error};

use output::Out;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rmq",
    version,
    about = "rmq: a reliable message queue in Redis — push, work, inspect, spool",
    long_about = "rmq: a reliable message queue in Redis — push, work, inspect, spool.\n\n\
        It talks to a Redis that has the rmq module loaded, or to any Redis 7+ (it then \
        installs the rmq Lua library when a command that writes needs it). Given any node of \
        a Redis Cluster, it finds the cluster and sends each command to its queue's master.",
    after_help = EXIT_CODES,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

const EXIT_CODES: &str = "\
Exit status:
  0  done
  1  an error (Redis refused the command, bad input, a worker that cannot run its command …)
  2  bad usage of rmq itself
  3  Redis could not be reached or did not answer (the message names the URL)
  4  push: Redis could not take the message; it is in the local spool, not in Redis yet
  5  nothing changed: ack/nack/touch with stale receipts, get/del/requeue of unknown ids

Environment: REDIS_URL (--url), RMQ_SPOOL (--spool), RMQ_LOG (log filter, e.g. info, debug)";

/// Options every subcommand takes.
#[derive(Args)]
#[command(next_help_heading = "Global options")]
struct Global {
    /// Redis URL: redis://[user:password@]host[:port][/db], rediss:// for TLS. `make run`
    /// listens on redis://127.0.0.1:6399. For a Redis Cluster, the URL of any node.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true, value_name = "URL")]
    url: String,
    /// Directory of the local spool, where `push` keeps messages Redis could not take.
    /// Default: ~/.local/state/rmq/spool/<host>-<port>-<db>, one per server.
    #[arg(long, env = "RMQ_SPOOL", global = true, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Never spool: a push that Redis cannot take fails (exit 3) instead. For scripts.
    #[arg(long, global = true)]
    no_spool: bool,
    /// Machine-readable output: JSON on stdout, errors as {"error": …, "kind": …} on stderr.
    #[arg(long, global = true)]
    json: bool,
    /// Which edition to talk to: the RMQ.* module, the Lua library (FCALL), or auto:
    /// whichever the server has.
    #[arg(long, value_enum, default_value = "auto", global = true, value_name = "EDITION")]
    edition: EditionArg,
    /// Time allowed to open a connection, in milliseconds.
    #[arg(long, default_value_t = 2000, global = true, value_name = "MS")]
    connect_timeout: u64,
    /// Time allowed for one command's answer, in milliseconds (a blocking fetch gets its
    /// --block on top).
    #[arg(long, default_value_t = 5000, global = true, value_name = "MS")]
    command_timeout: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum EditionArg {
    Auto,
    Module,
    Lua,
}

#[derive(Subcommand)]
enum Cmd {
    Push(push::PushArgs),
    #[command(subcommand)]
    Spool(push::SpoolCmd),
    Fetch(inspect::FetchArgs),
    Ack(inspect::AckArgs),
    Nack(inspect::NackArgs),
    Touch(inspect::TouchArgs),
    Peek(inspect::PeekArgs),
    Get(inspect::GetArgs),
    Del(inspect::DelArgs),
    Requeue(inspect::RequeueArgs),
    Purge(inspect::PurgeArgs),
    Recover(inspect::RecoverArgs),
    #[command(subcommand)]
    Config(inspect::ConfigCmd),
    Log(inspect::LogArgs),
    Replay(inspect::ReplayArgs),
    Stats(stats::StatsArgs),
    Queues(inspect::QueuesArgs),
    Work(work::WorkArgs),
    #[command(subcommand, after_help = "Examples:\n  rmq partition create orders 12 --ordered\n  rmq partition show orders")]
    Partition(partition::PartitionCmd),
    Console(rmq_console::ConsoleArgs),
    Metrics(rmq_console::MetricsArgs),
    /// Keep every message in SQL (SQLite, PostgreSQL, MySQL); search and replay it
    #[command(subcommand)]
    Archive(rmq_archive::cli::ArchiveCmd),
}

/// What every subcommand gets: the global options, made ready to use.
pub struct Ctx {
    pub url: String,
    pub spool: Option<PathBuf>,
    pub out: Out,
    edition: EditionChoice,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl Ctx {
    fn new(g: &Global) -> Ctx {
        let spool = if g.no_spool { None } else { Some(g.spool.clone().unwrap_or_else(|| push::default_spool_for(&g.url))) };
        Ctx {
            url: g.url.clone(),
            spool,
            out: Out { json: g.json },
            edition: match g.edition {
                EditionArg::Auto => EditionChoice::Auto,
                EditionArg::Module => EditionChoice::Module,
                EditionArg::Lua => EditionChoice::Lua,
            },
            connect_timeout: Duration::from_millis(g.connect_timeout),
            command_timeout: Duration::from_millis(g.command_timeout),
        }
    }

    pub fn client(&self) -> Result<Client, Error> {
        let mut cfg = Config::new(self.url.clone());
        cfg.connect_timeout = self.connect_timeout;
        cfg.command_timeout = self.command_timeout;
        cfg.edition = self.edition;
        Client::new(cfg)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return output::usage_error(e),
    };
    // Per-message lines of `rmq work` are at info; everything else only warns.
    let default_filter = match cli.cmd {
        Cmd::Work(_) => "warn,rmq_client::worker=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RMQ_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let ctx = Ctx::new(&cli.global);
    match rt.block_on(run(&ctx, &cli.cmd)) {
        Ok(code) => code,
        Err(e) => ctx.out.error(&e),
    }
}

async fn run(ctx: &Ctx, cmd: &Cmd) -> Result<ExitCode, Error> {
    let code = match cmd {
        // Says itself whether the spool holds anything.
        Cmd::Push(a) => return push::push(ctx, a).await,
        Cmd::Spool(s) => return push::spool(ctx, s).await,
        Cmd::Fetch(a) => inspect::fetch(ctx, a).await?,
        Cmd::Ack(a) => inspect::ack(ctx, a).await?,
        Cmd::Nack(a) => inspect::nack(ctx, a).await?,
        Cmd::Touch(a) => inspect::touch(ctx, a).await?,
        Cmd::Peek(a) => inspect::peek(ctx, a).await?,
        Cmd::Get(a) => inspect::get(ctx, a).await?,
        Cmd::Del(a) => inspect::del(ctx, a).await?,
        Cmd::Requeue(a) => inspect::requeue(ctx, a).await?,
        Cmd::Purge(a) => inspect::purge(ctx, a).await?,
        Cmd::Recover(a) => inspect::recover(ctx, a).await?,
        Cmd::Config(c) => inspect::config(ctx, c).await?,
        Cmd::Log(a) => inspect::log(ctx, a).await?,
        Cmd::Replay(a) => inspect::replay(ctx, a).await?,
        Cmd::Stats(a) => stats::stats(ctx, a).await?,
        Cmd::Queues(a) => inspect::queues(ctx, a).await?,
        Cmd::Partition(p) => partition::partition(ctx, p).await?,
        // Long-running: drains the spool itself.
        Cmd::Work(a) => return work::work(ctx, a).await,
        // Long-running: serve until ctrl-c or SIGTERM (docs/console.md).
        Cmd::Console(a) => return Ok(rmq_console::console(std::sync::Arc::new(ctx.client()?), a).await?),
        Cmd::Metrics(a) => return Ok(rmq_console::metrics(std::sync::Arc::new(ctx.client()?), a).await?),
        Cmd::Archive(a) => return Ok(rmq_archive::cli::run(std::sync::Arc::new(ctx.client()?), ctx.out.json, a).await?),
    };
    push::warn_if_spool_pending(ctx);
    Ok(code)
}
