//! rmq-client: a producer with a disk spool and a worker for rmq, the reliable message queue
//! in Redis, over both editions: the `RMQ.*` module, or the Lua library (`FCALL rmq_*`) on a
//! Redis without modules. See `docs/client.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rmq_client::Error> {
//! use rmq_client::{Client, Config, Producer, ProducerConfig, Push, Worker, WorkerConfig};
//! let client = Client::new(Config::new("redis://127.0.0.1:6379"))?;
//! let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
//! let pushed = producer.push(Push::new("orders", "{\"sku\":42}").tag("created")).await?;
//! println!("{} (spooled: {})", pushed.id, pushed.spooled);
//! Worker::new(client, "orders", WorkerConfig::default())
//!     .handle("created", |m| async move {
//!         println!("{}", m.body_str());
//!         Ok(())
//!     })
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
#[cfg(feature = "archive")]
mod archive_backend;
pub mod client;
pub mod cluster;
#[cfg(feature = "console")]
mod console_backend;
pub mod error;
pub mod message;
mod node;
pub mod partition;
pub mod producer;
pub mod spool;
pub mod worker;

pub use client::{Client, Config, Confirm, Edition, EditionChoice, Fetch, NackKind, Stats};
pub use error::{Error, Result};
pub use message::{new_id, Message, Push};
pub use partition::{Partitioned, Rotation};
pub use producer::{Producer, ProducerConfig, Pushed};
pub use spool::{DrainReport, Spool, SpoolStatus};
pub use worker::{shutdown_signal, HandlerError, HandlerResult, Worker, WorkerConfig, WorkerReport};
