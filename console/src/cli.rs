//! The options of `rmq console` and `rmq metrics` (the rest of the `rmq` command line, the Redis
//! URL and the edition, is the CLI's own).

use std::path::PathBuf;

use clap::Args;

/// `rmq console`: the web console.
#[derive(Args, Clone, Debug)]
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
    /// Where every action is recorded (JSON lines, appended and fsynced).
    #[arg(long, env = "RMQ_CONSOLE_AUDIT_LOG", default_value = "./datas/rmq-console-audit.jsonl", value_name = "PATH")]
    pub audit_log: PathBuf,
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
}

impl ConsoleArgs {
    /// The defaults, as `rmq console` with no option.
    pub fn new(listen: &str) -> ConsoleArgs {
        ConsoleArgs {
            listen: listen.to_string(),
            auth: None,
            token: None,
            read_only: false,
            audit_log: PathBuf::from("./datas/rmq-console-audit.jsonl"),
            refresh: 5000,
            history: 15,
            stall_after: 300,
        }
    }
}

/// `rmq metrics`: a headless Prometheus exporter.
#[derive(Args, Clone, Debug)]
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
}

impl MetricsArgs {
    pub fn new(listen: &str) -> MetricsArgs {
        MetricsArgs { listen: listen.to_string(), auth: None, token: None }
    }
}
