//! rmq-archive: every message of rmq queues in SQL — SQLite, PostgreSQL or MySQL/MariaDB —
//! with its latest state and its full history, searchable and replayable. See
//! `docs/archive.md`.
//!
//! The archiver reads each followed queue's message log (`log:{q}`, written by rmq inside
//! Redis in the same step as every state change) with a consumer group, and writes what it
//! read in batches, one transaction each, acknowledging the log entries only after the commit.
//!
//! - [`event`]: log entries → typed events; [`fold`]: events → a message's row (the state
//!   machine, no SQL);
//! - [`db`]: backends, pool, migrations, dialects; [`store`]: the tables column by column;
//!   [`write`]: one batch → one transaction; [`pgcopy`]: PostgreSQL's binary COPY format;
//! - [`backend`]: what the archive needs of a Redis connection (the rmq client provides it);
//!   [`source`]: the Redis side (queues, log reads, gaps); [`archiver`]: the run loop;
//!   [`retain`]: retention;
//! - [`search`], [`replay`], [`status`]: the other commands; [`cli`]: `rmq archive …`;
//! - [`testdb`]: throwaway PostgreSQL and MariaDB servers for tests and benchmarks.
pub mod archiver;
pub mod backend;
pub mod cli;
pub mod db;
pub mod error;
pub mod event;
pub mod fold;
pub mod names;
pub mod pgcopy;
pub mod replay;
pub mod retain;
pub mod search;
pub mod source;
pub mod status;
pub mod store;
pub mod testdb;
pub mod when;
pub mod write;

pub use db::{Backend, Db};
pub use error::{Error, Result};
/// The sqlx this crate uses (for tests and tools that query the archive directly).
pub use sqlx;
