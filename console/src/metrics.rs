//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`].
//!
//! Names follow the Prometheus conventions: base units (seconds), `_total` only on counters,
//! one metric family per quantity with labels for the queue and the state. The values are the
//! server's own counters (RMQ.STATS, INFO rmq), so they survive a console restart and a rate()
//! over them is exact. Written by hand: the format is a few lines per family, and the values
//! are read fresh at each scrape, which a registry of long-lived metric objects does not fit.

use std::fmt::Write;

use crate::archive::Health;
use crate::snapshot::{QueueStats, Snapshot};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Per-queue counters: (metric, help, value).
type CounterOf = fn(&QueueStats) -> Option<u64>;
const QUEUE_COUNTERS: [(&str, &str, CounterOf); 7] = [
    ("rmq_queue_pushed_total", "Messages pushed to the queue (duplicates and refused pushes excluded).", |q| Some(q.pushed)),
    ("rmq_queue_acked_total", "Messages acknowledged (done).", |q| Some(q.acked)),
    ("rmq_queue_retried_total", "NACK RETRYs that sent a message back to ready or delayed.", |q| Some(q.retried)),
    ("rmq_queue_dead_total", "Messages moved to failed (NACK FAIL, max attempts).", |q| Some(q.dead)),
    ("rmq_queue_errored_total", "Messages moved to errors (NACK ERROR).", |q| Some(q.errored)),
    ("rmq_queue_duplicates_total", "Pushes dropped as duplicates of an id seen within the dedup window.", |q| Some(q.dups)),
    ("rmq_queue_removed_total", "Messages deleted by DEL and PURGE.", |q| q.removed),
];

/// The guard's counters from INFO rmq: (metric, INFO field, help).
const GUARD_COUNTERS: [(&str, &str, &str); 3] = [
    ("rmq_guard_runs_total", "guard_runs", "Ticks of the guard (the timer inside Redis)."),
    ("rmq_guard_reclaimed_total", "guard_reclaimed", "In-flight messages whose lock ran out, reclaimed by the guard."),
    ("rmq_guard_promoted_total", "guard_promoted", "Delayed messages made ready by the guard."),
];

/// The whole exposition. `scrape_seconds` is how long reading Redis took; `up` is false when
/// Redis did not answer (then only the exporter's own metrics are given).
pub fn render(snap: Option<&Snapshot>, scrape_seconds: f64) -> String {
    let mut out = String::with_capacity(256 + snap.map_or(0, |s| s.queues.len() * 900));
    family(&mut out, "rmq_up", "gauge", "1 when the last read of Redis succeeded, else 0.");
    let _ = writeln!(out, "rmq_up {}", snap.is_some() as u8);
    family(&mut out, "rmq_scrape_duration_seconds", "gauge", "How long reading Redis took for this scrape.");
    let _ = writeln!(out, "rmq_scrape_duration_seconds {scrape_seconds:.6}");
    let Some(snap) = snap else {
        return out;
    };
    family(
        &mut out,
        "rmq_scrape_round_trips",
        "gauge",
        "Sequential round trips to Redis this scrape needed (fixed, whatever the number of queues and messages).",
    );
    let _ = writeln!(out, "rmq_scrape_round_trips {}", snap.round_trips);
    family(&mut out, "rmq_edition_info", "gauge", "Which rmq edition the server runs (module or lua); always 1.");
    let _ = writeln!(out, "rmq_edition_info{{edition=\"{}\"}} 1", snap.edition);
    family(&mut out, "rmq_queues", "gauge", "Queues on the node (RMQ.QUEUES).");
    let _ = writeln!(out, "rmq_queues {}", snap.queues.len());

    family(&mut out, "rmq_queue_messages", "gauge", "Messages in the queue, by state (ready, delayed, inflight, failed, errors).");
    for q in &snap.queues {
        let name = label(&q.name);
        for (state, n) in [("ready", q.ready), ("delayed", q.delayed), ("inflight", q.inflight), ("failed", q.failed), ("errors", q.errors)]
        {
            let _ = writeln!(out, "rmq_queue_messages{{queue=\"{name}\",state=\"{state}\"}} {n}");
        }
    }
    family(
        &mut out,
        "rmq_queue_oldest_ready_seconds",
        "gauge",
        "Age of the message at the front of the ready line (0 when none is ready).",
    );
    for q in &snap.queues {
        let _ = writeln!(out, "rmq_queue_oldest_ready_seconds{{queue=\"{}\"}} {}", label(&q.name), q.oldest_ready_ms as f64 / 1000.0);
    }
    if snap.queues.iter().any(|q| q.paused.is_some()) {
        family(&mut out, "rmq_queue_paused", "gauge", "1 while the queue is paused (FETCH hands out nothing), else 0.");
        for q in &snap.queues {
            if let Some(p) = q.paused {
                let _ = writeln!(out, "rmq_queue_paused{{queue=\"{}\"}} {}", label(&q.name), p as u8);
            }
        }
    }
    for (name, help, value) in QUEUE_COUNTERS {
        if !snap.queues.iter().any(|q| value(q).is_some()) {
            continue;
        }
        family(&mut out, name, "counter", help);
        for q in &snap.queues {
            if let Some(v) = value(q) {
                let _ = writeln!(out, "{name}{{queue=\"{}\"}} {v}", label(&q.name));
            }
        }
    }
    for (name, field, help) in GUARD_COUNTERS {
        if let Some(v) = snap.info_u64(field) {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
    if let Some(us) = snap.info_u64("guard_last_us") {
        family(&mut out, "rmq_guard_last_tick_duration_seconds", "gauge", "How long the guard's last tick took.");
        let _ = writeln!(out, "rmq_guard_last_tick_duration_seconds {}", us as f64 / 1e6);
    }
    if let Some(us) = snap.info_u64("guard_longest_us") {
        family(&mut out, "rmq_guard_longest_tick_duration_seconds", "gauge", "The guard's longest tick since the module loaded.");
        let _ = writeln!(out, "rmq_guard_longest_tick_duration_seconds {}", us as f64 / 1e6);
    }
    if let Some(ok) = snap.info_u64("eviction_policy_ok") {
        family(
            &mut out,
            "rmq_eviction_policy_ok",
            "gauge",
            "1 when maxmemory-policy is noeviction (Redis never drops a queue key), else 0.",
        );
        let _ = writeln!(out, "rmq_eviction_policy_ok {ok}");
    }
    out
}

/// The archive's families, appended to [`render`]'s (with `--archive-db`). `health` is None
/// when the archive database did not answer (then only `rmq_archive_up 0`).
///
/// The lag is what `rmq archive status` shows: log entries no archiver has saved yet (not read,
/// plus read and not saved); a queue whose lag Redis cannot tell has no lag sample. Gaps are
/// the times the log was trimmed past the archiver, and the entries lost with them.
pub fn render_archive(out: &mut String, health: Option<&Health>) {
    family(out, "rmq_archive_up", "gauge", "1 when the last read of the archive database succeeded, else 0.");
    let _ = writeln!(out, "rmq_archive_up {}", health.is_some() as u8);
    let Some(h) = health else {
        return;
    };
    family(
        out,
        "rmq_archive_lag_entries",
        "gauge",
        "Log entries of the queue not yet saved in the archive (unread by the archivers, plus read and not saved).",
    );
    for q in &h.queues {
        if let Some(lag) = q.lag {
            let _ = writeln!(out, "rmq_archive_lag_entries{{queue=\"{}\"}} {lag}", label(&q.queue));
        }
    }
    family(out, "rmq_archive_gaps_total", "counter", "Times the queue's log was trimmed before the archive saved its entries.");
    for q in &h.queues {
        let _ = writeln!(out, "rmq_archive_gaps_total{{queue=\"{}\"}} {}", label(&q.queue), q.gaps.max(0));
    }
    family(out, "rmq_archive_lost_entries_total", "counter", "Log entries lost to the archive in those gaps.");
    for q in &h.queues {
        let _ = writeln!(out, "rmq_archive_lost_entries_total{{queue=\"{}\"}} {}", label(&q.queue), q.gap_entries.max(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }

    #[test]
    fn a_failed_read_still_answers_with_up_zero() {
        let t = render(None, 0.5);
        assert!(t.contains("rmq_up 0\n"));
        assert!(!t.contains("rmq_queue_messages"));
        let mut t = String::new();
        render_archive(&mut t, None);
        assert!(t.contains("rmq_archive_up 0\n"));
        assert!(!t.contains("rmq_archive_lag_entries{"));
    }
}
