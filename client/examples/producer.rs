//! A producer: pushes a few orders; when Redis is down they go to the spool (~/.local/state/rmq/spool) and
//! are re-sent by the background task once it is back.
//!
//!     cargo run -p rmq-client --example producer -- redis://127.0.0.1:6379 10
use std::time::Duration;

use rmq_client::{Client, Config, Producer, ProducerConfig, Push};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let url = std::env::args().nth(1).unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let n: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let client = Client::new(Config { pool_size: 2, ..Config::new(url) })?;
    let producer = Producer::new(client, ProducerConfig::default()).await?;
    for i in 0..n {
        let tag = if i % 3 == 0 { "refund" } else { "created" };
        let msg = Push::new("orders", format!("{{\"order\":{i}}}")).tag(tag).key(format!("customer-{}", i % 4)).header("source", "example");
        match producer.push(msg).await {
            Ok(p) if p.spooled => println!("{} spooled (Redis unavailable)", p.id),
            Ok(p) => println!("{} pushed", p.id),
            // Invalid, refused (e.g. queue full), or stored nowhere: the caller decides.
            Err(e) => eprintln!("not pushed: {e}"),
        }
    }
    // Give the background task a moment to re-send anything spooled.
    let st = producer.spool_status().await?;
    if st.records > 0 {
        println!("{} message(s) in the spool; re-sending…", st.records);
        let r = producer.drain().await?;
        println!("sent {}, remaining {}", r.sent, r.remaining);
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
