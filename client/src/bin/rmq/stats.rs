//! `rmq stats`: the counters of one queue, a table of every queue, or a live view
//! (`--watch`) that rides out Redis restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rmq_client::{Client, Error, Partitioned, Stats};

use crate::output::{clock, now_ms};
use crate::Ctx;

/// Show the counters of one queue, or a table of every queue (--watch: live)
///
/// For a partitioned queue: a row per partition and a total row. In a cluster, "every
/// queue" is every queue of every master.
///
/// The table fits 80 columns: messages per state, then (with --watch) pushes and acks per
/// second since the previous redraw, and the age of the oldest ready message. A queue seen
/// once stays in the table while it is idle. When Redis does not answer, --watch says
/// "down since …" and goes on trying.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    rmq stats jobs\n  \
    rmq stats --watch --interval 2000\n  \
    rmq --json stats")]
pub struct StatsArgs {
    /// One queue (default: every queue of `rmq queues`).
    queue: Option<String>,
    /// Redraw every --interval until interrupted (ctrl-c).
    #[arg(long)]
    watch: bool,
    /// Time between redraws, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    interval: u64,
    /// With --watch: stop after this many redraws.
    #[arg(long, hide = true)]
    iterations: Option<u64>,
}

const FIELDS: [&str; 13] = [
    "ready",
    "delayed",
    "inflight",
    "failed",
    "errors",
    "pushed",
    "acked",
    "retried",
    "dead",
    "errored",
    "dups",
    "offset",
    "oldest_ready_ms",
];

/// The widest a queue name is shown in the table (longer ones are cut with `…`).
const NAME_WIDTH: usize = 20;

/// A sample of every queue's counters.
struct Sample {
    at: Instant,
    rows: BTreeMap<String, Stats>,
}

async fn sample(c: &Client, queue: Option<&str>, part: Option<&Partitioned>, seen: &mut BTreeSet<String>) -> Result<Sample, Error> {
    match (queue, part) {
        (_, Some(p)) => seen.extend(p.partitions.iter().cloned()),
        (Some(q), None) => {
            seen.insert(q.to_string());
        }
        (None, None) => seen.extend(c.queues().await?),
    }
    let mut rows = BTreeMap::new();
    for q in seen.iter() {
        rows.insert(q.clone(), c.stats(q).await?);
    }
    if let Some(p) = part {
        let each: Vec<(String, Stats)> = rows.iter().map(|(q, s)| (q.clone(), s.clone())).collect();
        rows.insert(total_row(p), rmq_client::partition::total(&each));
    }
    Ok(Sample { at: Instant::now(), rows })
}

/// The name of a partitioned queue's total row (it sorts before its partitions).
fn total_row(p: &Partitioned) -> String {
    format!("{} (total)", p.name)
}

pub async fn stats(ctx: &Ctx, a: &StatsArgs) -> Result<ExitCode, Error> {
    let c = ctx.client()?;
    let part = match &a.queue {
        Some(q) => c.partitioned_or_plain(q).await?,
        None => None,
    };
    let mut seen = BTreeSet::new();
    if !a.watch {
        let s = sample(&c, a.queue.as_deref(), part.as_ref(), &mut seen).await?;
        match (&a.queue, &part, ctx.out.json) {
            (Some(_), Some(p), true) => {
                let per: BTreeMap<&String, &Stats> = s.rows.iter().filter(|(q, _)| p.partitions.contains(q)).collect();
                ctx.out.json(&serde_json::json!({ "total": s.rows[&total_row(p)], "partitions": per }));
            }
            (Some(_), Some(_), false) => print!("{}", table(&s, None)),
            (Some(q), None, true) => ctx.out.json(&s.rows[q]),
            (None, _, true) => ctx.out.json(&s.rows),
            (Some(q), None, false) => {
                println!("queue {q}");
                for k in FIELDS {
                    println!("  {:<16}{}", k, s.rows[q].get(k).copied().unwrap_or(0));
                }
            }
            (None, _, false) => {
                print!("{}", table(&s, None));
                if s.rows.is_empty() {
                    println!("(no queue holds messages)");
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let clear = std::io::stdout().is_terminal() && !ctx.out.json;
    let mut prev: Option<Sample> = None;
    let mut last: Option<Sample> = None;
    let mut down_since: Option<u64> = None;
    let mut n = 0u64;
    loop {
        let mut screen = String::new();
        match sample(&c, a.queue.as_deref(), part.as_ref(), &mut seen).await {
            Ok(s) => {
                down_since = None;
                if ctx.out.json {
                    ctx.out.json(&s.rows);
                } else {
                    screen += &format!("{}  {}  {} queue(s)\n", clock(now_ms()), cut(&ctx.url_shown(), 40), s.rows.len());
                    screen += &table(&s, prev.as_ref());
                    if s.rows.is_empty() {
                        screen += "(no queue holds messages)\n";
                    }
                }
                prev = Some(s);
            }
            Err(e) => {
                let since = *down_since.get_or_insert_with(now_ms);
                if ctx.out.json {
                    ctx.out.json(&serde_json::json!({
                        "error": e.to_string(), "kind": e.kind(), "down_since_ms": since
                    }));
                } else {
                    let what =
                        if e.is_unavailable() { format!("DOWN since {}", clock(since)) } else { format!("ERROR since {}", clock(since)) };
                    screen += &format!("{}  {}  {what}\n{}\n", clock(now_ms()), cut(&ctx.url_shown(), 40), wrap(&e.to_string(), 80));
                }
                // A rate across an outage would be meaningless: start again after it. The
                // last table seen stays in view, so the numbers before the outage do.
                if let Some(p) = prev.take() {
                    last = Some(p);
                }
                if let (Some(l), false) = (&last, ctx.out.json) {
                    screen += &table(l, None);
                }
            }
        }
        if !ctx.out.json {
            if let Some(dir) = &ctx.spool {
                if rmq_client::spool::has_pending(dir).unwrap_or(false) {
                    screen +=
                        &format!("WARNING: spool {} holds messages not in Redis (rmq spool drain)\n", cut(&dir.display().to_string(), 30));
                }
            }
            if clear {
                // Clear the screen and draw again at the top.
                print!("\x1b[2J\x1b[H");
            }
            print!("{screen}");
            let _ = std::io::stdout().flush();
        }
        n += 1;
        if a.iterations.is_some_and(|i| n >= i) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(a.interval)) => {}
            _ = rmq_client::shutdown_signal() => return Ok(ExitCode::SUCCESS),
        }
    }
}

impl Ctx {
    fn url_shown(&self) -> String {
        rmq_client::client::redact_url(&self.url)
    }
}

/// `s` cut to `n` characters, with `…` when cut.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// `s` in lines of at most `width` characters (at most 4 lines).
fn wrap(s: &str, width: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(width).take(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("\n")
}

/// A number in at most 6 characters: 999999, 1.23M, 45.6G.
fn compact(v: f64) -> String {
    let scaled = |x: f64, unit: &str| {
        if x < 9.995 {
            format!("{x:.2}{unit}")
        } else if x < 99.95 {
            format!("{x:.1}{unit}")
        } else {
            format!("{x:.0}{unit}")
        }
    };
    let a = v.abs();
    if a < 999_999.5 {
        if v.fract() == 0.0 || a >= 1000.0 {
            format!("{}", v.round() as i64)
        } else {
            format!("{v:.1}")
        }
    } else if a < 999.5e6 {
        scaled(v / 1e6, "M")
    } else if a < 999.5e9 {
        scaled(v / 1e9, "G")
    } else {
        scaled(v / 1e12, "T")
    }
}

/// Milliseconds as a short age: 840ms, 12s, 5m, 3h, 2d.
fn age(ms: i64) -> String {
    match ms {
        i64::MIN..=0 => "-".into(),
        1..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{}s", ms / 1000),
        60_000..=3_599_999 => format!("{}m", ms / 60_000),
        3_600_000..=86_399_999 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

/// The table: with `prev`, pushes and acks per second since it; without, the totals.
fn table(s: &Sample, prev: Option<&Sample>) -> String {
    let (a, b) = if prev.is_some() { ("push/s", "ack/s") } else { ("pushed", "acked") };
    let head = ["queue", "ready", "delayed", "inflight", "failed", "errors", a, b, "oldest"];
    let mut cells: Vec<Vec<String>> = vec![head.iter().map(|h| h.to_string()).collect()];
    for (q, st) in &s.rows {
        let g = |k: &str| st.get(k).copied().unwrap_or(0);
        let rate = |k: &str| -> String {
            let p = match prev.and_then(|p| p.rows.get(q).map(|r| (p.at, r))) {
                Some(x) => x,
                None => return "-".into(),
            };
            let secs = s.at.saturating_duration_since(p.0).as_secs_f64();
            if secs <= 0.0 || secs > 3600.0 * 24.0 {
                return "-".into();
            }
            let d = (g(k) - p.1.get(k).copied().unwrap_or(0)).max(0) as f64;
            compact((d / secs * 10.0).round() / 10.0)
        };
        let (x, y) =
            if prev.is_some() { (rate("pushed"), rate("acked")) } else { (compact(g("pushed") as f64), compact(g("acked") as f64)) };
        cells.push(vec![
            cut(q, NAME_WIDTH),
            compact(g("ready") as f64),
            compact(g("delayed") as f64),
            compact(g("inflight") as f64),
            compact(g("failed") as f64),
            compact(g("errors") as f64),
            x,
            y,
            age(g("oldest_ready_ms")),
        ]);
    }
    let widths: Vec<usize> = (0..head.len()).map(|i| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &cells {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { format!("{:<w$}", c, w = widths[i]) } else { format!("{:>w$}", c, w = widths[i].max(6)) })
            .collect();
        out += line.join(" ").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_six_characters() {
        for v in [0.0, 5.0, 12.5, 999_999.0, 1_234_567.0, 999_000_000.0, 5.5e12] {
            assert!(compact(v).chars().count() <= 6, "{v}: {}", compact(v));
        }
        assert_eq!(compact(1_234_567.0), "1.23M");
        assert_eq!(compact(12.5), "12.5");
        assert_eq!(age(840), "840ms");
        assert_eq!(age(0), "-");
    }
}
