//! `rmq archive replay`: pushes archived messages again, in offset order.
//!
//! Each copy carries the original's body, tag, key and headers, plus `replay-of` (the
//! original id, as RMQ.REPLAY sets it), `replay-of-queue` and `replay-of-offset`. Its id is
//! derived from the original (queue, offset, id) and the run's name, so running the same
//! replay again within the target queue's dedup window pushes nothing twice.

use redis::Value;

use crate::backend::{as_i64, pairs, Backend, Call};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::search::{self, Filter};
use crate::store::Message;

/// Messages pushed per pipeline.
const PIPELINE: usize = 100;
/// Rows read per query.
const PAGE: i64 = 500;

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub filter: Filter,
    /// Push to this queue instead of the original one.
    pub to: Option<String>,
    pub dry_run: bool,
    /// Part of every derived id: another name replays the same messages again.
    pub run_name: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    pub target: String,
    pub matched: u64,
    /// Copies sent (in a dry run: that would be sent).
    pub sent: u64,
    /// Of those, copies the target already had from an earlier run within its dedup window
    /// (not pushed again); counted from the target's `dups` counter, so exact unless others
    /// push duplicates to it at the same time.
    pub already_there: u64,
    /// Matching rows whose message the archive never saw (no body): not pushed.
    pub skipped_without_body: u64,
    pub dry_run: bool,
}

/// The id of a message's copy in a replay run named `run`.
pub fn replay_id(run: &str, queue: &str, offset: i64, id: &str) -> String {
    let name = format!("{run}\0{queue}\0{offset}\0{id}");
    let u = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
    format!("replay-{u}")
}

/// The arguments of RMQ.PUSH after the queue for a copy of `m`.
fn push_args(m: &Message, body: Vec<u8>, run: &str) -> Vec<Vec<u8>> {
    let mut a = vec![body, b"ID".to_vec(), replay_id(run, &m.queue, m.offset, &m.id).into_bytes()];
    if !m.tag.is_empty() {
        a.push(b"TAG".to_vec());
        a.push(m.tag.clone().into_bytes());
    }
    if !m.key.is_empty() {
        a.push(b"KEY".to_vec());
        a.push(m.key.clone().into_bytes());
    }
    let ours = ["replay-of", "replay-of-queue", "replay-of-offset"];
    let mut headers: Vec<(String, String)> = m.headers.iter().filter(|(k, _)| !ours.contains(&k.as_str())).cloned().collect();
    headers.push(("replay-of".into(), m.id.clone()));
    headers.push(("replay-of-queue".into(), m.queue.clone()));
    headers.push(("replay-of-offset".into(), m.offset.to_string()));
    for (k, v) in headers {
        a.push(b"HEADER".to_vec());
        a.push(k.into_bytes());
        a.push(v.into_bytes());
    }
    a
}

/// The queue's `dups` counter (RMQ.STATS).
async fn dups(redis: &dyn Backend, q: &str) -> Result<i64> {
    for (k, v) in pairs(redis.call("stats", Some(q), Vec::new()).await?)? {
        if k == "dups" {
            return Ok(as_i64(v)?);
        }
    }
    Ok(0)
}

/// Replays the matching messages. `each` sees every matching message (and whether it is
/// sent) as it goes, `total` the number that match, `done` how many are handled so far.
pub async fn replay(
    db: &Db,
    redis: &dyn Backend,
    opts: &ReplayOptions,
    mut total: impl FnMut(u64),
    mut each: impl FnMut(&Message, bool),
    mut done: impl FnMut(u64),
) -> Result<ReplayReport> {
    let target = opts.to.clone().unwrap_or_else(|| opts.filter.queue.clone());
    if !crate::source::valid_queue(&target) {
        return Err(Error::Invalid(format!("--to {target:?} is not a valid queue name")));
    }
    let mut report = ReplayReport { target: target.clone(), dry_run: opts.dry_run, ..Default::default() };
    total(search::count(db, &opts.filter).await?);
    let dups_before = if opts.dry_run { 0 } else { dups(redis, &target).await? };
    let mut after = None;
    let mut pushed = 0u64;
    loop {
        let page = search::find(db, &opts.filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.offset);
        let mut pushes: Vec<Call> = Vec::new();
        for m in &page {
            report.matched += 1;
            let Some(body) = m.body_bytes()? else {
                report.skipped_without_body += 1;
                each(m, false);
                continue;
            };
            each(m, true);
            report.sent += 1;
            if !opts.dry_run {
                pushes.push(Call { name: "push", queue: target.clone(), args: push_args(m, body, &opts.run_name) });
            }
        }
        for chunk in pushes.chunks(PIPELINE) {
            let replies = redis.call_many(chunk.to_vec()).await?;
            for (i, r) in replies.into_iter().enumerate() {
                match r {
                    Ok(Value::ServerError(e)) => return Err(Error::Failed(format!("pushing a copy to {target}: {e:?}"))),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(Error::Failed(format!(
                            "pushing a copy to {target} failed after {} copies: {e} (running the same replay again is safe)",
                            pushed + i as u64
                        )))
                    }
                }
            }
            pushed += chunk.len() as u64;
        }
        done(report.matched);
    }
    if !opts.dry_run {
        let dups_after = dups(redis, &target).await?;
        report.already_there = (dups_after - dups_before).clamp(0, report.sent as i64) as u64;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_ids_are_stable_valid_and_distinct() {
        let a = replay_id("replay", "orders", 42, "order-42");
        assert_eq!(a, replay_id("replay", "orders", 42, "order-42"));
        assert_ne!(a, replay_id("replay", "orders", 43, "order-42"));
        assert_ne!(a, replay_id("again", "orders", 42, "order-42"));
        assert!(a.len() <= 128 && a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
    }
}
