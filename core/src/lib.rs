//! rmq-core: the queue logic of rmq, apart from Redis's FFI, so it reads and tests alone.
//!
//! - [`args`]: arguments → typed requests; every refusal happens there.
//! - [`queue`]: the state machine of one queue over a [`store::Store`].
//! - [`lookup`]: a lookup by id that reads a big queue a slice at a time.
//! - [`record`]: the stored form of a message (shared with the Lua edition).
//! - [`settings`]: per-queue settings and their rules.

pub mod args;
pub mod cluster;
pub mod error;
pub mod lookup;
pub mod mem;
pub mod queue;
pub mod record;
pub mod settings;
pub mod store;

pub use error::{Error, Result};
