//! How the archive reaches Redis: the [`Backend`] trait shared with the console (crate
//! `rmq-backend`; the rmq client implements it), and the reply readers that go with it.

pub use rmq_backend::reply::{as_bytes, as_i64, as_string, as_u64, pairs};
pub use rmq_backend::{Backend, BoxFuture, Call, RedisError, Reply};

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
