//! A worker: handles `orders` by tag until ctrl-c / SIGTERM, then stops gracefully.
//!
//!     cargo run -p rmq-client --example worker -- redis://127.0.0.1:6379
use std::time::Duration;

use rmq_client::{Client, Config, HandlerError, Worker, WorkerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let url = std::env::args().nth(1).unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let client = Client::new(Config::new(url))?;
    let cfg = WorkerConfig {
        lock: Duration::from_secs(30), // invisible to others; TOUCHed every 15 s while a handler runs
        concurrency: 4,
        failed_is_error: false,    // HandlerError::Retry is retried (backoff, max-attempts)
        no_handler_is_error: true, // a tag without a handler goes to errors
        ..Default::default()
    };
    let report = Worker::new(client, "orders", cfg)
        .handle("created", |m| async move {
            println!("created {} (attempt {}): {}", m.id, m.attempt, m.body_str());
            Ok(())
        })
        .handle("refund", |m| async move {
            let order: serde_json::Value = serde_json::from_slice(&m.body)?; // a bad body → errors
            if order["order"].as_u64().unwrap_or(0).is_multiple_of(2) {
                // Retried later (NACK RETRY), with the queue's backoff.
                return Err(HandlerError::retry("payment provider busy"));
            }
            println!("refunded {}", order);
            Ok(())
        })
        .run()
        .await?;
    println!("stopped: {report:?}");
    Ok(())
}
