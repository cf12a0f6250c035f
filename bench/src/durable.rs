//! The durable setting: a primary with `appendonly yes, appendfsync everysec` and one replica
//! attached, as production runs it. Every write is propagated for real here (to the AOF and
//! to the replica), which the main server of the benchmark, with neither, never does.

use std::time::{Duration, Instant};

use redis::Connection;

use crate::measure::info;
use crate::server::Server;

/// The primary (measured) and its replica (on the other CPU when the run is pinned, so that
/// it does not take the primary's CPU).
pub struct Durable {
    pub primary: Server,
    pub replica: Server,
}

impl Durable {
    /// `config`: the run's own directives (`--redis-config`), given to both servers.
    pub fn start(module: &std::path::Path, cpu: Option<usize>, config: &[String]) -> Result<Durable, String> {
        let mut aof = config.to_vec();
        aof.extend(["--appendonly", "yes", "--appendfsync", "everysec"].iter().map(|s| s.to_string()));
        let primary = Server::start_with(module, cpu, &aof)?;
        let other = cpu.map(|c| if c == 0 { 1 } else { 0 });
        let mut replicaof = config.to_vec();
        replicaof.extend(["--replicaof".to_string(), "127.0.0.1".to_string(), primary.port.to_string()]);
        let replica = Server::start_with(module, other, &replicaof)?;
        let d = Durable { primary, replica };
        let mut p = d.primary.conn();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let f = info(&mut p, "replication")?;
            let online = f.iter().any(|(k, v)| k.starts_with("slave0") && v.contains("state=online"));
            if online {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the replica did not come online within 30 s; its log:\n{}", d.replica.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }
}

/// Waits until the replica has everything the primary sent (WAIT 1), so that the cost of
/// feeding it lands in the phase that caused it.
pub fn settle(con: &mut Connection) -> Result<(), String> {
    let n: i64 = redis::cmd("WAIT").arg(1).arg(30_000).query(con).map_err(|e| format!("WAIT: {e}"))?;
    if n < 1 {
        return Err("the replica did not acknowledge within 30 s".into());
    }
    Ok(())
}
