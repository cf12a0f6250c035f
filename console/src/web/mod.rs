//! The HTTP side: the console's pages and actions, and `/metrics`.
//!
//! Pages are rendered on the server (maud); the only script refreshes the parts marked
//! `data-live` (counts, charts) from fragment URLs. Every asset is compiled into the binary.

mod access;
mod actions;
mod archive;
mod assets;
mod audit_page;
mod chart;
mod fmt;
mod layout;
mod message;
mod overview;
mod queue;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::archive::Archive;
use crate::audit::AuditLog;
use crate::backend::{redact_url, Backend};
use crate::cli::{ConsoleArgs, MetricsArgs};
use crate::history::{History, HistoryConfig};
use crate::snapshot::{self, unix_ms};
use crate::Error;
use access::Access;

/// Everything a request handler needs.
pub struct App {
    pub redis: Arc<dyn Backend>,
    pub history: RwLock<History>,
    /// None for the headless exporter.
    pub audit: Option<AuditLog>,
    pub access: Access,
    pub read_only: bool,
    /// The token every form carries (see access.rs).
    pub csrf: String,
    /// How often the sampler reads Redis, and the pages refresh their live parts.
    pub refresh: Duration,
    /// The Redis URL without its password.
    pub url: String,
    /// The SQL archive (`--archive-db`): the Archive page and its metrics.
    pub archive: Option<Archive>,
}

pub type Shared = Arc<App>;

impl App {
    pub fn history(&self) -> std::sync::RwLockReadGuard<'_, History> {
        self.history.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads Redis into the history now (the sampler does it every `refresh`).
async fn sample(app: &App) {
    match snapshot::read(app.redis.as_ref()).await {
        Ok(s) => app.history.write().unwrap_or_else(|p| p.into_inner()).record(s),
        Err(e) => {
            tracing::warn!("reading Redis: {e}");
            app.history.write().unwrap_or_else(|p| p.into_inner()).record_error(unix_ms(), e.text);
        }
    }
}

/// Binds `listen`. With `guard_off_loopback`, an address other than loopback is refused unless
/// requests must authenticate.
async fn bind(listen: &str, access: &Access, guard_off_loopback: bool) -> Result<tokio::net::TcpListener, Error> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host(listen).await.map_err(|e| Error::Usage(format!("--listen {listen}: {e}")))?.collect();
    let Some(&addr) = addrs.first() else {
        return Err(Error::Usage(format!("--listen {listen}: no address found")));
    };
    if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        if guard_off_loopback && !access.required() {
            return Err(Error::Usage(format!(
                "refusing to serve the console on {open} without authentication: \
                 give --auth USER:PASSWORD or --token TOKEN, or listen on 127.0.0.1"
            )));
        }
    }
    tokio::net::TcpListener::bind(addr).await.map_err(|err| Error::Listen { addr: addr.to_string(), err })
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    sampler: Option<tokio::task::JoinHandle<()>>,
    audit: Option<std::path::PathBuf>,
) -> Result<crate::Running, Error> {
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(crate::Running { addr, stop: Some(stop), server, sampler, audit })
}

pub async fn start_console(redis: Arc<dyn Backend>, args: &ConsoleArgs) -> Result<crate::Running, Error> {
    let access = Access::new(args.auth.as_deref(), args.token.as_deref())?;
    if args.refresh < 100 {
        return Err(Error::Usage("--refresh must be at least 100 ms".into()));
    }
    if args.history == 0 {
        return Err(Error::Usage("--history must be at least 1 minute".into()));
    }
    let listener = bind(&args.listen, &access, true).await?;
    let audit = if args.read_only {
        None
    } else {
        let path = args.audit_log.clone().unwrap_or_else(|| crate::cli::default_audit_log(&redis.url()));
        Some(AuditLog::open(&path).map_err(|err| Error::Audit { path: path.display().to_string(), err })?)
    };
    let archive = open_archive(&redis, &args.archive).await?;
    let refresh = Duration::from_millis(args.refresh);
    let keep = ((args.history * 60_000) / args.refresh).clamp(2, 100_000) as usize;
    let app = Arc::new(App {
        url: redact_url(&redis.url()),
        redis,
        history: RwLock::new(History::new(HistoryConfig {
            keep,
            stall_after: Duration::from_secs(args.stall_after),
            rate_window: Duration::from_secs(60).max(refresh * 2),
        })),
        audit,
        access,
        read_only: args.read_only,
        csrf: random_token(),
        refresh,
        archive,
    });
    let audit_path = app.audit.as_ref().map(|a| a.path().to_path_buf());
    // The first reading before the first page (a Redis that is down is shown on the pages).
    sample(&app).await;
    let sampler = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                sample(&app).await;
            }
        })
    };
    let router = Router::new()
        .route("/", get(overview::page))
        .route("/live/overview", get(overview::live))
        .route("/queues/{queue}", get(queue::page))
        .route("/live/queues/{queue}", get(queue::live))
        .route("/queues/{queue}/message", get(message::page))
        .route("/queues/{queue}/find", get(message::find))
        .route("/queues/{queue}/{action}", post(actions::act))
        .route("/audit", get(audit_page::page))
        .route("/metrics", get(metrics))
        .merge(archive::routes(app.archive.is_some()))
        .route("/assets/{file}", get(assets::serve))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), access::guard))
        .with_state(app);
    serve(listener, router, Some(sampler), audit_path)
}

pub async fn start_metrics(redis: Arc<dyn Backend>, args: &MetricsArgs) -> Result<crate::Running, Error> {
    let access = Access::new(args.auth.as_deref(), args.token.as_deref())?;
    // The exporter shows counts, never a message: it may listen anywhere (docs/console.md).
    let listener = bind(&args.listen, &access, false).await?;
    let archive = open_archive(&redis, &args.archive).await?;
    let app = Arc::new(App {
        url: redact_url(&redis.url()),
        redis,
        history: RwLock::new(History::new(HistoryConfig {
            keep: 2,
            stall_after: Duration::from_secs(300),
            rate_window: Duration::from_secs(60),
        })),
        audit: None,
        access,
        read_only: true,
        csrf: random_token(),
        refresh: Duration::from_secs(5),
        archive,
    });
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(metrics_index))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), access::guard))
        .with_state(app);
    serve(listener, router, None, None)
}

/// The archive of `--archive-db`, opened and checked, or None without the option.
async fn open_archive(redis: &Arc<dyn Backend>, opts: &crate::cli::ArchiveOpts) -> Result<Option<Archive>, Error> {
    match &opts.archive_db {
        Some(url) => Ok(Some(Archive::open(url, &opts.archive_group, redis.clone()).await?)),
        None => Ok(None),
    }
}

/// `GET /metrics`: a fresh reading of Redis (and of the archive, when there is one) at every
/// scrape; the two readings run at the same time.
async fn metrics(State(app): State<Shared>) -> Response {
    let start = Instant::now();
    let archive = async {
        match &app.archive {
            Some(a) => Some(a.health().await),
            None => None,
        }
    };
    let (snap, archive) = tokio::join!(snapshot::read(app.redis.as_ref()), archive);
    let secs = start.elapsed().as_secs_f64();
    let mut body = match &snap {
        Ok(s) => crate::metrics::render(Some(s), secs),
        Err(e) => {
            tracing::warn!("scrape: reading Redis: {e}");
            crate::metrics::render(None, secs)
        }
    };
    if let Some(health) = archive {
        if let Err(e) = &health {
            tracing::warn!("scrape: reading the archive: {e}");
        }
        crate::metrics::render_archive(&mut body, health.as_ref().ok());
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn metrics_index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><title>rmq metrics</title><p>rmq exporter: <a href=\"/metrics\">/metrics</a></p>",
    )
        .into_response()
}

async fn not_found(State(app): State<Shared>) -> Response {
    layout::error_page(&app, StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}
