//! The SQL archive for the console's tests: the real archiver filling a real database.

use std::sync::Arc;
use std::time::Duration;

use rmq_archive::archiver::{self, RunConfig};
use rmq_archive::names::Patterns;
use rmq_archive::source::Source;
use rmq_archive::Db;

use super::{eventually, Redis};

/// The archiver (the loop `rmq archive run` runs), in the test process; stopped on drop.
pub struct Archiver {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Archiver {
    /// Archives the queues that `queues` names (as `--queues`) from `r` into `db_url`.
    pub async fn start(r: &Redis, db_url: &str, queues: &str) -> Archiver {
        let backend: Arc<dyn rmq_console::Backend> = Arc::new(r.client());
        let source = Source::new(backend, "rmq-archive", "test-archiver");
        let db = Db::open(db_url, true).await.unwrap();
        let cfg = RunConfig {
            patterns: Patterns::parse(Some(queues)),
            batch_time: Duration::from_millis(50),
            discover_every: Duration::from_millis(200),
            poll_max: Duration::from_millis(50),
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            archiver::run(source, db, cfg, async move {
                let _ = stopped.await;
            })
            .await
            .expect("the archiver runs");
        });
        Archiver { stop: Some(stop), task: Some(task) }
    }

    /// Stops it as SIGTERM does: the batch in hand is saved first.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(60), t).await.expect("the archiver stops").unwrap();
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Waits until every entry of the queue's log is saved in the archive.
pub async fn caught_up(r: &Redis, q: &str) {
    let backend: Arc<dyn rmq_console::Backend> = Arc::new(r.client());
    let source = Source::new(backend, "rmq-archive", "test");
    eventually(
        Duration::from_secs(60),
        "the archive catches up",
        async || matches!(source.group_info(q).await.unwrap(), Some(g) if g.lag == Some(0) && g.pending == 0),
    )
    .await;
}
