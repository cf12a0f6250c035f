//! `rmq archive status`: per queue, what the archive holds and what it is missing.

use std::collections::BTreeMap;

use sqlx::Row as _;

use crate::db::Db;
use crate::error::Result;
use crate::source::Source;
use crate::store::{MESSAGES, QUEUES};
use crate::when::format_ms;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct QueueStatus {
    pub queue: String,
    /// Messages in the table.
    pub rows: u64,
    /// The highest offset archived.
    pub last_offset: Option<i64>,
    /// Log entries archived so far.
    pub events: i64,
    /// When the archiver last saved entries of this queue.
    pub last_saved: Option<String>,
    /// Log entries not archived yet: not read by any archiver, plus read and not yet saved
    /// (`None` when Redis cannot be asked or cannot tell).
    pub lag: Option<u64>,
    pub pending: Option<u64>,
    /// Entries in the log now.
    pub log_length: Option<u64>,
    /// Times entries were lost before they were archived (the log trimmed past the archiver),
    /// and how many entries in all.
    pub gaps: i64,
    pub gap_entries: i64,
    /// Times offsets went back (Redis lost data), and rows a different message took over.
    pub rewinds: i64,
    pub conflicts: i64,
    pub last_warning: Option<String>,
    pub last_warning_time: Option<String>,
}

/// Every queue the archive knows, with the log's side from Redis when `source` is given
/// and answers.
pub async fn status(db: &Db, source: Option<&Source>) -> Result<Vec<QueueStatus>> {
    let b = db.backend;
    let mut out: BTreeMap<String, QueueStatus> = BTreeMap::new();
    let mut s = db.sql();
    s.push(&format!(
        "SELECT queue, events, gaps, gap_entries, rewinds, conflicts, last_warning, {}, {} FROM {QUEUES}",
        b.ms_of("last_warning_time"),
        b.ms_of("update_time"),
    ));
    for r in s.one_off().fetch_all(&db.pool).await? {
        let q: String = r.try_get(0)?;
        let warn_ms: Option<i64> = r.try_get(7)?;
        let saved_ms: Option<i64> = r.try_get(8)?;
        out.insert(
            q.clone(),
            QueueStatus {
                queue: q,
                events: r.try_get(1)?,
                gaps: r.try_get(2)?,
                gap_entries: r.try_get(3)?,
                rewinds: r.try_get(4)?,
                conflicts: r.try_get(5)?,
                last_warning: r.try_get(6)?,
                last_warning_time: warn_ms.map(format_ms),
                last_saved: saved_ms.map(format_ms),
                ..Default::default()
            },
        );
    }
    let mut s = db.sql();
    s.push(&format!("SELECT queue, COUNT(*), MAX({}) FROM {MESSAGES} GROUP BY queue", b.col("offset")));
    for r in s.one_off().fetch_all(&db.pool).await? {
        let q: String = r.try_get(0)?;
        let e = out.entry(q.clone()).or_insert_with(|| QueueStatus { queue: q, ..Default::default() });
        e.rows = r.try_get::<i64, _>(1)?.max(0) as u64;
        e.last_offset = r.try_get(2)?;
    }
    if let Some(src) = source {
        for st in out.values_mut() {
            match src.group_info(&st.queue).await {
                Ok(Some(g)) => {
                    st.lag = g.lag.map(|l| l + g.pending);
                    st.pending = Some(g.pending);
                    st.log_length = Some(g.length);
                }
                Ok(None) => {
                    st.lag = None;
                    st.log_length = Some(0);
                }
                Err(e) => {
                    tracing::warn!("asking Redis about {}: {e}", st.queue);
                    break;
                }
            }
        }
    }
    Ok(out.into_values().collect())
}

/// The table for a person to read.
pub fn table(rows: &[QueueStatus]) -> String {
    let head = ["queue", "rows", "last_offset", "lag", "pending", "gaps", "lost", "rewinds", "conflicts", "last_saved"];
    let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    let mut cells: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.queue.clone(),
            r.rows.to_string(),
            r.last_offset.map_or("-".into(), |o| o.to_string()),
            opt(r.lag),
            opt(r.pending),
            r.gaps.to_string(),
            r.gap_entries.to_string(),
            r.rewinds.to_string(),
            r.conflicts.to_string(),
            r.last_saved.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..head.len()).map(|i| cells.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &cells {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(
                |(i, c)| {
                    if i == 0 || i == head.len() - 1 {
                        format!("{:<w$}", c, w = widths[i])
                    } else {
                        format!("{:>w$}", c, w = widths[i])
                    }
                },
            )
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    for r in rows {
        if let (Some(w), Some(t)) = (&r.last_warning, &r.last_warning_time) {
            out += &format!("{}: last warning {t}: {w}\n", r.queue);
        }
    }
    out
}
