//! `rmq archive run`: reads the followed queues' logs into batches and writes each batch in
//! one transaction, then acknowledges its entries.
//!
//! Two tasks and a channel of one batch between them: the reader fills a batch (by count,
//! bytes and time) while the writer commits the previous one (and the acknowledgement of the
//! one before runs beside it). When the database is away the writer retries the same batch
//! with backoff, the channel stays full and the reader stops: memory stays at about two
//! batches, and the entries wait in the log (and in the group's pending list) until the
//! database is back. Entries are acknowledged only after their
//! transaction committed, so a crash at any point loses nothing the log still holds; the
//! entries read but not saved are read again at the next start.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::event::{self, StreamId};
use crate::names::Patterns;
use crate::retain;
use crate::source::{Fields, Source};
use crate::store::QUEUES;
use crate::write::{self, Batch, Entry, Gap, Item};

/// How the archiver runs (the options of `rmq archive run`).
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub patterns: Patterns,
    /// Log entries per transaction, at most.
    pub batch_max: usize,
    /// Bytes of entries per transaction, about.
    pub batch_bytes: usize,
    /// The oldest entry of a batch waits at most this long for the batch to be written.
    pub batch_time: Duration,
    /// Entries asked for per read.
    pub read_count: usize,
    /// Longest pause between two reads of an idle queue.
    pub poll_max: Duration,
    /// How often to look for new queues.
    pub discover_every: Duration,
    /// Entries another archiver left unacknowledged this long are taken over.
    pub claim_idle: Duration,
    pub claim_every: Duration,
    /// Delete rows untouched for this long.
    pub retain: Option<Duration>,
    /// Longest wait between two tries when Redis or the database is away.
    pub max_backoff: Duration,
    /// Log throughput and lag this often (at info level).
    pub report_every: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            patterns: Patterns::default(),
            batch_max: 10_000,
            batch_bytes: 16 << 20,
            batch_time: Duration::from_millis(200),
            read_count: 500,
            poll_max: Duration::from_millis(500),
            discover_every: Duration::from_secs(5),
            claim_idle: Duration::from_secs(60),
            claim_every: Duration::from_secs(30),
            retain: None,
            max_backoff: Duration::from_secs(10),
            report_every: Duration::from_secs(10),
        }
    }
}

/// Counters of a run.
#[derive(Debug, Default)]
pub struct Counters {
    pub events: AtomicU64,
    pub rows: AtomicU64,
    pub batches: AtomicU64,
    pub db_retries: AtomicU64,
    pub warnings: AtomicU64,
}

/// What a run did, when it stops.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub events: u64,
    pub rows: u64,
    pub batches: u64,
    pub db_retries: u64,
    pub warnings: u64,
}

/// A followed queue.
struct Followed {
    /// Reading this consumer's own unacknowledged entries first (after a restart), from
    /// after this id; then new ones.
    pending_after: Option<StreamId>,
    next_poll: Instant,
    idle: Duration,
    /// The last read found no log (the queue's log is off, or the queue is gone).
    no_log: bool,
}

/// The default consumer name: the host's name (so that a restarted archiver finds the
/// entries it had read and not saved).
pub fn default_consumer() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rmq-archive".to_string())
}

/// Runs until `stop` resolves (then the batch in hand is written and acknowledged).
pub async fn run(source: Source, db: Db, cfg: RunConfig, stop: impl Future<Output = ()> + Send) -> Result<Report> {
    let (stop_tx, stop_rx) = watch::channel(false);
    wait_for_database(&db, &cfg).await;
    for (v, name) in db.migrate().await? {
        info!("archive database {}: applied schema version {v} ({name})", db.shown);
    }
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::channel::<Batch>(1);
    let writer = tokio::spawn(writer(db.clone(), source.clone(), rx, counters.clone(), cfg.max_backoff, stop_rx.clone()));
    let retention = cfg.retain.map(|keep| tokio::spawn(retain::run(db.clone(), keep, stop_rx.clone())));
    let reporter = tokio::spawn(report(counters.clone(), cfg.report_every, stop_rx.clone()));
    let mut reader = Reader {
        source,
        db,
        cfg,
        followed: BTreeMap::new(),
        known: HashSet::new(),
        batch: Batch::default(),
        batch_started: None,
        avg_entry: 256,
        next_discover: Instant::now(),
        next_claim: Instant::now(),
        backoff: Duration::from_millis(100),
        seen_markers: HashSet::new(),
    };
    tokio::pin!(stop);
    let result = tokio::select! {
        r = reader.run(&tx) => r,
        _ = &mut stop => Ok(()),
    };
    // The writer saves what is queued and the batch in hand if the database takes them at
    // once; when it is away they stay pending in the log and are read again at the next start.
    let _ = stop_tx.send(true);
    let last = std::mem::take(&mut reader.batch);
    if !last.is_empty() {
        let _ = tx.send(last).await;
    }
    drop(tx);
    let _ = writer.await;
    if let Some(r) = retention {
        let _ = r.await;
    }
    let _ = reporter.await;
    result?;
    Ok(Report {
        events: counters.events.load(Ordering::Relaxed),
        rows: counters.rows.load(Ordering::Relaxed),
        batches: counters.batches.load(Ordering::Relaxed),
        db_retries: counters.db_retries.load(Ordering::Relaxed),
        warnings: counters.warnings.load(Ordering::Relaxed),
    })
}

/// Sleeps, or returns early (true) when the run is stopping.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Waits until the database answers (it may start after the archiver).
async fn wait_for_database(db: &Db, cfg: &RunConfig) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match db.pool.acquire().await {
            Ok(_) => return,
            Err(e) => {
                warn!("archive database {} not reachable ({e}); trying again in {backoff:?}", db.shown);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
    }
}

async fn report(c: Arc<Counters>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut last = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let now = (c.events.load(Ordering::Relaxed), c.rows.load(Ordering::Relaxed));
        let secs = every.as_secs_f64().max(0.001);
        info!(
            "archived {} log entries ({:.1}/s) into {} row writes ({:.1}/s) in the last {:?}",
            now.0 - last.0,
            (now.0 - last.0) as f64 / secs,
            now.1 - last.1,
            (now.1 - last.1) as f64 / secs,
            every
        );
        last = now;
    }
}

/// Saves batches in order; acknowledges each one's entries after its commit, while the next
/// batch is written (one acknowledgement in flight at a time: XACK in slices of 1,000 ids is a
/// few round trips to Redis that the next transaction need not wait for).
async fn writer(
    db: Db,
    source: Source,
    mut rx: mpsc::Receiver<Batch>,
    counters: Arc<Counters>,
    max_backoff: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut acking: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(batch) = rx.recv().await {
        let mut backoff = Duration::from_millis(100);
        let outcome = loop {
            match write::apply(&db, &batch).await {
                Ok(o) => break Some(o),
                Err(e) => {
                    counters.db_retries.fetch_add(1, Ordering::Relaxed);
                    if *stop.borrow() {
                        warn!("stopping with {} log entries not saved (they stay pending in the log and are read again at the next start): {e}", batch.entries.len());
                        break None;
                    }
                    warn!(
                        "archive database {}: {e}; reading is paused and the batch of {} entries is tried again in {backoff:?} (nothing is lost while the log holds the entries)",
                        db.shown,
                        batch.entries.len()
                    );
                    sleep_or_stop(backoff, &mut stop).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        };
        let Some(outcome) = outcome else {
            break;
        };
        for w in &outcome.warnings {
            warn!("{w}");
        }
        counters.events.fetch_add(outcome.events, Ordering::Relaxed);
        counters.rows.fetch_add(outcome.rows, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.warnings.fetch_add(outcome.warnings.len() as u64, Ordering::Relaxed);
        if let Some(previous) = acking.take() {
            let _ = previous.await;
        }
        // Only the ids go on: the batch itself is dropped here (memory stays at two batches).
        let ids = ids_by_queue(&batch);
        drop(batch);
        let source = source.clone();
        acking = Some(tokio::spawn(async move {
            ack_batch(&source, &ids, max_backoff).await;
            for (q, m) in &outcome.markers {
                if let Err(e) = source.drop_marker(q, m).await {
                    warn!("queue {q}: the gap marker {m} stays in Redis ({e}); it is saved already and is not counted twice");
                }
            }
        }));
    }
    if let Some(last) = acking {
        let _ = last.await;
    }
}

/// A batch's log entry ids, per queue.
fn ids_by_queue(batch: &Batch) -> BTreeMap<String, Vec<StreamId>> {
    let mut by_queue: BTreeMap<String, Vec<StreamId>> = BTreeMap::new();
    for e in &batch.entries {
        if let Some(ids) = by_queue.get_mut(&e.queue) {
            ids.push(e.pos);
        } else {
            by_queue.insert(e.queue.clone(), vec![e.pos]);
        }
    }
    by_queue
}

/// Acknowledges a saved batch's entries. When Redis stays away the entries stay pending: this
/// archiver reads them again at its next start, or another one takes them over, and saving
/// them again changes nothing.
async fn ack_batch(source: &Source, by_queue: &BTreeMap<String, Vec<StreamId>>, max_backoff: Duration) {
    for (q, ids) in by_queue {
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=5 {
            match source.ack(q, ids).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    warn!("queue {q}: acknowledging {} saved log entries failed ({e}); trying again", ids.len());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(e) => warn!(
                    "queue {q}: {} saved log entries stay pending ({e}); they are saved again later, which changes nothing",
                    ids.len()
                ),
            }
        }
    }
}

struct Reader {
    source: Source,
    db: Db,
    cfg: RunConfig,
    followed: BTreeMap<String, Followed>,
    /// Queues the archive has a record of (a group missing for one of them means its log was
    /// deleted and made again).
    known: HashSet<String>,
    batch: Batch,
    batch_started: Option<Instant>,
    /// Running mean of an entry's size, to size reads to the byte budget.
    avg_entry: usize,
    next_discover: Instant,
    next_claim: Instant,
    backoff: Duration,
    /// Gap markers already put in a batch.
    seen_markers: HashSet<(String, String)>,
}

impl Reader {
    async fn run(&mut self, tx: &mpsc::Sender<Batch>) -> Result<()> {
        loop {
            let now = Instant::now();
            if now >= self.next_discover {
                self.discover().await;
                self.next_discover = Instant::now() + self.cfg.discover_every;
            }
            if now >= self.next_claim && self.room() > 0 {
                self.claim().await;
                self.next_claim = Instant::now() + self.cfg.claim_every;
            }
            let read = self.read_round().await;
            if self.should_flush() {
                let b = std::mem::take(&mut self.batch);
                self.batch_started = None;
                if tx.send(b).await.is_err() {
                    return Err(Error::Failed("the archive writer stopped".into()));
                }
                continue;
            }
            if read == 0 {
                self.idle_wait().await;
            }
        }
    }

    fn room(&self) -> usize {
        if self.batch.bytes >= self.cfg.batch_bytes {
            return 0;
        }
        let by_bytes = (self.cfg.batch_bytes - self.batch.bytes) / self.avg_entry.max(1) + 1;
        self.cfg.batch_max.saturating_sub(self.batch.entries.len()).min(by_bytes)
    }

    fn should_flush(&self) -> bool {
        if self.batch.is_empty() {
            return false;
        }
        self.room() == 0 || self.batch_started.is_some_and(|t| t.elapsed() >= self.cfg.batch_time)
    }

    /// Sleeps until a queue is due, the batch must go, or it is time to look for queues.
    async fn idle_wait(&mut self) {
        let mut until = self.next_discover.min(self.next_claim);
        if let Some(p) = self.followed.values().map(|f| f.next_poll).min() {
            until = until.min(p);
        }
        if let Some(t) = self.batch_started {
            until = until.min(t + self.cfg.batch_time);
        }
        let now = Instant::now();
        let wait = until.saturating_duration_since(now).max(Duration::from_millis(1));
        tokio::time::sleep(wait.min(self.cfg.poll_max)).await;
    }

    async fn discover(&mut self) {
        match self.source.discover(&self.cfg.patterns).await {
            Ok(queues) => {
                // A queue no longer found and without a log is no longer followed.
                self.followed.retain(|q, f| !f.no_log || queues.contains(q));
                for q in queues {
                    if !self.cfg.patterns.is_all_logged() {
                        match self.source.ensure_log(&q).await {
                            Ok(true) => info!("queue {q}: turned its log on (it matches --queues)"),
                            Ok(false) => {}
                            Err(e) => warn!("queue {q}: could not turn its log on: {e}"),
                        }
                    }
                    if let std::collections::btree_map::Entry::Vacant(slot) = self.followed.entry(q) {
                        info!("following queue {}", slot.key());
                        slot.insert(Followed {
                            pending_after: Some(StreamId::default()),
                            next_poll: Instant::now(),
                            idle: Duration::ZERO,
                            no_log: false,
                        });
                    }
                }
                self.backoff = Duration::from_millis(100);
            }
            Err(e) => {
                warn!("looking for queues: {e}; trying again in {:?}", self.backoff);
                self.next_discover = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(self.cfg.max_backoff);
            }
        }
        match known_queues(&self.db).await {
            Ok(k) => self.known = k,
            Err(e) => tracing::debug!("reading the archived queues: {e}"),
        }
    }

    /// Takes over entries other archivers read and left unsaved for `claim_idle`.
    async fn claim(&mut self) {
        let queues: Vec<String> = self.followed.keys().cloned().collect();
        for q in queues {
            let mut start = "0-0".to_string();
            loop {
                let room = self.room();
                if room == 0 {
                    return;
                }
                let idle = self.cfg.claim_idle.as_millis() as u64;
                match self.source.claim(&q, &start, idle, room).await {
                    Ok((next, entries, deleted)) => {
                        if !entries.is_empty() {
                            info!("queue {q}: took over {} log entries left unsaved by another archiver", entries.len());
                        }
                        self.add(&q, entries);
                        if deleted > 0 {
                            self.collect_markers(&q).await;
                        }
                        if next == "0-0" || next == start {
                            break;
                        }
                        start = next;
                    }
                    Err(e) => {
                        tracing::debug!("queue {q}: XAUTOCLAIM: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// One read from each queue that is due; returns how many entries came.
    async fn read_round(&mut self) -> usize {
        let now = Instant::now();
        let due: Vec<String> = self.followed.iter().filter(|(_, f)| f.next_poll <= now).map(|(q, _)| q.clone()).collect();
        let mut total = 0;
        for q in due {
            let room = self.room();
            if room == 0 {
                break;
            }
            let count = room.min(self.cfg.read_count);
            let pending_after = self.followed[&q].pending_after;
            if pending_after == Some(StreamId::default()) {
                // Gaps found and not saved before this archiver started (by it, or another).
                self.collect_markers(&q).await;
            }
            let res = match pending_after {
                Some(after) => self.source.read_pending(&q, after, count).await,
                None => {
                    let known = self.known.contains(&q);
                    self.source.read_new(&q, count, known).await
                }
            };
            let read = match res {
                Ok(r) => r,
                Err(e) => {
                    let f = self.followed.get_mut(&q).expect("followed");
                    f.idle = (f.idle * 2).clamp(Duration::from_millis(100), self.cfg.max_backoff);
                    f.next_poll = Instant::now() + f.idle;
                    warn!("queue {q}: reading its log: {e}; trying again in {:?}", f.idle);
                    continue;
                }
            };
            if read.created && self.known.contains(&q) {
                warn!("queue {q}: its log was deleted and made again (the log was turned off, or Redis lost it); entries written before that and not yet archived, if any, are lost");
            }
            if read.gap > 0 {
                self.collect_markers(&q).await;
            }
            let n = read.entries.len();
            if pending_after == Some(StreamId::default()) && n > 0 {
                info!("queue {q}: saving first the log entries this archiver read before it stopped and did not save");
            }
            let last = read.entries.last().map(|(id, _)| *id);
            self.add(&q, read.entries);
            total += n;
            let f = self.followed.get_mut(&q).expect("followed");
            f.no_log = read.no_log;
            if pending_after.is_some() {
                // Own pending entries until there are none left, then new ones.
                f.pending_after = if n == 0 { None } else { last };
                f.next_poll = Instant::now();
            } else if n < count {
                f.idle = (f.idle * 2).clamp(Duration::from_millis(5), self.cfg.poll_max);
                f.next_poll = Instant::now() + f.idle;
            } else {
                f.idle = Duration::ZERO;
                f.next_poll = Instant::now();
            }
        }
        total
    }

    /// Puts the gap markers waiting on a queue's log into the batch (each once per run; the
    /// writer drops them from Redis after the batch is saved).
    async fn collect_markers(&mut self, q: &str) {
        match self.source.markers(q).await {
            Ok(markers) => {
                for m in markers {
                    if self.seen_markers.insert((q.to_string(), m.name.clone())) {
                        let what = m.what();
                        self.batch.gaps.push(Gap { queue: q.to_string(), entries: m.entries, what, marker: Some(m.name) });
                        self.started();
                    }
                }
            }
            Err(e) => warn!("queue {q}: reading its gap markers: {e}; trying again later"),
        }
    }

    fn started(&mut self) {
        if self.batch_started.is_none() {
            self.batch_started = Some(Instant::now());
        }
    }

    fn add(&mut self, queue: &str, entries: Vec<(StreamId, Fields)>) {
        if entries.is_empty() {
            return;
        }
        self.started();
        let before = self.batch.bytes;
        let n = entries.len();
        for (pos, fields) in entries {
            let item = match fields {
                None => Item::Trimmed,
                Some(f) => match event::parse(pos, &f) {
                    Ok(e) => Item::Event(Box::new(e)),
                    Err(why) => Item::Unreadable(why),
                },
            };
            self.batch.push(Entry { queue: queue.to_string(), pos, item });
        }
        let per = (self.batch.bytes - before) / n;
        self.avg_entry = (self.avg_entry * 7 + per) / 8;
    }
}

/// The queues the archive has a record of.
async fn known_queues(db: &Db) -> Result<HashSet<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT queue FROM {QUEUES} WHERE events > 0"))).fetch_all(&db.pool).await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}
