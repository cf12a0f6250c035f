//! `--retain DURATION`: deletes rows untouched for longer than that (created and last changed
//! before the cut-off), with their events, a few hundred per transaction so the archiver and
//! the readers of the table are never held up for long.

use std::time::Duration;

use sqlx::Row as _;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::archiver::sleep_or_stop;
use crate::db::Db;
use crate::error::Result;
use crate::store::{EVENTS, MESSAGES, QUEUES, REPLACED};
use crate::when::now_ms;

/// Rows deleted per transaction.
const CHUNK: i64 = 500;

/// Sweeps now and then every minute until stopped.
pub async fn run(db: Db, keep: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        match sweep(&db, keep, &stop).await {
            Ok(0) => {}
            Ok(n) => info!("retention: deleted {n} rows untouched for more than {keep:?}"),
            Err(e) => warn!("retention: {e}; trying again in a minute"),
        }
        if sleep_or_stop(Duration::from_secs(60), &mut stop).await {
            return;
        }
    }
}

/// Deletes the rows (and their events) created and last changed more than `keep` ago;
/// returns how many rows.
pub async fn sweep(db: &Db, keep: Duration, stop: &watch::Receiver<bool>) -> Result<u64> {
    let b = db.backend;
    let cutoff = now_ms() - keep.as_millis() as i64;
    let queues: Vec<(String,)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT queue FROM {QUEUES} ORDER BY queue"))).fetch_all(&db.pool).await?;
    let off = b.col("offset");
    let mut total = 0u64;
    for (q,) in queues {
        loop {
            if *stop.borrow() {
                return Ok(total);
            }
            let mut tx = db.begin().await?;
            // The queue's lock: the archiver does not fold into a row being deleted.
            let mut s = db.sql();
            s.push(&format!("SELECT queue FROM {QUEUES} WHERE queue = ")).arg(q.clone()).push(b.for_update());
            s.query().fetch_all(&mut *tx).await?;
            let mut s = db.sql();
            s.push(&format!("SELECT {off} FROM {MESSAGES} WHERE queue = "))
                .arg(q.clone())
                .push(" AND create_time < ")
                .ts(Some(cutoff))
                .push(" AND update_time < ")
                .ts(Some(cutoff))
                .push(&format!(" ORDER BY create_time LIMIT {CHUNK}"));
            let offsets: Vec<i64> =
                s.query().fetch_all(&mut *tx).await?.iter().map(|r| r.try_get::<i64, _>(0)).collect::<std::result::Result<_, _>>()?;
            if offsets.is_empty() {
                tx.commit().await?;
                break;
            }
            for table in [EVENTS, MESSAGES] {
                let mut s = db.sql();
                s.push(&format!("DELETE FROM {table} WHERE queue = "))
                    .arg(q.clone())
                    .push(&format!(" AND {off} IN "))
                    .list(offsets.iter().copied());
                s.one_off().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            total += offsets.len() as u64;
            if (offsets.len() as i64) < CHUNK {
                break;
            }
        }
        let mut s = db.sql();
        s.push(&format!("DELETE FROM {REPLACED} WHERE queue = ")).arg(q.clone()).push(" AND replaced_time < ").ts(Some(cutoff));
        s.one_off().execute(&db.pool).await?;
    }
    Ok(total)
}
