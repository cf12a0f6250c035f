//! The worker: fetches, runs the handler registered for each message's tag, ACKs or NACKs,
//! keeps the lock alive while a handler runs, and stops gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{Client, Fetch, NackKind};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::partition::Rotation;

/// Completes on ctrl-c or SIGTERM (one implementation for every rmq long-running command).
pub use rmq_backend::shutdown_signal;

/// Why a handler did not succeed; each variant is named after what happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// The work failed and may succeed later: NACK RETRY (the queue's backoff and
    /// max-attempts apply), or NACK ERROR when `failed_is_error` is set.
    Retry(String),
    /// The message cannot be handled: NACK ERROR with this text, the message goes to the
    /// errors state for a person to look at. Any `std::error::Error` returned with `?`
    /// becomes this.
    Error(String),
    /// Give up on the message for good, no retry: NACK FAIL, it goes to the failed (dead
    /// letter) state.
    DeadLetter(String),
    /// Not the message's fault: this worker cannot do any work (its command cannot be
    /// started, a dependency is missing). The message goes back to ready at once, its
    /// attempt not held against it, and the worker stops: [`Worker::run`] returns
    /// [`Error::WorkerFault`].
    WorkerFault(String),
}

impl HandlerError {
    pub fn retry(reason: impl Into<String>) -> HandlerError {
        HandlerError::Retry(reason.into())
    }
    pub fn error(reason: impl Into<String>) -> HandlerError {
        HandlerError::Error(reason.into())
    }
    pub fn dead_letter(reason: impl Into<String>) -> HandlerError {
        HandlerError::DeadLetter(reason.into())
    }
    pub fn worker_fault(reason: impl Into<String>) -> HandlerError {
        HandlerError::WorkerFault(reason.into())
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Retry(r) => write!(f, "retry: {r}"),
            HandlerError::Error(r) => write!(f, "error: {r}"),
            HandlerError::DeadLetter(r) => write!(f, "dead letter: {r}"),
            HandlerError::WorkerFault(r) => write!(f, "worker fault: {r}"),
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
    /// How long a fetched message stays invisible to other consumers. The worker TOUCHes it
    /// every `lock / 2` while its handler runs, so a long handler keeps it.
    pub lock: Duration,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Longest run of one handler (`None`: no limit). Past it the handler is stopped (its
    /// future dropped; `rmq work` kills its command) and the message is retried with reason
    /// "timeout after N ms". Without it, a hung handler would be TOUCHed for ever.
    pub timeout: Option<Duration>,
    /// A handler's [`HandlerError::Retry`] sends the message to errors instead of retrying it.
    pub failed_is_error: bool,
    /// A message whose tag has no handler goes to errors; when false it is ACKed and dropped.
    pub no_handler_is_error: bool,
    /// After a stop signal, how long running handlers may take to finish; handlers still
    /// running then are abandoned, and their messages come back when their lock runs out.
    pub grace: Duration,
    /// Longest wait of one blocking FETCH (module edition). A FETCH in progress is never
    /// abandoned (its messages would sit in flight until their lock ran out), so a stop
    /// signal waits for it: this is also the longest a stop can wait before the grace period
    /// starts.
    pub block: Duration,
    /// How long [`Worker::run`] waits for a first answer from Redis before it returns
    /// [`Error::Unavailable`], so a worker pointed at a wrong address or a dead server fails
    /// instead of idling. Once it has had an answer, the worker rides out outages (logging
    /// each failed FETCH).
    pub startup_timeout: Duration,
    /// CONSUMER name shown by PEEK INFLIGHT; default `host:pid`.
    pub consumer: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lock: Duration::from_secs(30),
            concurrency: 8,
            timeout: Some(Duration::from_secs(3600)),
            failed_is_error: false,
            no_handler_is_error: true,
            grace: Duration::from_secs(30),
            block: Duration::from_secs(1),
            startup_timeout: Duration::from_secs(30),
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

/// A worker for one queue, or for every partition of a partitioned queue (taken in turn,
/// from a random first one, so that workers spread over the partitions).
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
    /// The partitions, taken in turn, when `queue` is a partitioned queue.
    rotation: Option<Rotation>,
    cfg: WorkerConfig,
    handlers: HashMap<String, Handler>,
    fallback: Option<Handler>,
    counters: Counters,
    /// Set by the first [`HandlerError::WorkerFault`]: the worker stops fetching.
    fault: std::sync::Mutex<Option<String>>,
    faulted: Notify,
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

/// What became of a message, for the log line and the counters.
enum Outcome {
    Ack,
    Nack(NackKind, String),
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
    ///
    /// Errors: [`Error::Unavailable`] when Redis gave no answer within `startup_timeout`
    /// (or refused the worker, e.g. a wrong password: then at once);
    /// [`Error::WorkerFault`] when a handler said the worker cannot work (after the graceful
    /// stop).
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<WorkerReport> {
        let Worker { client, queue, mut cfg, handlers, fallback } = self;
        crate::message::validate_queue(&queue)?;
        cfg.concurrency = cfg.concurrency.max(1);
        if cfg.consumer.is_none() {
            let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
            cfg.consumer = Some(format!("{}:{}", if host.is_empty() { "rmq" } else { &host }, std::process::id()));
        }
        tokio::pin!(stop);
        let Some(edition) = first_answer(&client, cfg.startup_timeout, &mut stop).await? else {
            return Ok(WorkerReport::default());
        };
        let Some(partitioned) = partitions_of(&client, &queue, cfg.startup_timeout, &mut stop).await? else {
            return Ok(WorkerReport::default());
        };
        let rotation = partitioned.map(|p| Rotation::new(p.partitions));
        tracing::info!(queue = %queue, server = %client.display_url(), edition = ?edition,
            concurrency = cfg.concurrency, consumer = cfg.consumer.as_deref().unwrap_or(""),
            partitions = rotation.as_ref().map(|r| r.queues().len()).unwrap_or(0),
            "rmq worker: started");
        let ctx = Arc::new(Ctx {
            client,
            queue,
            rotation,
            cfg,
            handlers,
            fallback,
            counters: Counters::default(),
            fault: std::sync::Mutex::new(None),
            faulted: Notify::new(),
        });
        let sem = Arc::new(Semaphore::new(ctx.cfg.concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut stopped = false;
        let mut pause = Duration::from_millis(50);
        let mut poll = ctx.client.config().poll_min;
        let faulted = ctx.faulted.notified();
        tokio::pin!(faulted);
        'fetching: while !stopped {
            while tasks.try_join_next().is_some() {}
            if ctx.fault.lock().unwrap().is_some() {
                break 'fetching;
            }
            let first = tokio::select! {
                p = sem.clone().acquire_owned() => p.expect("semaphore closed"),
                _ = &mut stop => break 'fetching,
                _ = &mut faulted => break 'fetching,
            };
            let mut permits = vec![first];
            while permits.len() < 1000 {
                match sem.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // A FETCH is never cancelled half way (its messages would sit in flight until
            // their lock ran out): the module blocks on the server for at most `block`, and
            // the Lua edition, which cannot block, is polled here with pauses that a stop
            // cuts short.
            // A partitioned queue is fetched from in rounds that never block (a FETCH blocks on
            // one queue only), with pauses between empty rounds.
            let module = ctx.rotation.is_none() && matches!(ctx.client.edition().await, Ok(crate::client::Edition::Module));
            let f = Fetch {
                count: Some(permits.len() as u32),
                lock: Some(ctx.cfg.lock),
                block: module.then(|| ctx.cfg.block.max(Duration::from_millis(1))),
                consumer: ctx.cfg.consumer.clone(),
            };
            let fetch = async {
                match &ctx.rotation {
                    Some(r) => r.fetch_round(&ctx.client, &f).await,
                    None => ctx.client.fetch(&ctx.queue, &f).await,
                }
            };
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
                            _ = &mut faulted => break 'fetching,
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
                        _ = &mut faulted => break 'fetching,
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
        if let Some(why) = ctx.fault.lock().unwrap().take() {
            return Err(Error::WorkerFault(why));
        }
        let c = &ctx.counters;
        let report = WorkerReport {
            acked: c.acked.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            errored: c.errored.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            abandoned,
            stale: c.stale.load(Ordering::Relaxed),
        };
        tracing::info!(queue = %ctx.queue, ?report, "rmq worker: stopped");
        Ok(report)
    }
}

/// Waits for Redis to answer (which also finds out the edition), up to `limit`. `None` when
/// the stop signal came first.
async fn first_answer(
    client: &Client,
    limit: Duration,
    stop: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<crate::client::Edition>> {
    let until = Instant::now() + limit;
    let mut pause = Duration::from_millis(50);
    loop {
        match client.edition().await {
            Ok(ed) => return Ok(Some(ed)),
            Err(e) if e.is_unavailable() && Instant::now() + pause < until => {
                tracing::warn!(server = %client.display_url(), error = %e,
                    "rmq worker: Redis does not answer yet");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.as_mut() => return Ok(None),
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(Error::Unavailable(why)) => {
                return Err(Error::Unavailable(format!("{why} (no answer within {} s: the worker gives up)", limit.as_secs_f64())))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `queue` is a partitioned queue (its record), asked until Redis answers, up to
/// `limit` (in a cluster the registry may live on another master than the first that
/// answered). `None` when the stop signal came first.
async fn partitions_of(
    client: &Client,
    queue: &str,
    limit: Duration,
    stop: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Option<crate::partition::Partitioned>>> {
    let until = Instant::now() + limit;
    let mut pause = Duration::from_millis(50);
    loop {
        match client.partitioned_or_plain(queue).await {
            Ok(p) => return Ok(Some(p)),
            Err(e) if e.is_unavailable() && Instant::now() + pause < until => {
                tracing::warn!(queue, error = %e, "rmq worker: cannot read the registry of partitioned queues yet");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.as_mut() => return Ok(None),
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Ctx {
    async fn process(&self, m: Message) {
        // The message's own queue: the worker's, or one partition of it.
        let q = m.queue.clone();
        let q = q.as_str();
        let receipt = m.receipt.clone();
        let (id, attempt) = (m.id.clone(), m.attempt);
        tracing::info!(queue = %q, id = %id, attempt, tag = %m.tag, "rmq worker: start");
        let handler = self.handlers.get(&m.tag).or(self.fallback.as_ref()).cloned();
        let Some(handler) = handler else {
            if self.cfg.no_handler_is_error {
                let reason = format!("no handler for tag '{}'", m.tag);
                let out = Outcome::Nack(NackKind::Error, reason);
                self.finish(q, &id, &receipt, out, &self.counters.errored).await;
            } else {
                self.finish(q, &id, &receipt, Outcome::Ack, &self.counters.dropped).await;
            }
            return;
        };
        let mut job = AbortOnDrop(tokio::spawn(handler(m)));
        // Heartbeat: TOUCH every half lock while the handler runs.
        let half = (self.cfg.lock / 2).max(Duration::from_millis(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let timeout = self.cfg.timeout.filter(|t| !t.is_zero());
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(86400 * 365)));
        tokio::pin!(deadline);
        let res = loop {
            tokio::select! {
                r = &mut job.0 => break Some(r),
                _ = &mut deadline, if timeout.is_some() => break None,
                _ = tick.tick() => {
                    match self.client.touch(q, &receipt, Some(self.cfg.lock)).await {
                        Ok(0) => tracing::warn!(queue = %q, id = %id,
                            "rmq worker: lock lost (the message went back to the queue); the handler runs on"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(queue = %q, id = %id, error = %e, "rmq worker: TOUCH failed"),
                    }
                }
            }
        };
        let c = &self.counters;
        let retry = NackKind::Retry { delay: None };
        let Some(res) = res else {
            // Stop the handler (and, in `rmq work`, kill its command) before giving the
            // message back, so two runs of it never overlap here.
            job.0.abort();
            let _ = (&mut job.0).await;
            let ms = timeout.unwrap_or_default().as_millis();
            let out = Outcome::Nack(retry, format!("timeout after {ms} ms"));
            self.finish(q, &id, &receipt, out, &c.retried).await;
            return;
        };
        let (out, counter) = match res {
            Ok(Ok(())) => (Outcome::Ack, &c.acked),
            Ok(Err(HandlerError::Retry(r))) if self.cfg.failed_is_error => (Outcome::Nack(NackKind::Error, r), &c.errored),
            Ok(Err(HandlerError::Retry(r))) => (Outcome::Nack(retry, r), &c.retried),
            Ok(Err(HandlerError::Error(r))) => (Outcome::Nack(NackKind::Error, r), &c.errored),
            Ok(Err(HandlerError::DeadLetter(r))) => (Outcome::Nack(NackKind::Fail, r), &c.failed),
            Ok(Err(HandlerError::WorkerFault(r))) => return self.give_back(q, &id, &receipt, r).await,
            Err(e) if e.is_panic() => {
                let text = format!("panic: {}", panic_text(&*e.into_panic()));
                (Outcome::Nack(NackKind::Error, text), &c.errored)
            }
            Err(_) => return,
        };
        self.finish(q, &id, &receipt, out, counter).await;
    }

    /// A worker fault: the message goes back to ready at once (NACK RETRY DELAY 0), and if
    /// that retry sent it to failed because its attempts were used up, it is requeued, so a
    /// broken worker never dead-letters a message. Then the worker stops.
    async fn give_back(&self, q: &str, id: &str, receipt: &str, why: String) {
        tracing::error!(queue = %q, id = %id, reason = %why,
            "rmq worker: the worker cannot work; giving the message back and stopping");
        let reason = format!("worker fault: {why}");
        let out = Outcome::Nack(NackKind::Retry { delay: Some(Duration::ZERO) }, reason);
        if self.finish(q, id, receipt, out, &self.counters.retried).await {
            let dead = matches!(self.client.get(q, id).await,
                Ok(Some(m)) if m.state == "failed");
            if dead {
                if let Err(e) = self.client.requeue(q, &[id]).await {
                    tracing::error!(queue = %q, id = %id, error = %e,
                        "rmq worker: could not requeue the message from failed; RMQ.RECOVER brings it back");
                }
            }
        }
        let mut f = self.fault.lock().unwrap();
        if f.is_none() {
            *f = Some(why);
        }
        drop(f);
        self.faulted.notify_one();
    }

    /// ACK or NACK, retried while Redis is unavailable, for at most one lock period. True
    /// when it took effect.
    async fn finish(&self, q: &str, id: &str, receipt: &str, out: Outcome, counter: &AtomicU64) -> bool {
        let until = Instant::now() + self.cfg.lock;
        let mut pause = Duration::from_millis(50);
        loop {
            let res = match &out {
                Outcome::Ack => self.client.ack(q, &[receipt]).await.map(|n| n == 1),
                Outcome::Nack(kind, reason) => {
                    let reason: String = reason.chars().take(4000).collect();
                    self.client.nack(q, receipt, *kind, Some(&reason)).await
                }
            };
            match res {
                Ok(true) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    match &out {
                        Outcome::Ack => tracing::info!(queue = %q, id = %id,
                            outcome = "ack", "rmq worker: done"),
                        Outcome::Nack(kind, reason) => tracing::info!(queue = %q,
                            id = %id, outcome = nack_name(*kind), reason = %reason,
                            "rmq worker: done"),
                    }
                    return true;
                }
                Ok(false) => {
                    tracing::warn!(queue = %q, id = %id, receipt, "rmq worker: stale receipt (the lock ran out and the message went back)");
                    self.counters.stale.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                Err(e) if e.is_unavailable() && Instant::now() + pause < until => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::error!(queue = %q, id = %id, receipt, error = %e,
                        "rmq worker: could not ACK/NACK; the message comes back by lock expiry");
                    self.counters.stale.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
        }
    }
}

fn nack_name(k: NackKind) -> &'static str {
    match k {
        NackKind::Retry { .. } => "retry",
        NackKind::Fail => "dead-letter",
        NackKind::Error => "error",
    }
}
