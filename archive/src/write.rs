//! One batch of log entries → one SQL transaction.
//!
//! The transaction first locks the state row of every queue in the batch (in name order, so
//! two archivers never deadlock): archivers sharing a queue then write it one after the
//! other, and each sees what the other committed. It inserts the events (a redelivered entry
//! is already there and changes nothing), folds them into the message rows, and records what
//! it found per queue. A row is folded forward from its stored state when every new event is
//! newer than the row; otherwise (another archiver committed newer events first, or entries
//! were read twice) it is rebuilt from all its events. Either way the row ends up as the fold
//! of all its events in log order, whatever order they arrived in.

use std::collections::{BTreeMap, HashMap};

use crate::db::{Backend, Cols, Db, PgArray, Sql, Tx};
use crate::error::{Error, Result};
use crate::event::{LogEvent, StreamId};
use crate::fold::{self, Row};
use crate::pgcopy::CopyRows;
use crate::store::{
    self, col_list, Kind, PgArrays, EVENTS, EVENT_COLS, EVENT_KINDS, GAPS, MESSAGES, QUEUES, REPLACED, ROW_COLS, ROW_KINDS, STATE_COLS,
};
use crate::when::now_ms;

/// What a log entry turned out to be.
#[derive(Clone, Debug)]
pub enum Item {
    Event(Box<LogEvent>),
    /// An entry this archiver had read but not saved, and that the log trimmed meanwhile
    /// (Redis gives back its id without its fields).
    Trimmed,
    /// An entry that is not an rmq log event (the reason).
    Unreadable(String),
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub queue: String,
    pub pos: StreamId,
    pub item: Item,
}

/// Entries lost before this archiver could read them, found by the reader.
#[derive(Clone, Debug)]
pub struct Gap {
    pub queue: String,
    pub entries: u64,
    pub what: String,
    /// The marker that stands for it in Redis (counted once per marker, then dropped).
    pub marker: Option<String>,
}

/// Entries read and not yet saved: the unit of one transaction.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    pub gaps: Vec<Gap>,
    /// Bytes held (for the memory bound).
    pub bytes: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.gaps.is_empty()
    }

    pub fn push(&mut self, e: Entry) {
        self.bytes += match &e.item {
            Item::Event(ev) => ev.size(),
            _ => 64,
        };
        self.entries.push(e);
    }
}

/// What a committed batch did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub events: u64,
    pub rows: u64,
    /// Problems found, one line each, `queue: what` (already recorded per queue).
    pub warnings: Vec<String>,
    /// Gap markers now saved, to drop from Redis: (queue, marker).
    pub markers: Vec<(String, String)>,
}

/// The archiver's record of one queue.
#[derive(Clone, Debug, Default)]
struct QueueState {
    events: i64,
    last_log: StreamId,
    /// The highest offset that has a row: no row exists above it (every row is written under
    /// the queue's lock, which also moves this), so the lookup of stored rows skips those.
    max_offset: i64,
    max_push_offset: i64,
    max_push: StreamId,
    gaps: i64,
    gap_entries: i64,
    rewinds: i64,
    conflicts: i64,
    warning: Option<String>,
}

/// A batch's share of one queue.
#[derive(Default)]
struct Work<'a> {
    by_offset: BTreeMap<i64, Vec<&'a LogEvent>>,
    events: Vec<&'a LogEvent>,
    trimmed: u64,
    lost: u64,
    incidents: u64,
    notes: Vec<String>,
}

/// How a row is written.
enum Write {
    /// A row above the queue's highest stored offset: none exists, nothing to update.
    New(Row),
    /// Every column (a new row, or its message came with this batch).
    Full(Row),
    /// The event-driven columns only; the stored message stays.
    State(Row),
}

/// Multi-row statements take this many rows at most, in these steps (so that only a few
/// statement texts exist, each prepared once per connection), and about this many bytes.
const ROW_STEPS: [usize; 5] = [400, 100, 20, 5, 1];
const EVENT_STEPS: [usize; 5] = [800, 200, 40, 8, 1];
const STATEMENT_BYTES: usize = 4 << 20;

/// Writes the batch in one transaction. On any error nothing is written (the caller retries
/// the same batch; writing it twice changes nothing).
///
/// On PostgreSQL the events newer than the queue's last saved entry, and the rows above its
/// highest stored offset, cannot be in the tables yet (every write moves both marks in the
/// same transaction, under the queue's lock): they go in by COPY, the rest by `INSERT … ON
/// CONFLICT`. Should COPY still meet a stored key (tables edited by hand, or restored apart
/// from each other), the batch is written again at once without COPY.
pub async fn apply(db: &Db, batch: &Batch) -> Result<Outcome> {
    match apply_with(db, batch, true).await {
        Err(Error::Db(e)) if db.backend == Backend::Postgres && is_unique_violation(&e) => {
            let mut out = apply_with(db, batch, false).await?;
            out.warnings.push(format!(
                "archive database {}: COPY met a row it should not find ({e}): the archive's queue records (last_log, max_offset) are behind its tables; this batch was written without COPY",
                db.shown
            ));
            Ok(out)
        }
        r => r,
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "23505")
}

async fn apply_with(db: &Db, batch: &Batch, copy: bool) -> Result<Outcome> {
    let mut work: BTreeMap<&str, Work> = BTreeMap::new();
    for e in &batch.entries {
        let w = work.entry(e.queue.as_str()).or_default();
        match &e.item {
            Item::Event(ev) => {
                w.by_offset.entry(ev.offset).or_default().push(ev);
                w.events.push(ev);
            }
            Item::Trimmed => {
                w.trimmed += 1;
                w.lost += 1;
            }
            Item::Unreadable(why) => {
                w.lost += 1;
                w.incidents += 1;
                w.notes.push(format!("log entry {} is not an rmq event ({why}); skipped", e.pos));
            }
        }
    }
    for w in work.values_mut() {
        if w.trimmed > 0 {
            w.incidents += 1;
            w.notes.push(format!(
                "{} log entries were trimmed (log-maxlen) after this archiver read them and before it saved them: lost to the archive",
                w.trimmed
            ));
        }
    }
    for g in &batch.gaps {
        let w = work.entry(g.queue.as_str()).or_default();
        // A marked gap is counted inside the transaction, once per marker.
        if g.marker.is_none() {
            w.lost += g.entries;
            w.incidents += 1;
            w.notes.push(g.what.clone());
        }
    }
    if work.is_empty() {
        return Ok(Outcome::default());
    }

    let b = db.backend;
    let t0 = std::time::Instant::now();
    let copy = copy && b == Backend::Postgres;
    let mut tx = db.begin_write().await?;
    let queues: Vec<&str> = work.keys().copied().collect();
    let mut states = lock_queues(&mut tx, b, &queues).await?;
    let mut markers = Vec::new();
    for g in &batch.gaps {
        let Some(m) = &g.marker else { continue };
        if save_gap(&mut tx, b, g, m).await? {
            let w = work.get_mut(g.queue.as_str()).expect("every gap's queue is in the work");
            w.lost += g.entries;
            w.incidents += 1;
            w.notes.push(g.what.clone());
        }
        markers.push((g.queue.clone(), m.clone()));
    }
    let t_lock = t0.elapsed();
    let all_events: Vec<(&str, &LogEvent)> = work.iter().flat_map(|(q, w)| w.events.iter().map(move |e| (*q, *e))).collect();
    if copy {
        let (fresh, seen) = split_fresh(&work, &states);
        copy_events(&mut tx, &fresh).await?;
        insert_events(&mut tx, b, &seen).await?;
    } else {
        insert_events(&mut tx, b, &all_events).await?;
    }
    let t_events = t0.elapsed();

    let mut out = Outcome { events: all_events.len() as u64, markers, ..Default::default() };
    let mut writes: Vec<Write> = Vec::new();
    for (queue, w) in &mut work {
        let st = states.entry(queue.to_string()).or_default();
        let conflicts = fold_queue(&mut tx, b, queue, w, st.max_offset, &mut writes).await?;
        if let Some(&top) = w.by_offset.keys().next_back() {
            st.max_offset = st.max_offset.max(top);
        }
        for (offset, old_id, new_id) in &conflicts {
            copy_replaced(&mut tx, b, queue, *offset).await?;
            w.notes.push(format!(
                "offset {offset} held message {old_id:?} and now holds {new_id:?}: Redis gave the offset again (data lost in Redis); the earlier row is kept in {REPLACED}"
            ));
        }
        st.conflicts += conflicts.len() as i64;
        note_pushes(st, w);
        st.events += w.events.len() as i64;
        if let Some(max) = w.events.iter().map(|e| e.pos).max() {
            st.last_log = st.last_log.max(max);
        }
        st.gaps += w.incidents as i64;
        st.gap_entries += w.lost as i64;
        if let Some(last) = w.notes.last() {
            st.warning = Some(last.clone());
        }
        out.warnings.extend(w.notes.iter().map(|n| format!("{queue}: {n}")));
    }
    out.rows = writes.len() as u64;
    let t_fold = t0.elapsed();
    write_rows(&mut tx, b, &writes, copy).await?;
    let t_rows = t0.elapsed();
    save_queues(&mut tx, b, &states).await?;
    tx.commit().await?;
    tracing::debug!(
        "batch of {} entries, {} rows: lock {:?}, events {:?}, fold {:?}, rows {:?}, commit {:?}",
        out.events,
        out.rows,
        t_lock,
        t_events - t_lock,
        t_fold - t_events,
        t_rows - t_fold,
        t0.elapsed() - t_rows
    );
    Ok(out)
}

/// Records a marked gap unless it is recorded already; true when it is new.
async fn save_gap(tx: &mut Tx, b: Backend, g: &Gap, marker: &str) -> Result<bool> {
    let mut s = Sql::new(b);
    s.push(&format!("SELECT entries FROM {GAPS} WHERE queue = ")).arg(g.queue.clone()).push(" AND marker = ").arg(marker.to_string());
    if !tx.fetch_all(s).await?.is_empty() {
        return Ok(false);
    }
    let mut s = Sql::new(b);
    s.push(&format!("INSERT INTO {GAPS} (queue, marker, entries, what, found_time) VALUES ("))
        .arg(g.queue.clone())
        .push(", ")
        .arg(marker.to_string())
        .push(", ")
        .arg(g.entries as i64)
        .push(", ")
        .arg(g.what.clone())
        .push(", ")
        .ts(Some(now_ms()))
        .push(")");
    tx.execute(s).await?;
    Ok(true)
}

/// Makes sure each queue has its state row, locks them in name order, and reads them.
async fn lock_queues(tx: &mut Tx, b: Backend, queues: &[&str]) -> Result<BTreeMap<String, QueueState>> {
    let mut ins = Sql::new(b);
    ins.push(&format!("INSERT INTO {QUEUES} (queue) VALUES "));
    for (i, q) in queues.iter().enumerate() {
        if i > 0 {
            ins.push(", ");
        }
        ins.push("(").arg(q.to_string()).push(")");
    }
    let cols = "queue, events, last_log_ms, last_log_seq, max_push_offset, max_push_log_ms, max_push_log_seq, gaps, gap_entries, rewinds, conflicts, max_offset";
    let rows = if b == Backend::Postgres {
        // One statement, one round trip: a no-op update locks each row (in the order listed)
        // whether it was there or not, and returns it as the latest commit left it.
        ins.push(&format!(" ON CONFLICT (queue) DO UPDATE SET queue = excluded.queue RETURNING {cols}"));
        tx.fetch_all(ins).await?
    } else {
        ins.push(&b.on_conflict_nothing(QUEUES, "queue"));
        tx.execute(ins).await?;
        let mut sel = Sql::new(b);
        sel.push(&format!("SELECT {cols} FROM {QUEUES} WHERE queue IN "));
        sel.list(queues.iter().map(|q| q.to_string()));
        sel.push(" ORDER BY queue");
        sel.push(b.for_update());
        tx.fetch_all(sel).await?
    };
    let mut out = BTreeMap::new();
    for r in rows {
        out.insert(
            r.text(0)?,
            QueueState {
                events: r.int(1)?,
                last_log: StreamId::new(r.int(2)?, r.int(3)?),
                max_push_offset: r.int(4)?,
                max_push: StreamId::new(r.int(5)?, r.int(6)?),
                gaps: r.int(7)?,
                gap_entries: r.int(8)?,
                rewinds: r.int(9)?,
                conflicts: r.int(10)?,
                max_offset: r.int(11)?,
                warning: None,
            },
        );
    }
    Ok(out)
}

async fn save_queues(tx: &mut Tx, b: Backend, states: &BTreeMap<String, QueueState>) -> Result<()> {
    let now = now_ms();
    for (q, st) in states {
        let mut s = Sql::new(b);
        s.push(&format!("UPDATE {QUEUES} SET events = "))
            .arg(st.events)
            .push(", last_log_ms = ")
            .arg(st.last_log.ms)
            .push(", last_log_seq = ")
            .arg(st.last_log.seq)
            .push(", max_offset = ")
            .arg(st.max_offset)
            .push(", max_push_offset = ")
            .arg(st.max_push_offset)
            .push(", max_push_log_ms = ")
            .arg(st.max_push.ms)
            .push(", max_push_log_seq = ")
            .arg(st.max_push.seq)
            .push(", gaps = ")
            .arg(st.gaps)
            .push(", gap_entries = ")
            .arg(st.gap_entries)
            .push(", rewinds = ")
            .arg(st.rewinds)
            .push(", conflicts = ")
            .arg(st.conflicts)
            .push(", update_time = ")
            .ts(Some(now));
        if let Some(w) = &st.warning {
            s.push(", last_warning = ").arg(w.clone()).push(", last_warning_time = ").ts(Some(now));
        }
        s.push(" WHERE queue = ").arg(q.clone());
        tx.execute(s).await?;
    }
    Ok(())
}

/// Splits `items` into runs of a size in `steps`, each of about `max_bytes` at most.
fn runs<'a, T>(items: &'a [T], steps: &[usize], size: impl Fn(&T) -> usize) -> Vec<&'a [T]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let left = items.len() - i;
        let n = steps
            .iter()
            .copied()
            .filter(|&s| s <= left)
            .find(|&s| s == 1 || items[i..i + s].iter().map(&size).sum::<usize>() <= STATEMENT_BYTES)
            .unwrap_or(1);
        out.push(&items[i..i + n]);
        i += n;
    }
    out
}

/// Splits `items` into runs of about `max_bytes` at most (at least one item each).
fn runs_by_bytes<T>(items: &[T], max_bytes: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, it) in items.iter().enumerate() {
        let n = size(it);
        if i > start && bytes + n > max_bytes {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// PostgreSQL: `INSERT INTO table (cols) SELECT … FROM UNNEST($1, $2, …)`, one array per
/// column: one short statement, prepared once, for any number of rows (instead of multi-row
/// VALUES with a placeholder per value).
fn pg_unnest_insert(b: Backend, table: &str, cols: &[&str], kinds: &[Kind], arrays: Vec<PgArray>) -> Sql {
    let mut s = Sql::new(b);
    s.push(&format!("INSERT INTO {table} {} SELECT ", col_list(b, cols)));
    for (i, k) in kinds.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        let c = format!("c{i}");
        match k {
            Kind::Int | Kind::Text => s.push(&c),
            Kind::Ms => s.push(&b.timestamp_of_ms(&c)),
            Kind::Json => s.push(&format!("CAST({c} AS JSONB)")),
        };
    }
    s.push(" FROM UNNEST(");
    for (i, (a, k)) in arrays.into_iter().zip(kinds).enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.array(a, if matches!(k, Kind::Int | Kind::Ms) { "BIGINT" } else { "TEXT" });
    }
    let names: Vec<String> = (0..kinds.len()).map(|i| format!("c{i}")).collect();
    s.push(&format!(") AS t({})", names.join(", ")));
    s
}

/// PostgreSQL: the batch's events split into those newer than their queue's last saved entry
/// (none of them can be stored yet: COPY them, each once, in key order) and the others (an
/// entry read again, or another archiver's: `INSERT … ON CONFLICT DO NOTHING`).
#[allow(clippy::type_complexity)]
fn split_fresh<'a>(
    work: &BTreeMap<&'a str, Work<'a>>,
    states: &BTreeMap<String, QueueState>,
) -> (Vec<(&'a str, &'a LogEvent)>, Vec<(&'a str, &'a LogEvent)>) {
    let (mut fresh, mut seen) = (Vec::new(), Vec::new());
    for (q, w) in work {
        let last = states.get(*q).map(|st| st.last_log).unwrap_or_default();
        let mut mine: Vec<&LogEvent> = Vec::new();
        for e in &w.events {
            if e.pos > last {
                mine.push(e);
            } else {
                seen.push((*q, *e));
            }
        }
        // An entry read twice is in the batch twice; COPY takes each key once.
        mine.sort_by_key(|e| (e.offset, e.pos));
        mine.dedup_by_key(|e| (e.offset, e.pos));
        fresh.extend(mine.into_iter().map(|e| (*q, e)));
    }
    (fresh, seen)
}

/// PostgreSQL: events none of which is stored, by COPY, in runs of [`STATEMENT_BYTES`].
async fn copy_events(tx: &mut Tx, events: &[(&str, &LogEvent)]) -> Result<()> {
    let cols = col_list(Backend::Postgres, &EVENT_COLS);
    for run in runs_by_bytes(events, STATEMENT_BYTES, |(_, e)| e.size()) {
        let mut data = CopyRows::new(EVENT_COLS.len());
        for (q, e) in run {
            store::put_event(&mut data, q, e);
        }
        tx.copy_in(EVENTS, &cols, &data.finish()).await?;
    }
    Ok(())
}

async fn insert_events(tx: &mut Tx, b: Backend, events: &[(&str, &LogEvent)]) -> Result<()> {
    if b == Backend::Postgres {
        for run in runs_by_bytes(events, STATEMENT_BYTES, |(_, e)| e.size()) {
            let mut cols = PgArrays::new(EVENT_COLS.len());
            for (q, e) in run {
                store::put_event(&mut cols, q, e);
            }
            let mut s = pg_unnest_insert(b, EVENTS, &EVENT_COLS, &EVENT_KINDS, cols.cols);
            s.push(&b.on_conflict_nothing(EVENTS, "queue"));
            tx.execute(s).await?;
        }
        return Ok(());
    }
    let head = format!("INSERT INTO {EVENTS} {} VALUES ", col_list(b, &EVENT_COLS));
    let tail = b.on_conflict_nothing(EVENTS, "queue");
    for run in runs(events, &EVENT_STEPS, |(_, e)| e.size()) {
        let mut s = Sql::new(b);
        s.push(&head);
        for (i, (q, e)) in run.iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            store::event_values(&mut s, q, e);
        }
        s.push(&tail);
        tx.execute(s).await?;
    }
    Ok(())
}

/// Folds a queue's share of the batch into row writes; returns the offsets where a
/// different message took over a stored row: (offset, old id, new id).
async fn fold_queue(
    tx: &mut Tx,
    b: Backend,
    queue: &str,
    w: &mut Work<'_>,
    max_offset: i64,
    writes: &mut Vec<Write>,
) -> Result<Vec<(i64, String, String)>> {
    // Only offsets that may have a row are looked up (most of a batch is new messages).
    let offsets: Vec<i64> = w.by_offset.keys().copied().take_while(|&o| o <= max_offset).collect();
    let existing = select_states(tx, b, queue, &offsets).await?;
    let mut conflicts = Vec::new();
    let mut rebuild: Vec<i64> = Vec::new();
    for (offset, evs) in w.by_offset.iter_mut() {
        evs.sort_by_key(|e| e.pos);
        evs.dedup_by_key(|e| e.pos);
        match existing.get(offset) {
            Some((row, _)) if evs[0].pos > row.pos => {
                let mut r = row.clone();
                let newest_push = evs.iter().rev().find(|e| e.event == "push");
                if let Some(p) = newest_push {
                    if p.id != row.id {
                        conflicts.push((*offset, row.id.clone(), p.id.clone()));
                    }
                }
                for e in evs.iter() {
                    r.apply(e);
                }
                writes.push(if newest_push.is_some() { Write::Full(r) } else { Write::State(r) });
            }
            Some(_) => rebuild.push(*offset),
            None => {
                let mut r = Row::start(queue, evs[0]);
                for e in &evs[1..] {
                    r.apply(e);
                }
                writes.push(if *offset > max_offset { Write::New(r) } else { Write::Full(r) });
            }
        }
    }
    if rebuild.is_empty() {
        return Ok(conflicts);
    }
    let mut stored = select_events(tx, b, queue, &rebuild).await?;
    for offset in rebuild {
        let Some(mut evs) = stored.remove(&offset) else {
            continue;
        };
        let (old, _) = &existing[&offset];
        let latest_push = evs.iter().filter(|e| e.event == "push").map(|e| e.pos).max();
        let Some(mut r) = fold::rebuild(queue, &mut evs) else {
            continue;
        };
        // The message columns come from the newest push: from this batch when it holds that
        // entry, else they are the ones stored.
        let batch_push = latest_push.and_then(|lp| w.by_offset[&offset].iter().find(|e| e.pos == lp).and_then(|e| e.payload.clone()));
        match batch_push {
            Some(p) => {
                if old.id != r.id && old.pos < latest_push.unwrap_or_default() {
                    conflicts.push((offset, old.id.clone(), r.id.clone()));
                }
                r.payload = Some(p);
                writes.push(Write::Full(r));
            }
            None => writes.push(Write::State(r)),
        }
    }
    Ok(conflicts)
}

/// ` AND offset BETWEEN lowest AND highest AND offset IN (…)`. The range is
/// what the primary key finds at once, whatever the planner believes of the table: while
/// PostgreSQL's statistics still describe a small table (a new archive catching up: 85 rows
/// believed, 150,000 there), the IN list alone was planned as a scan of the whole queue by
/// another index (30–75 ms instead of 1 ms for 400 offsets, growing with the table).
fn offsets_in(s: &mut Sql, offsets: &[i64]) {
    let col = s.backend.col("offset");
    let lowest = offsets.iter().copied().min().unwrap_or_default();
    let highest = offsets.iter().copied().max().unwrap_or_default();
    s.push(&format!(" AND {col} >= ")).arg(lowest).push(&format!(" AND {col} <= ")).arg(highest);
    s.push(&format!(" AND {col} IN ")).list(offsets.iter().copied());
}

/// A lookup by offsets. Not kept prepared on PostgreSQL: it would reuse a generic plan made
/// while the table was small, a sequential scan that stays one as the table grows (150 ms
/// instead of 1 ms for 400 offsets); unprepared, each lookup is planned with its offsets.
/// Kept prepared on MySQL/MariaDB, which plan each execution anew anyway: preparing the
/// statement again for every lookup made it 10 times slower (34 ms instead of 3 ms for the
/// 500 offsets of a batch).
fn lookup(s: Sql) -> Sql {
    match s.backend {
        Backend::MySql => s,
        _ => s.unprepared(),
    }
}

/// The stored state of the rows at these offsets.
async fn select_states(tx: &mut Tx, b: Backend, queue: &str, offsets: &[i64]) -> Result<HashMap<i64, (Row, bool)>> {
    let mut out = HashMap::new();
    for run in runs(offsets, &ROW_STEPS, |_| 8) {
        let mut s = Sql::new(b);
        s.push(&format!("SELECT {} FROM {MESSAGES} WHERE queue = ", store::state_select(b))).arg(queue.to_string());
        offsets_in(&mut s, run);
        for rec in tx.fetch_all(lookup(s)).await? {
            let (row, has) = store::state_from(queue, &rec)?;
            out.insert(row.offset, (row, has));
        }
    }
    Ok(out)
}

/// Every stored event of the messages at these offsets.
async fn select_events(tx: &mut Tx, b: Backend, queue: &str, offsets: &[i64]) -> Result<HashMap<i64, Vec<LogEvent>>> {
    let mut out: HashMap<i64, Vec<LogEvent>> = HashMap::new();
    for run in runs(offsets, &ROW_STEPS, |_| 8) {
        let mut s = Sql::new(b);
        s.push(&format!("SELECT {} FROM {EVENTS} WHERE queue = ", store::event_select(b))).arg(queue.to_string());
        offsets_in(&mut s, run);
        for rec in tx.fetch_all(lookup(s)).await? {
            let e = store::event_from(&rec)?;
            out.entry(e.offset).or_default().push(e);
        }
    }
    Ok(out)
}

/// Keeps the row a different message is about to take over.
async fn copy_replaced(tx: &mut Tx, b: Backend, queue: &str, offset: i64) -> Result<()> {
    let cols: Vec<String> = ROW_COLS.iter().map(|c| b.col(c)).collect();
    let cols = cols.join(", ");
    let mut s = Sql::new(b);
    s.push(&format!("INSERT INTO {REPLACED} ({cols}, replaced_time) SELECT {cols}, "))
        .ts(Some(now_ms()))
        .push(&format!(" FROM {MESSAGES} WHERE queue = "))
        .arg(queue.to_string())
        .push(&format!(" AND {} = ", b.col("offset")))
        .arg(offset)
        .push(&b.on_conflict_nothing(REPLACED, "queue"));
    tx.execute(s).await?;
    Ok(())
}

/// Offsets going back: a push newer than the newest push seen, at an offset not above it.
fn note_pushes(st: &mut QueueState, w: &mut Work<'_>) {
    let mut pushes: Vec<&LogEvent> = w.events.iter().copied().filter(|e| e.event == "push").collect();
    pushes.sort_by_key(|e| e.pos);
    for p in pushes {
        if p.pos <= st.max_push {
            continue;
        }
        if st.max_push_offset > 0 && p.offset <= st.max_push_offset {
            st.rewinds += 1;
            w.notes.push(format!(
                "offsets went back from {} to {} (Redis restarted without its data, or a failover lost writes)",
                st.max_push_offset, p.offset
            ));
        }
        st.max_push_offset = p.offset;
        st.max_push = p.pos;
    }
}

async fn write_rows(tx: &mut Tx, b: Backend, writes: &[Write], copy: bool) -> Result<()> {
    let mut new: Vec<&Row> = Vec::new();
    let mut full: Vec<&Row> = Vec::new();
    let mut state: Vec<&Row> = Vec::new();
    for w in writes {
        match w {
            Write::New(r) if copy => new.push(r),
            Write::New(r) | Write::Full(r) => full.push(r),
            Write::State(r) => state.push(r),
        }
    }
    // Key order: two archivers lock rows in the same order.
    new.sort_by(|a, b| (&a.queue, a.offset).cmp(&(&b.queue, b.offset)));
    full.sort_by(|a, b| (&a.queue, a.offset).cmp(&(&b.queue, b.offset)));
    state.sort_by(|a, b| (&a.queue, a.offset).cmp(&(&b.queue, b.offset)));
    let head = format!("INSERT INTO {MESSAGES} {} VALUES ", col_list(b, &ROW_COLS));
    let full_tail = b.upsert(&["queue", "offset"], &ROW_COLS);
    let state_tail = b.upsert(&["queue", "offset"], &STATE_COLS);
    let payload_size = |r: &&Row| 256 + r.payload.as_ref().map_or(0, |p| p.body.len() * 4 / 3 + 64);
    if b == Backend::Postgres {
        let cols = col_list(b, &ROW_COLS);
        for run in runs_by_bytes(&new, STATEMENT_BYTES, payload_size) {
            let mut data = CopyRows::new(ROW_COLS.len());
            for r in run {
                store::put_row(&mut data, r, false);
            }
            tx.copy_in(MESSAGES, &cols, &data.finish()).await?;
        }
        for (rows, state_only, tail) in [(&full, false, &full_tail), (&state, true, &state_tail)] {
            for run in runs_by_bytes(rows, STATEMENT_BYTES, payload_size) {
                let mut cols = PgArrays::new(ROW_COLS.len());
                for r in run {
                    store::put_row(&mut cols, r, state_only);
                }
                let mut s = pg_unnest_insert(b, MESSAGES, &ROW_COLS, &ROW_KINDS, cols.cols);
                s.push(tail);
                tx.execute(s).await?;
            }
        }
        return Ok(());
    }
    for run in runs(&full, &ROW_STEPS, payload_size) {
        let mut s = Sql::new(b);
        s.push(&head);
        for (i, r) in run.iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            store::row_values(&mut s, r);
        }
        s.push(&full_tail);
        tx.execute(s).await?;
    }
    for run in runs(&state, &ROW_STEPS, |_| 256) {
        let mut s = Sql::new(b);
        s.push(&head);
        for (i, r) in run.iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            store::state_row_values(&mut s, r);
        }
        s.push(&state_tail);
        tx.execute(s).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_use_few_sizes_and_respect_the_byte_limit() {
        let items: Vec<usize> = vec![1; 1234];
        let sizes: Vec<usize> = runs(&items, &ROW_STEPS, |_| 10).iter().map(|r| r.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1234);
        assert!(sizes.iter().all(|s| ROW_STEPS.contains(s)));
        assert_eq!(sizes[..3], [400, 400, 400]);
        let big: Vec<usize> = vec![3 << 20; 3];
        let sizes: Vec<usize> = runs(&big, &ROW_STEPS, |b| *b).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }

    #[test]
    fn byte_runs_cut_at_the_limit_and_keep_a_big_item_alone() {
        let items: Vec<usize> = vec![3, 3, 3, 10, 1];
        let sizes: Vec<usize> = runs_by_bytes(&items, 6, |x| *x).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1]);
        assert!(runs_by_bytes(&[] as &[usize], 6, |x| *x).is_empty());
    }
}
