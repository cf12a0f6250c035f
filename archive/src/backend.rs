//! How the archive reaches Redis: the [`Backend`] trait shared with the console (crate
//! `rmq-backend`; the rmq client implements it), and the reply readers that go with it.

pub use rmq_backend::reply::{as_bytes, as_i64, as_string, as_u64, pairs};
pub use rmq_backend::{shutdown_signal, Backend, BoxFuture, Call, RedisError, Reply};
