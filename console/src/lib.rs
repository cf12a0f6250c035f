//! rmq-console: the web console (`rmq console`) and the Prometheus exporter (`rmq metrics`) of
//! rmq. See `docs/console.md`.
//!
//! - [`snapshot`] reads every queue of a node in two round trips;
//! - [`history`] keeps what the charts, rates and stall flags need between readings;
//! - [`metrics`] renders a snapshot in the Prometheus text format;
//! - `web` serves the pages and actions (axum, HTML rendered on the server with maud);
//! - `audit` records every action;
//! - `archive` opens the SQL archive (`--archive-db`) for the Archive page and its metrics.
//!
//! Redis is reached through a [`backend::Backend`] (the trait the console shares with the
//! archive, crate `rmq-backend`), which the rmq client implements.

pub mod archive;
pub mod backend;
pub mod cli;
pub mod history;
pub mod metrics;
pub mod reply;
pub mod snapshot;

mod audit;
mod web;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

pub use backend::Backend;
pub use cli::{ArchiveOpts, ConsoleArgs, MetricsArgs};

/// Why the console or the exporter could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad option, or an unsafe combination (a public address without authentication).
    #[error("{0}")]
    Usage(String),
    #[error("cannot listen on {addr}: {err}")]
    Listen { addr: String, err: std::io::Error },
    #[error("audit log {path}: {err}")]
    Audit { path: String, err: std::io::Error },
    /// The archive given with --archive-db cannot be opened or holds no rmq archive.
    #[error("--archive-db: {0}")]
    Archive(String),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// A console or exporter serving in the background.
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    sampler: Option<tokio::task::JoinHandle<()>>,
    /// The console's audit log (None: read-only, or the exporter).
    audit: Option<std::path::PathBuf>,
}

impl Running {
    /// The address it listens on (with the port the system chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the console records its actions (None when read-only, and for the exporter).
    pub fn audit_log(&self) -> Option<&std::path::Path> {
        self.audit.as_deref()
    }

    /// Stops serving (requests under way finish) and waits for it.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.finish().await
    }

    async fn finish(mut self) -> Result<(), Error> {
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
        match (&mut self.server).await {
            Ok(r) => r.map_err(Error::Serve),
            Err(e) => Err(Error::Serve(std::io::Error::other(e))),
        }
    }

    /// Serves until ctrl-c or SIGTERM.
    pub async fn until_signal(mut self) -> Result<ExitCode, Error> {
        rmq_backend::shutdown_signal().await;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.finish().await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Starts the console: checks the options, opens the audit log, takes a first reading of Redis,
/// and serves in the background.
pub async fn start_console(redis: Arc<dyn Backend>, args: &ConsoleArgs) -> Result<Running, Error> {
    web::start_console(redis, args).await
}

/// Starts the headless exporter (`GET /metrics`) in the background.
pub async fn start_metrics(redis: Arc<dyn Backend>, args: &MetricsArgs) -> Result<Running, Error> {
    web::start_metrics(redis, args).await
}

/// `rmq console`: serves until ctrl-c or SIGTERM.
pub async fn console(redis: Arc<dyn Backend>, args: &ConsoleArgs) -> Result<ExitCode, Error> {
    let running = start_console(redis, args).await?;
    let audit = running.audit_log().map_or("read-only".to_string(), |p| format!("audit log {}", p.display()));
    let archive = args.archive.archive_db.as_deref().map_or(String::new(), |u| format!(", archive {}", rmq_archive::db::redact(u)));
    eprintln!("rmq console: http://{}/ ({audit}{archive})", running.addr());
    running.until_signal().await
}

/// `rmq metrics`: serves `GET /metrics` until ctrl-c or SIGTERM.
pub async fn metrics(redis: Arc<dyn Backend>, args: &MetricsArgs) -> Result<ExitCode, Error> {
    let running = start_metrics(redis, args).await?;
    eprintln!("rmq metrics: http://{}/metrics", running.addr());
    running.until_signal().await
}
