//! The worker: fetches, runs the handler registered for each message's tag, ACKs or NACKs,
//! keeps the lock alive while a handler runs, and stops gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{Client, Fetch, NackKind};
use crate::error::Result;
use crate::message::Message;

/// Why a handler did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// The work failed and may succeed later: NACK RETRY (the queue's backoff and
    /// max-attempts apply), or NACK ERROR when `failed_is_error` is set.
    Failed(String),
    /// An error: NACK ERROR with this text, the message goes to errors.
    Error(String),
    /// Give up for good: NACK FAIL, the message goes to failed.
    Fail(String),
}

impl HandlerError {
    pub fn failed(reason: impl Into<String>) -> HandlerError {
        HandlerError::Failed(reason.into())
    }
    pub fn error(reason: impl Into<String>) -> HandlerError {
        HandlerError::Error(reason.into())
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Failed(r) => write!(f, "failed: {r}"),
            HandlerError::Error(r) => write!(f, "error: {r}"),
            HandlerError::Fail(r) => write!(f, "fail: {r}"),
        }
    }
}

/// Any error type turns into [`HandlerError::Error`] with its text, so `?` works in handlers.
impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::Error(e.to_string())
    }
}

pub type HandlerResult = std::result::Result<(), HandlerError>;
type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;
type Handler = Arc<dyn Fn(Message) -> BoxFuture + Send + Sync>;

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// How long a fetched message stays invisible to others (the seeds' MessageLockTime). The
    /// worker TOUCHes it every `lock / 2` while its handler runs.
    pub lock: Duration,
    /// Handlers running at once.
    pub concurrency: usize,
    /// A handler's [`HandlerError::Failed`] goes to errors instead of being retried
    /// (the seeds' FailedIsError).
    pub failed_is_error: bool,
    /// A message whose tag has no handler goes to errors; when false it is ACKed and dropped
    /// (the seeds' NoSupperIsError).
    pub no_handler_is_error: bool,
    /// After a stop signal, how long running handlers may take to finish; handlers still
    /// running then are abandoned, and their messages come back when their lock runs out.
    pub grace: Duration,
    /// Longest wait of one blocking FETCH (the worker notices a stop signal at once anyway).
    pub block: Duration,
    /// CONSUMER name shown by PEEK INFLIGHT; default `host:pid`.
    pub consumer: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lock: Duration::from_secs(30),
            concurrency: 8,
            failed_is_error: false,
            no_handler_is_error: true,
            grace: Duration::from_secs(30),
            block: Duration::from_secs(5),
            consumer: None,
        }
    }
}

/// What a worker did, counted when it stops.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerReport {
    pub acked: u64,
    pub retried: u64,
    pub errored: u64,
    pub failed: u64,
    /// ACKed without a handler (`no_handler_is_error` off).
    pub dropped: u64,
    /// Handlers still running when the grace period ended (their messages come back by lock
    /// expiry).
    pub abandoned: u64,
    /// ACK/NACK that found the receipt stale (the lock had run out and the message went to
    /// someone else) or could not reach Redis.
    pub stale: u64,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    retried: AtomicU64,
    errored: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    stale: AtomicU64,
}

/// A worker for one queue.
pub struct Worker {
    client: Client,
    queue: String,
    cfg: WorkerConfig,
    handlers: HashMap<String, Handler>,
    fallback: Option<Handler>,
}

/// Aborts the task when dropped, so an abandoned handler does not run on unseen.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Ctx {
    client: Client,
    queue: String,
    cfg: WorkerConfig,
    handlers: HashMap<String, Handler>,
    fallback: Option<Handler>,
    counters: Counters,
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

impl Worker {
    pub fn new(client: Client, queue: impl Into<String>, cfg: WorkerConfig) -> Worker {
        Worker { client, queue: queue.into(), cfg, handlers: HashMap::new(), fallback: None }
    }

    /// Registers the handler of messages tagged `tag` (`""`: messages without a tag).
    pub fn handle<F, Fut>(mut self, tag: impl Into<String>, f: F) -> Worker
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.handlers.insert(tag.into(), Arc::new(move |m| Box::pin(f(m)) as BoxFuture));
        self
    }

    /// Registers the handler of every tag that has none of its own.
    pub fn handle_any<F, Fut>(mut self, f: F) -> Worker
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |m| Box::pin(f(m)) as BoxFuture));
        self
    }

    /// Runs until ctrl-c or SIGTERM, then stops gracefully.
    pub async fn run(self) -> Result<WorkerReport> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `stop` completes, then stops fetching, gives running handlers up to
    /// `grace` to finish, and abandons the rest (their messages come back by lock expiry).
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<WorkerReport> {
        let Worker { client, queue, mut cfg, handlers, fallback } = self;
        crate::message::validate_queue(&queue)?;
        cfg.concurrency = cfg.concurrency.max(1);
        if cfg.consumer.is_none() {
            let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
            cfg.consumer = Some(format!("{}:{}", if host.is_empty() { "rmq" } else { &host }, std::process::id()));
        }
        let ctx = Arc::new(Ctx { client, queue, cfg, handlers, fallback, counters: Counters::default() });
        let sem = Arc::new(Semaphore::new(ctx.cfg.concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        tokio::pin!(stop);
        let mut stopped = false;
        let mut pause = Duration::from_millis(50);
        let mut poll = ctx.client.config().poll_min;
        'fetching: while !stopped {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                p = sem.clone().acquire_owned() => p.expect("semaphore closed"),
                _ = &mut stop => break 'fetching,
            };
            let mut permits = vec![first];
            while permits.len() < 1000 {
                match sem.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // A FETCH is never cancelled half way (its messages would sit in flight until
            // their lock ran out): the module blocks on the server in short slices, and the
            // Lua edition, which cannot block, is polled here with pauses that a stop cuts short.
            let module = matches!(ctx.client.edition().await, Ok(crate::client::Edition::Module));
            let f = Fetch {
                count: Some(permits.len() as u32),
                lock: Some(ctx.cfg.lock),
                block: module.then(|| ctx.cfg.block.clamp(Duration::from_millis(1), Duration::from_secs(1))),
                consumer: ctx.cfg.consumer.clone(),
            };
            let fetch = ctx.client.fetch(&ctx.queue, &f);
            tokio::pin!(fetch);
            let res = loop {
                tokio::select! {
                    biased;
                    r = &mut fetch => break r,
                    _ = &mut stop, if !stopped => stopped = true,
                }
            };
            match res {
                Ok(msgs) => {
                    pause = Duration::from_millis(50);
                    let empty = msgs.is_empty();
                    for m in msgs {
                        let permit = permits.pop().expect("more messages than asked for");
                        let c = ctx.clone();
                        tasks.spawn(async move {
                            c.process(m).await;
                            drop(permit);
                        });
                    }
                    if empty && !module && !stopped {
                        tokio::select! {
                            _ = tokio::time::sleep(poll) => {}
                            _ = &mut stop => break 'fetching,
                        }
                        poll = (poll * 2).min(ctx.client.config().poll_max);
                    } else if !empty {
                        poll = ctx.client.config().poll_min;
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %ctx.queue, error = %e, "rmq worker: fetch failed");
                    if stopped {
                        break 'fetching;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut stop => break 'fetching,
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        // Stopping: no more fetches; let running handlers finish within the grace period.
        let finished = tokio::time::timeout(ctx.cfg.grace, async { while tasks.join_next().await.is_some() {} }).await;
        let abandoned = if finished.is_err() {
            let n = tasks.len() as u64;
            tracing::warn!(queue = %ctx.queue, handlers = n,
                "rmq worker: grace period over; abandoning running handlers (their messages come back by lock expiry)");
            tasks.shutdown().await;
            n
        } else {
            0
        };
        let c = &ctx.counters;
        Ok(WorkerReport {
            acked: c.acked.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            errored: c.errored.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            abandoned,
            stale: c.stale.load(Ordering::Relaxed),
        })
    }
}

impl Ctx {
    async fn process(&self, m: Message) {
        let receipt = m.receipt.clone();
        let handler = self.handlers.get(&m.tag).or(self.fallback.as_ref()).cloned();
        let Some(handler) = handler else {
            if self.cfg.no_handler_is_error {
                let reason = format!("no handler for tag '{}'", m.tag);
                self.finish(&receipt, Some((NackKind::Error, reason)), &self.counters.errored).await;
            } else {
                self.finish(&receipt, None, &self.counters.dropped).await;
            }
            return;
        };
        let id = m.id.clone();
        let mut job = AbortOnDrop(tokio::spawn(handler(m)));
        // Heartbeat: TOUCH every half lock while the handler runs.
        let half = (self.cfg.lock / 2).max(Duration::from_millis(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let res = loop {
            tokio::select! {
                r = &mut job.0 => break r,
                _ = tick.tick() => {
                    match self.client.touch(&self.queue, &receipt, Some(self.cfg.lock)).await {
                        Ok(0) => tracing::warn!(queue = %self.queue, id = %id,
                            "rmq worker: lock lost (the message went back to the queue); the handler runs on"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(queue = %self.queue, id = %id, error = %e, "rmq worker: TOUCH failed"),
                    }
                }
            }
        };
        let c = &self.counters;
        match res {
            Ok(Ok(())) => self.finish(&receipt, None, &c.acked).await,
            Ok(Err(HandlerError::Failed(r))) => {
                if self.cfg.failed_is_error {
                    self.finish(&receipt, Some((NackKind::Error, r)), &c.errored).await
                } else {
                    self.finish(&receipt, Some((NackKind::Retry { delay: None }, r)), &c.retried).await
                }
            }
            Ok(Err(HandlerError::Error(r))) => self.finish(&receipt, Some((NackKind::Error, r)), &c.errored).await,
            Ok(Err(HandlerError::Fail(r))) => self.finish(&receipt, Some((NackKind::Fail, r)), &c.failed).await,
            Err(e) if e.is_panic() => {
                let text = format!("panic: {}", panic_text(&*e.into_panic()));
                self.finish(&receipt, Some((NackKind::Error, text)), &c.errored).await
            }
            Err(_) => {}
        }
    }

    /// ACK (None) or NACK, retried while Redis is unavailable, for at most one lock period.
    async fn finish(&self, receipt: &str, nack: Option<(NackKind, String)>, counter: &AtomicU64) {
        let until = Instant::now() + self.cfg.lock;
        let mut pause = Duration::from_millis(50);
        loop {
            let res = match &nack {
                None => self.client.ack(&self.queue, &[receipt]).await.map(|n| n == 1),
                Some((kind, reason)) => {
                    let reason: String = reason.chars().take(4000).collect();
                    self.client.nack(&self.queue, receipt, *kind, Some(&reason)).await
                }
            };
            match res {
                Ok(true) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(false) => {
                    tracing::warn!(queue = %self.queue, receipt, "rmq worker: stale receipt (the lock ran out and the message went back)");
                    self.counters.stale.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) if e.is_unavailable() && Instant::now() + pause < until => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::error!(queue = %self.queue, receipt, error = %e,
                        "rmq worker: could not ACK/NACK; the message comes back by lock expiry");
                    self.counters.stale.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
