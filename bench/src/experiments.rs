//! The measurements. Every one starts from FLUSHALL on the same server, brackets the part
//! it measures with `INFO cpu` / `INFO memory`, and checks what it leaves behind.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Connection;

use crate::approaches::{array, field, Approach, Shas, R};
use crate::measure::{body, cpu_us, info_field, percentile, used_memory, Rng};
use crate::server::Server;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One connection, one message per round trip.
    Single,
    /// One connection, this many messages per round trip.
    Pipeline(usize),
    /// This many connections (one thread each), one message per round trip.
    Conns(usize),
}

impl Mode {
    pub fn depth(self) -> usize {
        match self {
            Mode::Pipeline(d) => d,
            _ => 1,
        }
    }
    pub fn conns(self) -> usize {
        match self {
            Mode::Conns(c) => c,
            _ => 1,
        }
    }
    pub fn label(self) -> String {
        match self {
            Mode::Single => "1 conn".into(),
            Mode::Pipeline(d) => format!("pipeline {d}"),
            Mode::Conns(c) => format!("{c} conns"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub body: usize,
    pub mode: Mode,
    /// Messages per run.
    pub n: usize,
}

impl Workload {
    pub fn label(&self) -> String {
        format!("{}, {}", body_label(self.body), self.mode.label())
    }
}

pub fn body_label(len: usize) -> String {
    if len >= 1024 && len.is_multiple_of(1024) {
        format!("{} KiB", len / 1024)
    } else {
        format!("{len} B")
    }
}

pub fn flushall(con: &mut Connection) -> R<()> {
    redis::cmd("FLUSHALL").arg("SYNC").query::<()>(con).map_err(|e| e.to_string())
}

/// Runs `f(thread, connection)` on every connection at once (inline when there is one).
fn parallel<T: Send>(conns: &mut [Connection], f: impl Fn(usize, &mut Connection) -> R<T> + Sync) -> R<Vec<T>> {
    if conns.len() == 1 {
        return Ok(vec![f(0, &mut conns[0])?]);
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = conns.iter_mut().enumerate().map(|(t, c)| s.spawn(move || f(t, c))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a client thread panicked".into()))).collect()
    })
}

/// One cycle run: the three phases, each bracketed by `INFO cpu` (after WAIT for the replica
/// when `replicated`).
#[derive(Clone, Debug)]
pub struct CycleSample {
    /// Redis CPU µs per message: push, fetch, ack.
    pub cpu: [f64; 3],
    /// Wall seconds: push, fetch, ack.
    pub wall: [f64; 3],
    pub leftover: String,
}

impl CycleSample {
    pub fn cpu_cycle(&self) -> f64 {
        self.cpu.iter().sum()
    }
    pub fn rate(&self, n: usize, phase: usize) -> f64 {
        n as f64 / self.wall[phase]
    }
    pub fn rate_cycle(&self, n: usize) -> f64 {
        n as f64 / self.wall.iter().sum::<f64>()
    }
}

pub fn cycle(ctl: &mut Connection, conns: &mut [Connection], a: Approach, shas: &Shas, w: &Workload, replicated: bool) -> R<CycleSample> {
    flushall(ctl)?;
    a.prepare(ctl)?;
    let k = conns.len();
    let per = w.n / k;
    let n = per * k;
    let depth = w.mode.depth();
    let payload = body(w.body, 42);
    let mut cpu = [0.0; 3];
    let mut wall = [0.0; 3];
    let cpu_now = |ctl: &mut Connection| -> R<f64> {
        if replicated {
            crate::durable::settle(ctl)?;
        }
        cpu_us(ctl)
    };

    let c0 = cpu_now(ctl)?;
    let t0 = Instant::now();
    parallel(conns, |t, con| a.push(con, shas, (t * per) as u64..((t + 1) * per) as u64, &payload, depth))?;
    wall[0] = t0.elapsed().as_secs_f64();
    let c1 = cpu_now(ctl)?;
    let t1 = Instant::now();
    let handles = parallel(conns, |t, con| a.fetch(con, shas, per, depth, t, w.body))?;
    wall[1] = t1.elapsed().as_secs_f64();
    let c2 = cpu_now(ctl)?;
    let t2 = Instant::now();
    let acked = parallel(conns, |t, con| a.ack(con, shas, &handles[t], depth))?;
    wall[2] = t2.elapsed().as_secs_f64();
    let c3 = cpu_now(ctl)?;
    cpu[0] = (c1 - c0) / n as f64;
    cpu[1] = (c2 - c1) / n as f64;
    cpu[2] = (c3 - c2) / n as f64;
    let acked: u64 = acked.iter().sum();
    if acked != n as u64 {
        return Err(format!("{}: {acked} of {n} messages acked", a.short()));
    }
    let leftover = a.check_after_cycle(ctl, n as u64)?;
    Ok(CycleSample { cpu, wall, leftover })
}

/// Bytes of `used_memory` per message: queued (after PUSH), in flight (after FETCH), after ACK.
#[derive(Clone, Debug)]
pub struct MemSample {
    pub queued: f64,
    pub inflight: f64,
    pub after_ack: f64,
}

fn settled_memory(ctl: &mut Connection) -> R<f64> {
    // Let Redis close the worker connection (and free its buffers) before reading.
    std::thread::sleep(Duration::from_millis(50));
    used_memory(ctl)
}

pub fn memory(server: &Server, ctl: &mut Connection, a: Approach, shas: &Shas, body_len: usize, n: usize) -> R<MemSample> {
    flushall(ctl)?;
    a.prepare(ctl)?;
    let payload = body(body_len, 7);
    let base = settled_memory(ctl)?;
    {
        let mut c = server.conn();
        a.push(&mut c, shas, 0..n as u64, &payload, 64)?;
    }
    let queued = settled_memory(ctl)?;
    let handles = {
        let mut c = server.conn();
        a.fetch(&mut c, shas, n, 64, 0, body_len)?
    };
    let inflight = settled_memory(ctl)?;
    {
        let mut c = server.conn();
        let acked = a.ack(&mut c, shas, &handles, 64)?;
        if acked != n as u64 {
            return Err(format!("{}: memory run acked {acked} of {n}", a.short()));
        }
    }
    let after = settled_memory(ctl)?;
    a.check_after_cycle(ctl, n as u64)?;
    let per = |m: f64| (m - base) / n as f64;
    Ok(MemSample { queued: per(queued), inflight: per(inflight), after_ack: per(after) })
}

/// Pushes `n` 16-byte messages to a module queue, 64 per round trip.
fn push_module(con: &mut Connection, q: &str, n: usize) -> R<()> {
    let payload = body(16, 3);
    let mut left = n;
    while left > 0 {
        let b = left.min(64);
        let mut p = redis::pipe();
        for _ in 0..b {
            p.cmd("RMQ.PUSH").arg(q).arg(&payload).ignore();
        }
        p.query::<()>(con).map_err(|e| format!("RMQ.PUSH: {e}"))?;
        left -= b;
    }
    Ok(())
}

/// Fetches `n` messages in COUNT 1000 batches; each batch's LOCK is `lock(now)`; returns receipts.
fn fetch_module(con: &mut Connection, q: &str, n: usize, mut lock_ms: impl FnMut() -> R<u64>) -> R<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let c = (n - out.len()).min(1000);
        let v: redis::Value = redis::cmd("RMQ.FETCH")
            .arg(q)
            .arg("COUNT")
            .arg(c)
            .arg("LOCK")
            .arg(lock_ms()?)
            .query(con)
            .map_err(|e| format!("RMQ.FETCH: {e}"))?;
        let msgs = array(&v).ok_or_else(|| format!("RMQ.FETCH gave {v:?} with {} of {n} fetched", out.len()))?;
        if msgs.len() != c {
            return Err(format!("RMQ.FETCH COUNT {c} gave {} messages", msgs.len()));
        }
        for m in msgs {
            out.push(field(m, "receipt").ok_or("a fetched message without receipt")?);
        }
    }
    Ok(out)
}

fn stats(con: &mut Connection, q: &str, name: &str) -> R<i64> {
    let v: redis::Value = redis::cmd("RMQ.STATS").arg(q).query(con).map_err(|e| e.to_string())?;
    field(&v, name)
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("RMQ.STATS has no {name}: {v:?}"))
}

/// ACK cost with `inflight` messages in flight, for the module or (as a reference for what
/// Redis's own structures do) Streams XACK. Each round fetches `chunk` more messages, so
/// `inflight + chunk` are in flight, then acks `chunk` of them (64 per pipeline), bringing it
/// back to `inflight`; only the ACKs are bracketed by `INFO cpu`. The same setup is measured
/// twice: first acking receipts picked at random from everything in flight (the hard case:
/// every ACK touches cold memory), then acking the oldest first (fetch order, as FIFO workers
/// with similar handling times do).
#[derive(Clone, Debug)]
pub struct AckSample {
    /// Redis µs CPU per ACK: random order, fetch order.
    pub cpu: [f64; 2],
    /// Wall µs per ACK: random order, fetch order.
    pub wall: [f64; 2],
}

pub fn ack_inflight(
    ctl: &mut Connection,
    con: &mut Connection,
    a: Approach,
    inflight: usize,
    acks: usize,
    chunk: usize,
    seed: u64,
) -> R<AckSample> {
    const Q: &str = "ackbench";
    const STREAM: &str = "ackstream";
    const LOCK: u64 = 3_600_000;
    let streams = match a {
        Approach::Rmq => false,
        Approach::Streams => true,
        other => return Err(format!("ack-inflight measures rmq and streams, not {}", other.short())),
    };
    flushall(ctl)?;
    let rounds = (acks / chunk).max(1);
    let total = inflight + 2 * rounds * chunk;
    let fetch = |con: &mut Connection, n: usize| -> R<Vec<Vec<u8>>> {
        if streams {
            fetch_stream(con, STREAM, n)
        } else {
            fetch_module(con, Q, n, || Ok(LOCK))
        }
    };
    if streams {
        redis::cmd("XGROUP").arg("CREATE").arg(STREAM).arg("g").arg("$").arg("MKSTREAM").query::<()>(ctl).map_err(|e| e.to_string())?;
        push_stream(con, STREAM, total)?;
    } else {
        push_module(con, Q, total)?;
    }
    let mut held: std::collections::VecDeque<Vec<u8>> = fetch(con, inflight)?.into();
    let mut rng = Rng::new(seed);
    let mut cpu = [0.0; 2];
    let mut wall = [0.0; 2];
    for (order, (cpu, wall)) in cpu.iter_mut().zip(wall.iter_mut()).enumerate() {
        for _ in 0..rounds {
            held.extend(fetch(con, chunk)?);
            let pick: Vec<Vec<u8>> = if order == 0 {
                (0..chunk)
                    .map(|_| {
                        let i = rng.below(held.len());
                        held.swap_remove_back(i).unwrap()
                    })
                    .collect()
            } else {
                held.drain(..chunk).collect()
            };
            let c0 = cpu_us(ctl)?;
            let t0 = Instant::now();
            let mut acked = 0;
            for batch in pick.chunks(64) {
                let mut p = redis::pipe();
                for r in batch {
                    if streams {
                        p.cmd("XACK").arg(STREAM).arg("g").arg(r);
                    } else {
                        p.cmd("RMQ.ACK").arg(Q).arg(r);
                    }
                }
                let v: Vec<i64> = p.query(con).map_err(|e| format!("ack: {e}"))?;
                acked += v.iter().sum::<i64>();
            }
            *wall += t0.elapsed().as_secs_f64();
            *cpu += cpu_us(ctl)? - c0;
            if acked != chunk as i64 {
                return Err(format!("ack-inflight {}: {acked} of {chunk} acked", a.short()));
            }
        }
    }
    let still: i64 = if streams {
        let v: redis::Value = redis::cmd("XPENDING").arg(STREAM).arg("g").query(ctl).map_err(|e| e.to_string())?;
        array(&v).and_then(|a| a.first()).and_then(|x| if let redis::Value::Int(i) = x { Some(*i) } else { None }).unwrap_or(-1)
    } else {
        stats(ctl, Q, "inflight")?
    };
    if still != inflight as i64 {
        return Err(format!("ack-inflight {}: {still} in flight after the rounds, expected {inflight}", a.short()));
    }
    let n = (rounds * chunk) as f64;
    flushall(ctl)?;
    Ok(AckSample { cpu: [cpu[0] / n, cpu[1] / n], wall: [wall[0] * 1e6 / n, wall[1] * 1e6 / n] })
}

fn push_stream(con: &mut Connection, stream: &str, n: usize) -> R<()> {
    let payload = body(16, 3);
    let mut left = n;
    while left > 0 {
        let b = left.min(64);
        let mut p = redis::pipe();
        for _ in 0..b {
            p.cmd("XADD").arg(stream).arg("*").arg("b").arg(&payload).ignore();
        }
        p.query::<()>(con).map_err(|e| format!("XADD: {e}"))?;
        left -= b;
    }
    Ok(())
}

fn fetch_stream(con: &mut Connection, stream: &str, n: usize) -> R<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let c = (n - out.len()).min(1000);
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(c)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query(con)
            .map_err(|e| format!("XREADGROUP: {e}"))?;
        let entries = array(&v)
            .and_then(|s| s.first())
            .and_then(array)
            .and_then(|s| s.get(1))
            .and_then(array)
            .ok_or_else(|| format!("XREADGROUP gave {v:?}"))?;
        if entries.len() != c {
            return Err(format!("XREADGROUP COUNT {c} gave {} entries", entries.len()));
        }
        for e in entries {
            out.push(array(e).and_then(|e| e.first()).and_then(crate::approaches::bulk).ok_or("an entry without id")?);
        }
    }
    Ok(out)
}

/// The guard reclaiming `n` expired messages at once.
#[derive(Clone, Debug)]
pub struct GuardSample {
    pub n: usize,
    pub setup_s: f64,
    /// From `CONFIG SET rmq.guard-interval-ms 10` until every message is back in ready.
    pub total_s: f64,
    pub cpu_us_per_msg: f64,
    /// PING round trips on another connection while the guard works: max, p99.9, p99, count.
    pub ping_max_us: u64,
    pub ping_p999_us: u64,
    pub ping_p99_us: u64,
    pub pings: usize,
    /// The same PING loop for the second before the guard was switched on.
    pub idle_ping_max_us: u64,
    pub idle_ping_p99_us: u64,
    /// The longest guard tick INFO rmq reported (sampled while polling).
    pub guard_tick_max_us: u64,
    pub guard_runs: u64,
}

pub fn guard(server: &Server, ctl: &mut Connection, n: usize, timeout: Duration) -> R<GuardSample> {
    flushall(ctl)?;
    let cfg = |con: &mut Connection, v: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("rmq.guard-interval-ms")
            .arg(v)
            .query::<()>(con)
            .map_err(|e| format!("CONFIG SET rmq.guard-interval-ms {v}: {e}"))
    };
    // The guard stays off (one day) during the setup.
    cfg(ctl, "86400000")?;
    let result = guard_inner(server, ctl, n, timeout, &cfg);
    cfg(ctl, "3000")?;
    flushall(ctl)?;
    result
}

fn guard_inner(
    server: &Server,
    ctl: &mut Connection,
    n: usize,
    timeout: Duration,
    cfg: &dyn Fn(&mut Connection, &str) -> R<()>,
) -> R<GuardSample> {
    const Q: &str = "guardbench";
    let setup = Instant::now();
    let mut con = server.conn();
    push_module(&mut con, Q, n)?;
    let push_s = setup.elapsed().as_secs_f64();
    // Every lock runs out at the same moment, well after the fetching is done: each batch's
    // LOCK is the time left until then. A FETCH costs Redis about two and a half PUSHes, and
    // the fetching client waits for each batch: six times the push time, and 5 s more.
    let budget_ms = (push_s * 6000.0) as u64 + 5000;
    let expire_at = now_ms() + budget_ms;
    fetch_module(&mut con, Q, n, || {
        let now = now_ms();
        if now + 200 >= expire_at {
            return Err(format!("guard setup: fetching {n} messages took longer than the {budget_ms} ms lock budget"));
        }
        Ok(expire_at - now)
    })?;
    let inflight = stats(ctl, Q, "inflight")?;
    let ready = stats(ctl, Q, "ready")?;
    if inflight != n as i64 || ready != 0 {
        return Err(format!("guard setup: inflight {inflight}, ready {ready}, expected {n} and 0"));
    }
    let setup_s = setup.elapsed().as_secs_f64();
    let wait = (expire_at + 100).saturating_sub(now_ms());
    std::thread::sleep(Duration::from_millis(wait));

    // 0 = idle, 1 = guard working, 2 = stop.
    let phase = AtomicU8::new(0);
    let samples: Mutex<[Vec<u64>; 2]> = Mutex::new([Vec::new(), Vec::new()]);
    let mut ping_con = server.conn();
    let runs0: u64 = info_field(ctl, "rmq", "rmq_guard_runs")?.parse().unwrap_or(0);
    let longest0: u64 = info_field(ctl, "rmq", "rmq_guard_longest_us")?.parse().unwrap_or(0);
    let outcome = std::thread::scope(|s| -> R<(f64, f64, u64)> {
        let pinger = s.spawn(|| -> R<()> {
            let mut local: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
            let hard_stop = Instant::now() + timeout + Duration::from_secs(5);
            loop {
                let p = phase.load(Ordering::Acquire);
                if p >= 2 || Instant::now() > hard_stop {
                    break;
                }
                let t = Instant::now();
                redis::cmd("PING").query::<String>(&mut ping_con).map_err(|e| e.to_string())?;
                local[p as usize].push(t.elapsed().as_micros() as u64);
            }
            *samples.lock().unwrap() = local;
            Ok(())
        });
        // Whatever happens below, the PING thread is told to stop before it is joined.
        let measured = (|| -> R<(Option<f64>, f64, u64)> {
            std::thread::sleep(Duration::from_secs(1));
            let c0 = cpu_us(ctl)?;
            phase.store(1, Ordering::Release);
            let t0 = Instant::now();
            cfg(ctl, "10")?;
            let mut tick_max = 0u64;
            let done = loop {
                let len: i64 = redis::cmd("LLEN").arg(format!("msg:{{{Q}}}")).query(ctl).map_err(|e| e.to_string())?;
                if let Ok(v) = info_field(ctl, "rmq", "rmq_guard_last_us") {
                    tick_max = tick_max.max(v.parse().unwrap_or(0));
                }
                if len >= n as i64 {
                    break Some(t0.elapsed().as_secs_f64());
                }
                if t0.elapsed() > timeout {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            Ok((done, cpu_us(ctl)? - c0, tick_max))
        })();
        phase.store(2, Ordering::Release);
        let pinged = pinger.join().map_err(|_| "the PING thread panicked".to_string()).and_then(|r| r);
        let (done, cpu, tick_max) = measured?;
        pinged?;
        match done {
            Some(total) => Ok((total, cpu, tick_max)),
            None => Err(format!("guard: not every message was back in ready after {timeout:?}")),
        }
    });
    let (total_s, cpu, tick_max) = outcome?;
    let runs1: u64 = info_field(ctl, "rmq", "rmq_guard_runs")?.parse().unwrap_or(0);
    // The longest tick since the module loaded: when it grew in this run, it is this run's
    // (exact); otherwise this run's stayed below an earlier one, and the sampled value stands.
    let longest1: u64 = info_field(ctl, "rmq", "rmq_guard_longest_us")?.parse().unwrap_or(0);
    let tick_max = if longest1 > longest0 { longest1 } else { tick_max };
    let [mut idle, mut busy] = samples.into_inner().unwrap();
    idle.sort_unstable();
    busy.sort_unstable();
    let ready = stats(ctl, Q, "ready")?;
    let inflight = stats(ctl, Q, "inflight")?;
    if ready != n as i64 || inflight != 0 {
        return Err(format!("guard: ready {ready}, inflight {inflight} after reclaim, expected {n} and 0"));
    }
    Ok(GuardSample {
        n,
        setup_s,
        total_s,
        cpu_us_per_msg: cpu / n as f64,
        ping_max_us: busy.last().copied().unwrap_or(0),
        ping_p999_us: percentile(&busy, 0.999),
        ping_p99_us: percentile(&busy, 0.99),
        pings: busy.len(),
        idle_ping_max_us: idle.last().copied().unwrap_or(0),
        idle_ping_p99_us: percentile(&idle, 0.99),
        guard_tick_max_us: tick_max,
        guard_runs: runs1.saturating_sub(runs0),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
