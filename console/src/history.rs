//! What the console remembers between readings: the latest snapshot, push and ack counts per
//! sample for the charts and rates, and when each queue was last seen acking (stall flag).
//!
//! Memory is bounded: `keep` samples of two small counts per queue (about 1 KB per queue for
//! the default 15 minutes at 5 s), and queues that disappear are forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::snapshot::{QueueStats, Snapshot};

/// Push and ack counts of one sample interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub pushed: u32,
    pub acked: u32,
}

/// Rates over a window, per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub push: f64,
    pub ack: f64,
}

/// A chart's data: (unix ms at the end of the interval, push/s, ack/s).
pub type Series = Vec<(u64, f64, f64)>;

#[derive(Debug)]
struct Track {
    pushed: u64,
    acked: u64,
    /// Aligned with the end of [`History::times`].
    deltas: VecDeque<Delta>,
    /// When acked was last seen to grow (or when the queue was first seen).
    last_ack_ms: u64,
}

/// Stall detection and chart settings.
#[derive(Clone, Copy, Debug)]
pub struct HistoryConfig {
    /// Samples kept.
    pub keep: usize,
    /// A queue with ready messages, not paused, and no ack for this long is stalled.
    pub stall_after: Duration,
    /// Rates are averaged over this window.
    pub rate_window: Duration,
}

#[derive(Debug)]
pub struct History {
    cfg: HistoryConfig,
    latest: Option<Arc<Snapshot>>,
    /// The last reading's error, with its time, while Redis does not answer.
    pub last_error: Option<(u64, String)>,
    /// Unix ms of each sample since the first (whose counts are the baseline: no delta).
    times: VecDeque<u64>,
    totals: VecDeque<Delta>,
    tracks: HashMap<String, Track>,
    first_ms: Option<u64>,
}

/// Growth of a counter, 0 when it went back (a queue deleted and made again, a restart
/// without persistence).
fn grew(old: u64, new: u64) -> u32 {
    new.saturating_sub(old).min(u32::MAX as u64) as u32
}

impl History {
    pub fn new(cfg: HistoryConfig) -> History {
        History {
            cfg,
            latest: None,
            last_error: None,
            times: VecDeque::new(),
            totals: VecDeque::new(),
            tracks: HashMap::new(),
            first_ms: None,
        }
    }

    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.clone()
    }

    /// Adds a reading.
    pub fn record(&mut self, snap: Snapshot) {
        let now = snap.taken_ms;
        let baseline = self.first_ms.is_none();
        self.first_ms.get_or_insert(now);
        if !baseline {
            self.times.push_back(now);
        }
        let mut total = Delta::default();
        let mut seen = HashMap::with_capacity(snap.queues.len());
        for q in &snap.queues {
            let mut t = self.tracks.remove(&q.name).unwrap_or(Track {
                pushed: q.pushed,
                acked: q.acked,
                deltas: VecDeque::new(),
                last_ack_ms: now,
            });
            if !baseline {
                let d = Delta { pushed: grew(t.pushed, q.pushed), acked: grew(t.acked, q.acked) };
                if d.acked > 0 {
                    t.last_ack_ms = now;
                }
                total.pushed = total.pushed.saturating_add(d.pushed);
                total.acked = total.acked.saturating_add(d.acked);
                t.deltas.push_back(d);
                while t.deltas.len() > self.cfg.keep {
                    t.deltas.pop_front();
                }
            }
            t.pushed = q.pushed;
            t.acked = q.acked;
            seen.insert(q.name.clone(), t);
        }
        // Queues no longer listed are forgotten.
        self.tracks = seen;
        if !baseline {
            self.totals.push_back(total);
            while self.totals.len() > self.cfg.keep {
                self.totals.pop_front();
                self.times.pop_front();
            }
        }
        self.last_error = None;
        self.latest = Some(Arc::new(snap));
    }

    pub fn record_error(&mut self, now_ms: u64, text: String) {
        self.last_error = Some((now_ms, text));
    }

    /// Unix ms of the sample before `times[i]` (the start of its interval).
    fn start_of(&self, i: usize) -> u64 {
        if i == 0 {
            self.first_ms.unwrap_or(0)
        } else {
            self.times[i - 1]
        }
    }

    fn series_of(&self, deltas: &VecDeque<Delta>) -> Series {
        let off = self.times.len() - deltas.len();
        deltas
            .iter()
            .enumerate()
            .map(|(j, d)| {
                let i = off + j;
                let secs = (self.times[i].saturating_sub(self.start_of(i)) as f64 / 1000.0).max(0.001);
                (self.times[i], d.pushed as f64 / secs, d.acked as f64 / secs)
            })
            .collect()
    }

    fn rates_of(&self, deltas: &VecDeque<Delta>) -> Rates {
        let Some(&last) = self.times.back() else {
            return Rates::default();
        };
        let off = self.times.len() - deltas.len();
        let from = last.saturating_sub(self.cfg.rate_window.as_millis() as u64);
        let (mut p, mut a, mut start) = (0u64, 0u64, last);
        for (j, d) in deltas.iter().enumerate().rev() {
            let i = off + j;
            if self.times[i] <= from {
                break;
            }
            p += d.pushed as u64;
            a += d.acked as u64;
            start = self.start_of(i);
        }
        let secs = last.saturating_sub(start) as f64 / 1000.0;
        if secs <= 0.0 {
            return Rates::default();
        }
        Rates { push: p as f64 / secs, ack: a as f64 / secs }
    }

    /// Push and ack rates of all queues together, per interval.
    pub fn total_series(&self) -> Series {
        self.series_of(&self.totals)
    }

    pub fn queue_series(&self, q: &str) -> Series {
        self.tracks.get(q).map(|t| self.series_of(&t.deltas)).unwrap_or_default()
    }

    pub fn total_rates(&self) -> Rates {
        self.rates_of(&self.totals)
    }

    pub fn queue_rates(&self, q: &str) -> Rates {
        self.tracks.get(q).map(|t| self.rates_of(&t.deltas)).unwrap_or_default()
    }

    /// How long the queue has gone without an ack, when that makes it stalled: it has ready
    /// messages, is not paused, and no ack was seen for `stall_after` (the console must have
    /// watched it that long).
    pub fn stalled_for(&self, q: &QueueStats) -> Option<Duration> {
        if q.ready == 0 || q.paused == Some(true) {
            return None;
        }
        let now = self.latest.as_ref()?.taken_ms;
        let t = self.tracks.get(&q.name)?;
        let quiet = Duration::from_millis(now.saturating_sub(t.last_ack_ms));
        (quiet >= self.cfg.stall_after).then_some(quiet)
    }

    pub fn config(&self) -> HistoryConfig {
        self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at: u64, queues: &[(&str, u64, u64, u64)]) -> Snapshot {
        Snapshot {
            taken_ms: at,
            queues: queues
                .iter()
                .map(|&(n, ready, pushed, acked)| QueueStats { name: n.into(), ready, pushed, acked, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn cfg() -> HistoryConfig {
        HistoryConfig { keep: 3, stall_after: Duration::from_secs(10), rate_window: Duration::from_secs(60) }
    }

    #[test]
    fn rates_come_from_counter_growth_between_samples() {
        let mut h = History::new(cfg());
        h.record(snap(0, &[("a", 0, 100, 50)]));
        assert_eq!(h.total_rates(), Rates::default());
        h.record(snap(5_000, &[("a", 0, 150, 60)]));
        h.record(snap(10_000, &[("a", 0, 200, 110)]));
        let r = h.queue_rates("a");
        assert_eq!((r.push, r.ack), (10.0, 6.0));
        let s = h.queue_series("a");
        assert_eq!(s, vec![(5_000, 10.0, 2.0), (10_000, 10.0, 10.0)]);
        assert_eq!(h.total_series(), s);
    }

    #[test]
    fn history_keeps_a_bounded_number_of_samples_and_forgets_gone_queues() {
        let mut h = History::new(cfg());
        for i in 0..10u64 {
            h.record(snap(i * 1000, &[("a", 0, i * 10, 0), ("b", 0, 0, 0)]));
        }
        assert_eq!(h.total_series().len(), 3);
        assert_eq!(h.queue_series("a").len(), 3);
        h.record(snap(11_000, &[("a", 0, 100, 0)]));
        assert!(h.queue_series("b").is_empty());
    }

    #[test]
    fn a_counter_that_goes_back_counts_zero() {
        let mut h = History::new(cfg());
        h.record(snap(0, &[("a", 0, 100, 100)]));
        h.record(snap(1000, &[("a", 0, 3, 1)]));
        assert_eq!(h.queue_series("a"), vec![(1000, 0.0, 0.0)]);
    }

    #[test]
    fn waiting_messages_without_acks_flag_a_stall_after_the_window() {
        let mut h = History::new(cfg());
        h.record(snap(0, &[("a", 5, 5, 0), ("idle", 0, 0, 0)]));
        let q = h.latest().unwrap().queues[0].clone();
        assert_eq!(h.stalled_for(&q), None, "not watched long enough");
        h.record(snap(12_000, &[("a", 5, 5, 0), ("idle", 0, 0, 0)]));
        let latest = h.latest().unwrap();
        assert_eq!(h.stalled_for(&latest.queues[0]), Some(Duration::from_secs(12)));
        assert_eq!(h.stalled_for(&latest.queues[1]), None, "nothing waiting");
        let mut paused = latest.queues[0].clone();
        paused.paused = Some(true);
        assert_eq!(h.stalled_for(&paused), None, "paused on purpose");
        h.record(snap(13_000, &[("a", 5, 6, 1)]));
        let latest = h.latest().unwrap();
        assert_eq!(h.stalled_for(&latest.queues[0]), None, "it acked again");
    }
}
