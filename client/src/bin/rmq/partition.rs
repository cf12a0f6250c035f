//! `rmq partition create|show|list`: partitioned queues, one logical queue over several rmq
//! queues on different slots (and so, in a cluster, on different masters).

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;
use rmq_client::cluster::queue_slot;
use rmq_client::{Client, Error, Partitioned};

use crate::Ctx;

/// Partitioned queues: one logical queue spread over several rmq queues
///
/// A message pushed with --key goes to the partition of its key (CRC-32 of the key mod the
/// count), so one key's messages stay in order in one partition; fetch, work, stats, peek
/// and recover on the logical name cover every partition.
#[derive(Subcommand)]
pub enum PartitionCmd {
    /// Create NAME over COUNT partitions (queues NAME#0 … on distinct slots, spread over the
    /// masters), and record it in the registry key rmq:partitions.
    ///
    /// Prints each partition with its slot and, in a cluster, its master, then how many
    /// partitions each master serves. Creating it again with the same COUNT and order changes
    /// nothing; a COUNT is fixed for good.
    #[command(after_help = "Examples:\n  \
        rmq partition create orders 12 --ordered\n  \
        rmq push orders '{\"sku\":42}' --key customer-7")]
    Create {
        /// The logical queue's name (at most 180 bytes of A-Z a-z 0-9 _ . : - # /).
        name: String,
        /// How many partitions (1–1024).
        count: usize,
        /// Every partition is an ordered queue: one key's messages are handled strictly one
        /// after another, different keys in parallel.
        #[arg(long)]
        ordered: bool,
    },
    /// Show NAME's partitions, their slots and masters, and their counters.
    #[command(after_help = "Example:\n  rmq partition show orders")]
    Show {
        /// The logical queue's name.
        name: String,
    },
    /// List every partitioned queue.
    #[command(after_help = "Example:\n  rmq partition list")]
    List,
}

/// `q`'s master in a cluster (`host:port`), or "" on a single server.
async fn master_of(c: &Client, q: &str) -> Result<String, Error> {
    Ok(match c.topology().await? {
        Some(t) => t.owner(queue_slot(q)).unwrap_or("?").to_string(),
        None => String::new(),
    })
}

/// The spread of `p`'s partitions over the masters: master → how many.
async fn spread(c: &Client, p: &Partitioned) -> Result<BTreeMap<String, usize>, Error> {
    let mut by: BTreeMap<String, usize> = c.masters().await?.into_iter().map(|m| (m, 0)).collect();
    if c.is_cluster().await? {
        for q in &p.partitions {
            *by.entry(master_of(c, q).await?).or_default() += 1;
        }
    } else if let Some(n) = by.values_mut().next() {
        *n = p.count();
    }
    Ok(by)
}

pub async fn partition(ctx: &Ctx, cmd: &PartitionCmd) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    match cmd {
        PartitionCmd::Create { name, count, ordered } => {
            let (p, created) = c.partition_create(name, *count, *ordered).await?;
            show(ctx, &c, &p, false).await?;
            if !created && !ctx.out.json {
                eprintln!("rmq: partitioned queue '{name}' already existed with these settings: nothing changed");
            }
            let by = spread(&c, &p).await?;
            let idle: Vec<&String> = by.iter().filter(|(_, n)| **n == 0).map(|(m, _)| m).collect();
            if !idle.is_empty() && p.count() >= by.len() {
                eprintln!("rmq: WARNING: no partition on {idle:?}: the slots were moved since the cluster was set up?");
            }
        }
        PartitionCmd::Show { name } => match c.partitioned(name).await? {
            Some(p) => show(ctx, &c, &p, true).await?,
            None => {
                return Ok(ctx.out.fail(
                    &format!("'{name}' is not a partitioned queue (see `rmq partition list`)"),
                    "not_found",
                    crate::output::exit::NOTHING,
                ))
            }
        },
        PartitionCmd::List => {
            let all = c.partition_list().await?;
            if ctx.out.json {
                ctx.out.json(&all);
            } else {
                for p in &all {
                    println!("{}  {} partitions{}", p.name, p.count(), if p.ordered { ", ordered" } else { "" });
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per partition (index, name, slot, master; with `counters`, ready and in-flight
/// messages), then the spread over the masters.
async fn show(ctx: &Ctx, c: &Client, p: &Partitioned, counters: bool) -> Result<(), Error> {
    let by = spread(c, p).await?;
    let mut rows = Vec::new();
    for (i, q) in p.partitions.iter().enumerate() {
        let st = if counters { Some(c.stats(q).await?) } else { None };
        rows.push((i, q.clone(), queue_slot(q), master_of(c, q).await?, st));
    }
    if ctx.out.json {
        let parts: Vec<serde_json::Value> = rows
            .iter()
            .map(|(i, q, slot, m, st)| serde_json::json!({ "index": i, "queue": q, "slot": slot, "master": m, "stats": st }))
            .collect();
        ctx.out.json(&serde_json::json!({
            "name": p.name, "count": p.count(), "ordered": p.ordered, "created": p.created,
            "partitions": parts, "masters": by,
        }));
        return Ok(());
    }
    println!("{}: {} partitions{}", p.name, p.count(), if p.ordered { ", ordered" } else { "" });
    let w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    for (i, q, slot, m, st) in &rows {
        let mut line = format!("  {i:>4}  {q:<w$}  slot {slot:>5}");
        if !m.is_empty() {
            line += &format!("  {m}");
        }
        if let Some(st) = st {
            let g = |k: &str| st.get(k).copied().unwrap_or(0);
            line += &format!("  ready {} inflight {} pushed {} acked {}", g("ready"), g("inflight"), g("pushed"), g("acked"));
        }
        println!("{}", line.trim_end());
    }
    if c.is_cluster().await? {
        let spread: Vec<String> = by.iter().map(|(m, n)| format!("{n} on {m}")).collect();
        println!("masters: {}", spread.join(", "));
    }
    Ok(())
}
