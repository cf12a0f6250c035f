//! The options of `rmq console` and `rmq metrics` (the rest of the `rmq` command line, the Redis
//! URL and the edition, is the CLI's own).

use std::path::PathBuf;

use clap::Args;

/// Serve the web console: every queue and message, the actions, an audit log, /metrics
#[derive(Args, Clone, Debug)]
#[command(after_help = "Examples:\n  \
    rmq console                                   # http://127.0.0.1:8080/\n  \
    rmq console --read-only --listen 127.0.0.1:9000\n  \
    RMQ_CONSOLE_AUTH=ann:s3cret rmq console --listen 0.0.0.0:8080\n  \
    rmq console --archive-db sqlite://rmq-archive.db   # with the Archive page\n\n\
    See docs/console.md.")]
pub struct ConsoleArgs {
    /// Address to serve on. Any address other than loopback (127.0.0.0/8, ::1) needs --auth or
    /// --token, and the console refuses to start without one.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// HTTP basic authentication: the user name and password every request must give.
    #[arg(long, env = "RMQ_CONSOLE_AUTH", value_name = "USER:PASSWORD")]
    pub auth: Option<String>,
    /// A bearer token every request must give (`Authorization: Bearer TOKEN`; in a browser,
    /// any user name with the token as password).
    #[arg(long, env = "RMQ_CONSOLE_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Show everything, change nothing: no action is offered and every action is refused.
    #[arg(long)]
    pub read_only: bool,
    /// Where every action is recorded (JSON lines, appended and fsynced). Default: one file
    /// per server, rmq/console/<host>-<port>-<db>.audit.jsonl in the user's state directory
    /// ($XDG_STATE_HOME, or ~/.local/state).
    #[arg(long, env = "RMQ_CONSOLE_AUDIT_LOG", value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// How often the console reads every queue (counts, rates, charts, stall flags), ms.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub refresh: u64,
    /// Minutes of throughput the charts show.
    #[arg(long, default_value_t = 15, value_name = "MINUTES")]
    pub history: u64,
    /// A queue with ready messages, not paused, and no ack for this many seconds is flagged
    /// as stalled.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub stall_after: u64,
    #[command(flatten)]
    pub archive: ArchiveOpts,
}

/// The SQL archive to show (`rmq archive`): the Archive page, and its lag and gaps in /metrics.
#[derive(Args, Clone, Debug)]
pub struct ArchiveOpts {
    /// The archive database, as `rmq archive --db` takes it: sqlite://FILE,
    /// postgres://user:pass@host/db or mysql://user:pass@host/db. Without it there is no
    /// archive page and no archive metric.
    #[arg(long, env = "RMQ_ARCHIVE_DB", value_name = "URL")]
    pub archive_db: Option<String>,
    /// The archivers' consumer group (`rmq archive run --group`), for the lag.
    #[arg(long, default_value = "rmq-archive", value_name = "GROUP")]
    pub archive_group: String,
}

impl ArchiveOpts {
    pub fn none() -> ArchiveOpts {
        ArchiveOpts { archive_db: None, archive_group: "rmq-archive".into() }
    }
}

impl ConsoleArgs {
    /// The defaults, as `rmq console` with no option.
    pub fn new(listen: &str) -> ConsoleArgs {
        ConsoleArgs {
            listen: listen.to_string(),
            auth: None,
            token: None,
            read_only: false,
            audit_log: None,
            refresh: 5000,
            history: 15,
            stall_after: 300,
            archive: ArchiveOpts::none(),
        }
    }
}

/// The audit log of a console on `url` when --audit-log is not given: in the user's state
/// directory, never the working directory (a console started elsewhere would not find it), one
/// per server (the entries of two servers never mix). Without a home directory:
/// `./rmq-console-<server>.audit.jsonl`.
pub fn default_audit_log(url: &str) -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".local/state")));
    let file = format!("{}.audit.jsonl", server_name(url));
    match state {
        Some(s) => s.join("rmq").join("console").join(file),
        None => PathBuf::from(format!("rmq-console-{file}")),
    }
}

/// `host-port-db` of a Redis URL, as a file name.
fn server_name(url: &str) -> String {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    let raw = match url.into_connection_info() {
        Ok(info) => {
            let db = info.redis_settings().db();
            match info.addr() {
                ConnectionAddr::Tcp(h, p) | ConnectionAddr::TcpTls { host: h, port: p, .. } => format!("{h}-{p}-{db}"),
                ConnectionAddr::Unix(path) => format!("unix-{}-{db}", path.display()),
                other => format!("{other}-{db}"),
            }
        }
        Err(_) => "default".into(),
    };
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// Serve Prometheus metrics of every queue on GET /metrics (a headless exporter)
#[derive(Args, Clone, Debug)]
#[command(after_help = "Examples:\n  \
    rmq metrics                                   # http://127.0.0.1:9898/metrics\n  \
    rmq --url redis://queue-host:6379 metrics --listen 0.0.0.0:9898\n  \
    rmq metrics --archive-db postgres://archive:secret@db1/archive   # with archive lag and gaps\n\n\
    See docs/console.md.")]
pub struct MetricsArgs {
    /// Address to serve `GET /metrics` on (for example 0.0.0.0:9898 for a Prometheus on
    /// another host).
    #[arg(long, default_value = "127.0.0.1:9898", value_name = "ADDR")]
    pub listen: String,
    /// HTTP basic authentication for scrapes (optional: the exporter shows counts, never a
    /// message).
    #[arg(long, env = "RMQ_METRICS_AUTH", value_name = "USER:PASSWORD")]
    pub auth: Option<String>,
    /// A bearer token for scrapes (optional).
    #[arg(long, env = "RMQ_METRICS_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    pub archive: ArchiveOpts,
}

impl MetricsArgs {
    pub fn new(listen: &str) -> MetricsArgs {
        MetricsArgs { listen: listen.to_string(), auth: None, token: None, archive: ArchiveOpts::none() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_has_its_own_audit_log_in_the_state_directory() {
        assert_eq!(server_name("redis://127.0.0.1:6399/2"), "127.0.0.1-6399-2");
        assert_eq!(server_name("redis://:pw@queues.example/"), "queues.example-6379-0");
        let p = default_audit_log("redis://127.0.0.1:6399/");
        let tail = |s: &str| p.to_string_lossy().ends_with(s);
        assert!(tail("rmq/console/127.0.0.1-6399-0.audit.jsonl") || tail("rmq-console-127.0.0.1-6399-0.audit.jsonl"), "{p:?}");
    }
}
