//! The producer: PUSH with ids it makes itself, retries, and the spool for when Redis cannot
//! take a message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::client::{now_ms, Client, Confirm};
use crate::error::{Error, Result};
use crate::message::{new_id, Push};
use crate::partition::Partitioned;
use crate::spool::{DrainReport, SendOutcome, Spool, SpoolRecord, SpoolStatus};

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// The spool directory (default [`crate::spool::default_dir`]: `$RMQ_SPOOL`, else
    /// `~/.local/state/rmq/spool`); `None` turns spooling off (then a push that Redis cannot
    /// take returns [`Error::Unavailable`]). Give each Redis server its own spool: a drain
    /// sends what it holds to the producer's server.
    pub spool_dir: Option<PathBuf>,
    /// Retries of a PUSH that Redis could not take, before the message is spooled.
    pub retries: u32,
    /// First pause between retries; it doubles up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How often the background task looks at the spool while it holds anything.
    pub drain_interval: Duration,
    /// Re-send the spool in the background (and once at start).
    pub background_drain: bool,
    /// Confirms: after each PUSH, `WAIT replicas timeout` on the same connection; a push is
    /// acknowledged only once that many replicas have it, so it survives the loss of its
    /// master. An unconfirmed push is sent again with the same id (the dedup window makes
    /// that safe) and, after the retries, spooled. Spooled messages are re-sent with the same
    /// WAIT. `None` (the default): acknowledged when the master has it.
    pub confirm: Option<Confirm>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            spool_dir: Some(crate::spool::default_dir()),
            retries: 3,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            drain_interval: Duration::from_secs(1),
            background_drain: true,
            confirm: None,
        }
    }
}

/// What became of a pushed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    pub id: String,
    /// The queue it went to: the one asked for, or for a partitioned queue, the partition of
    /// its key. A spooled message whose partitioned queue could not be looked up shows the
    /// logical name; it goes to its partition when the spool is sent.
    pub queue: String,
    /// True when Redis could not take it and it is in the local spool (on disk, fsynced),
    /// to be re-sent.
    pub spooled: bool,
    /// Why Redis could not take it (the last error), when it was spooled.
    pub unavailable: Option<String>,
}

type SpoolReq = (SpoolRecord, oneshot::Sender<std::result::Result<(), String>>);

struct Inner {
    client: Client,
    cfg: ProducerConfig,
    /// Opened at start, or at first need when that failed.
    spool: Mutex<Option<(Arc<Spool>, mpsc::UnboundedSender<SpoolReq>)>>,
    /// Set when Redis was found unavailable, cleared by a success: while set, a push tries
    /// once and then spools, instead of waiting through its retries.
    down: AtomicBool,
    wake: Notify,
    background: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Partitioned queues looked up (see [`Producer::route`]).
    partitions: std::sync::Mutex<HashMap<String, Lookup>>,
}

/// A registry lookup: the partitioned queue's record (None: an ordinary queue), and when.
type Lookup = (Option<Arc<Partitioned>>, Instant);

/// How long "this name is an ordinary queue" is believed before the registry is read again.
const PLAIN_FOR: Duration = Duration::from_secs(10);

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.background.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

/// A producer. Clone it freely; clones share the connection pool and the spool.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

/// Appends what comes in to the spool, many at a time: one `fsync` for every request that
/// arrived while the previous one ran (group commit).
fn spawn_spool_writer(spool: Arc<Spool>) -> mpsc::UnboundedSender<SpoolReq> {
    let (tx, mut rx) = mpsc::unbounded_channel::<SpoolReq>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let (recs, replies): (Vec<SpoolRecord>, Vec<_>) = batch.into_iter().unzip();
            let sp = spool.clone();
            let res = tokio::task::spawn_blocking(move || sp.append(&recs))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
                .map_err(|e| e.to_string());
            for r in replies {
                let _ = r.send(res.clone());
            }
        }
    });
    tx
}

impl Producer {
    /// Makes a producer: opens the spool (a failure is logged and tried again when the spool
    /// is needed) and, with `background_drain`, starts re-sending what it holds.
    pub async fn new(client: Client, cfg: ProducerConfig) -> Result<Producer> {
        let inner = Arc::new(Inner {
            client,
            cfg,
            spool: Mutex::new(None),
            down: AtomicBool::new(false),
            wake: Notify::new(),
            background: std::sync::Mutex::new(None),
            partitions: std::sync::Mutex::new(HashMap::new()),
        });
        let p = Producer { inner };
        if p.inner.cfg.spool_dir.is_some() {
            if let Err(e) = p.spool().await {
                tracing::warn!(error = %e, "rmq producer: the spool cannot be opened now; it is tried again when needed");
            }
            if p.inner.cfg.background_drain {
                let weak = Arc::downgrade(&p.inner);
                let h = tokio::spawn(background(weak));
                *p.inner.background.lock().unwrap() = Some(h);
            }
        }
        Ok(p)
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    async fn spool(&self) -> Result<(Arc<Spool>, mpsc::UnboundedSender<SpoolReq>)> {
        let mut g = self.inner.spool.lock().await;
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let Some(dir) = self.inner.cfg.spool_dir.clone() else {
            return Err(Error::Config("spooling is off".into()));
        };
        let (spool, report) = tokio::task::spawn_blocking(move || Spool::open(dir))
            .await
            .map_err(|e| Error::Spool(std::io::Error::other(e.to_string())))??;
        if report.torn_bytes > 0 {
            tracing::warn!(bytes = report.torn_bytes, "rmq producer: cut a torn tail off the spool (a crash interrupted a write)");
        }
        let spool = Arc::new(spool);
        let tx = spawn_spool_writer(spool.clone());
        *g = Some((spool.clone(), tx.clone()));
        Ok((spool, tx))
    }

    /// Pushes a message. Ok means Redis has it, or the spool has it on disk
    /// ([`Pushed::spooled`]); an error means it is stored nowhere:
    /// - [`Error::Invalid`]: the message breaks a rule (checked here, even while Redis is down);
    /// - [`Error::Refused`]: Redis refused it (`ERR queue full`, no permission …): not spooled,
    ///   since sending it again would not help;
    /// - [`Error::NotStored`]: Redis could not take it and the spool could not either;
    /// - [`Error::Unavailable`]: Redis could not take it and spooling is off.
    ///
    /// With [`ProducerConfig::confirm`], "Redis has it" means its master and the replicas
    /// asked for; a push they did not confirm in time counts as one Redis could not take.
    pub async fn push(&self, mut p: Push) -> Result<Pushed> {
        p.validate()?;
        if p.id.is_none() {
            p.id = Some(new_id());
        }
        let tries = if self.inner.down.load(Ordering::Relaxed) { 1 } else { self.inner.cfg.retries + 1 };
        let mut pause = self.inner.cfg.retry_backoff;
        let mut last = String::new();
        // A partitioned queue's name is looked up first, and the message routed once: every
        // retry goes to the same partition, whose dedup window drops a second copy. If the
        // registry cannot be read, the message cannot be routed: it is spooled under the
        // logical name, and routed when the spool is sent.
        let mut routed: Option<Push> = None;
        for attempt in 1..=tries {
            let res = match &routed {
                Some(r) => Ok(r.clone()),
                None => self.route(&p).await,
            };
            let res = match res {
                Ok(r) => {
                    let sent = self.send(&r).await.map(|id| (id, r.queue.clone()));
                    routed = Some(r);
                    sent
                }
                Err(e) => Err(e),
            };
            match res {
                Ok((id, queue)) => {
                    self.inner.down.store(false, Ordering::Relaxed);
                    return Ok(Pushed { id, queue, spooled: false, unavailable: None });
                }
                Err(Error::Unavailable(why)) => {
                    last = why;
                    if attempt < tries {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(self.inner.cfg.retry_backoff_max);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.inner.down.store(true, Ordering::Relaxed);
        if self.inner.cfg.spool_dir.is_none() {
            return Err(Error::Unavailable(last));
        }
        let p = routed.unwrap_or(p);
        let id = p.id.clone().unwrap();
        let queue = p.queue.clone();
        match self.spool_one(p.to_record(now_ms())).await {
            Ok(()) => {
                tracing::debug!(id = %id, "rmq producer: redis unavailable ({last}); message spooled");
                self.inner.wake.notify_one();
                Ok(Pushed { id, queue, spooled: true, unavailable: Some(last) })
            }
            Err(spool) => {
                tracing::error!(id = %id, redis = %last, spool = %spool, "rmq producer: message NOT stored");
                Err(Error::NotStored { redis: last, spool })
            }
        }
    }

    /// `p` addressed to the partition of its key when its queue is a partitioned queue (see
    /// [`Partitioned::route`]), else as it is. Lookups are remembered: a partitioned queue's
    /// record for good (its partitions never change), an ordinary queue for 10 s.
    pub async fn route(&self, p: &Push) -> Result<Push> {
        let known = self.inner.partitions.lock().unwrap().get(&p.queue).cloned();
        let part = match known {
            Some((Some(part), _)) => Some(part),
            Some((None, at)) if at.elapsed() < PLAIN_FOR => None,
            _ => {
                let found = self.inner.client.partitioned_or_plain(&p.queue).await?.map(Arc::new);
                self.inner.partitions.lock().unwrap().insert(p.queue.clone(), (found.clone(), Instant::now()));
                found
            }
        };
        Ok(match part {
            Some(part) => part.route(p.clone()),
            None => p.clone(),
        })
    }

    /// One PUSH, confirmed when confirms are on.
    async fn send(&self, p: &Push) -> Result<String> {
        let Some(c) = self.inner.cfg.confirm else {
            return self.inner.client.push(p).await;
        };
        let (id, acked) = self.inner.client.push_confirmed(p, c).await?;
        if acked < c.replicas as u64 {
            return Err(Error::Unavailable(c.shortfall(acked)));
        }
        Ok(id)
    }

    async fn spool_one(&self, rec: SpoolRecord) -> std::result::Result<(), String> {
        let (_, tx) = self.spool().await.map_err(|e| e.to_string())?;
        let (rtx, rrx) = oneshot::channel();
        tx.send((rec, rtx)).map_err(|_| "spool writer stopped".to_string())?;
        rrx.await.map_err(|_| "spool writer stopped".to_string())?
    }

    /// Re-sends the spool now (what the background task does). Records that Redis refuses
    /// for good go to the quarantine.
    pub async fn drain(&self) -> Result<DrainReport> {
        self.drain_with(|_| {}, |_| {}).await
    }

    /// [`Producer::drain`] with progress: `on_total` gets the number of records to send,
    /// `progress` the number handled so far.
    pub async fn drain_with(
        &self,
        on_total: impl FnMut(u64) + Send + 'static,
        progress: impl FnMut(u64) + Send + 'static,
    ) -> Result<DrainReport> {
        let (spool, _) = self.spool().await?;
        let report = drain_spool(self.inner.client.clone(), self.inner.cfg.confirm, spool, on_total, progress).await?;
        if report.sent > 0 && report.stopped.is_none() {
            self.inner.down.store(false, Ordering::Relaxed);
        }
        Ok(report)
    }

    /// What the spool holds.
    pub async fn spool_status(&self) -> Result<SpoolStatus> {
        let (spool, _) = self.spool().await?;
        Ok(tokio::task::spawn_blocking(move || spool.status()).await.map_err(|e| std::io::Error::other(e.to_string()))??)
    }

    /// Stops the background task (the spool stays on disk for the next start).
    pub async fn close(&self) {
        let h = self.inner.background.lock().unwrap().take();
        if let Some(h) = h {
            h.abort();
            let _ = h.await;
        }
    }
}

/// Sends one batch of spooled records in a pipeline (confirmed by WAIT when confirms are on);
/// see [`Spool::drain`] for the answer.
/// A record spooled under a partitioned queue's logical name (its registry could not be read
/// at push time) goes to the partition of its key.
async fn send_batch(client: &Client, confirm: Option<Confirm>, recs: &[SpoolRecord]) -> std::result::Result<Vec<SendOutcome>, String> {
    let mut parts: HashMap<&str, Option<Partitioned>> = HashMap::new();
    for r in recs {
        if !parts.contains_key(r.queue.as_str()) {
            let p = client.partitioned_or_plain(&r.queue).await.map_err(|e| e.to_string())?;
            parts.insert(r.queue.as_str(), p);
        }
    }
    let pushes: Vec<Push> = recs
        .iter()
        .map(|r| match &parts[r.queue.as_str()] {
            Some(part) => part.route(Push::from_record(r)),
            None => Push::from_record(r),
        })
        .collect();
    let cmds: Vec<(&str, &str, Vec<Vec<u8>>)> = pushes.iter().map(|p| ("push", p.queue.as_str(), p.args())).collect();
    let res = client.call_many_confirmed(&cmds, confirm).await.map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(res.len());
    for r in res {
        match r {
            Ok(_) => out.push(SendOutcome::Taken),
            Err(Error::Refused(t)) if t.contains("queue full") => {
                // Back-pressure, not a fault of the record: keep it, in order, for later.
                return Err(format!("Redis refused: {t}"));
            }
            Err(Error::Refused(t)) => out.push(SendOutcome::Refused(t)),
            Err(Error::Protocol(_)) => out.push(SendOutcome::Taken),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

async fn drain_spool(
    client: Client,
    confirm: Option<Confirm>,
    spool: Arc<Spool>,
    mut on_total: impl FnMut(u64) + Send + 'static,
    mut progress: impl FnMut(u64) + Send + 'static,
) -> Result<DrainReport> {
    let handle = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || {
        spool.drain(|batch| handle.block_on(send_batch(&client, confirm, batch)), &mut on_total, &mut progress)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    if report.refused + report.corrupt > 0 {
        tracing::error!(refused = report.refused, corrupt = report.corrupt, "rmq producer: spooled records were moved to the quarantine");
    }
    Ok(report)
}

async fn background(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let p = Producer { inner };
        let spool = p.inner.spool.lock().await.as_ref().map(|(s, _)| s.clone());
        if let Some(spool) = spool {
            let sp = spool.clone();
            let has = tokio::task::spawn_blocking(move || sp.has_data()).await.ok().and_then(|r| r.ok()).unwrap_or(false);
            if has && p.inner.client.ping().await.is_ok() {
                match drain_spool(p.inner.client.clone(), p.inner.cfg.confirm, spool, |_| {}, |_| {}).await {
                    Ok(r) => {
                        if r.sent > 0 {
                            tracing::info!(sent = r.sent, remaining = r.remaining, "rmq producer: re-sent spooled messages");
                        }
                        if r.stopped.is_none() {
                            p.inner.down.store(false, Ordering::Relaxed);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "rmq producer: spool drain failed"),
                }
            }
        }
        let interval = p.inner.cfg.drain_interval;
        let wake = async {
            p.inner.wake.notified().await;
            // A push just spooled: Redis is down; do not hammer it.
            tokio::time::sleep(interval).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake => {}
        }
        drop(p);
    }
}
