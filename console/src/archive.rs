//! The SQL archive as the console sees it (`--archive-db URL`): the database, and the
//! archiver's consumer group on each queue's log (for the lag). Searches, histories and
//! replays are the archive crate's own functions; this module opens the archive and reads what
//! `/metrics` shows of it.

use std::sync::Arc;

use rmq_archive::source::Source;
use rmq_archive::status::{self, QueueStatus};
use rmq_archive::Db;

use crate::backend::Backend;
use crate::Error;

/// An open archive.
pub struct Archive {
    pub db: Db,
    /// Reads the archiver's group on each queue's log (never reads or acknowledges entries).
    pub source: Source,
}

/// What a scrape shows of the archive.
pub struct Health {
    /// One row per archived queue; `lag` is None when Redis did not answer or the queue has no
    /// log.
    pub queues: Vec<QueueStatus>,
}

impl Archive {
    /// Opens the archive at `url` (sqlite://, postgres://, mysql://) and checks that it holds
    /// an rmq archive of a schema this binary reads. `group`: the archivers' consumer group.
    pub async fn open(url: &str, group: &str, redis: Arc<dyn Backend>) -> Result<Archive, Error> {
        let db = Db::open(url, false).await.map_err(|e| Error::Archive(e.to_string()))?;
        db.check_schema().await.map_err(|e| Error::Archive(e.to_string()))?;
        Ok(Archive { db, source: Source::new(redis, group, "rmq-console") })
    }

    /// The database's URL without its password.
    pub fn shown(&self) -> &str {
        &self.db.shown
    }

    pub fn group(&self) -> &str {
        &self.source.group
    }

    /// Every archived queue with its gaps (one query of the archive's per-queue table) and its
    /// lag (one pipeline to Redis for all of them): what `rmq archive status` shows, without
    /// counting messages. Fails when the database does not answer; a Redis that does not
    /// answer leaves the lag unknown.
    pub async fn health(&self) -> Result<Health, rmq_archive::Error> {
        let mut queues: Vec<QueueStatus> = status::archived_queues(&self.db).await?.into_values().collect();
        if let Err(e) = status::add_lag(&self.source, &mut queues).await {
            tracing::warn!("archive lag: asking Redis: {e}");
        }
        Ok(Health { queues })
    }
}
