//! rmq-bench: Redis CPU per message, throughput and memory of rmq (module and Lua edition)
//! against Redis Streams and list-based queues, measured in one run on one redis-server.
//!
//! `make bench` (full) and `make bench-quick` (a subset, under two minutes) run it; see
//! docs/BENCHMARKS.md for the method. `rmq-bench --help` lists the options.

mod approaches;
mod archive;
mod chart;
mod durable;
mod experiments;
mod measure;
mod report;
mod server;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use approaches::Approach;
use experiments::{AckSample, CycleSample, GuardSample, MemSample, Mode, Workload};

pub struct Config {
    pub quick: bool,
    pub runs: usize,
    pub cpu: Option<usize>,
    pub module: PathBuf,
    pub lua: PathBuf,
    pub out: PathBuf,
    pub report: Option<PathBuf>,
    pub approaches: Vec<Approach>,
    pub workloads: Vec<Workload>,
    /// The cycle workloads run again with AOF everysec and a replica attached.
    pub durable_workloads: Vec<Workload>,
    pub mem_n: usize,
    pub mem_bodies: Vec<usize>,
    pub ack_small: usize,
    pub ack_big: usize,
    pub ack_count: usize,
    pub guard_n: usize,
    pub guard_runs: usize,
    pub skip: Vec<String>,
    /// Directives given to every redis-server the run starts (`--name value …`), from
    /// `--redis-config "name value"`: to measure a tuning against the defaults.
    pub redis_config: Vec<String>,
}

pub struct Results {
    pub cycle: CycleResults,
    /// The same cycles on a primary with AOF (everysec) and a replica: index into
    /// `Config::durable_workloads`.
    pub durable: CycleResults,
    pub memory: HashMap<(usize, Approach), Vec<MemSample>>,
    /// (approach, messages in flight) → runs.
    pub ack: HashMap<(Approach, usize), Vec<AckSample>>,
    pub guard: Vec<GuardSample>,
    pub idle_cpu_us_per_s: f64,
    pub server_cpus: String,
    pub client_cpus: String,
    pub redis_version: String,
    pub elapsed_s: f64,
    /// The commit under test, and when the run started.
    pub source: String,
    pub started_at: String,
    /// Runs that failed (a check, an error reply, a timeout): reported, and the exit code is 1.
    pub failures: Vec<String>,
}

/// Records a failed run; gives up when the server itself is gone.
fn failed(srv: &mut server::Server, failures: &mut Vec<String>, what: String) -> Result<(), String> {
    log(&format!("FAILED {what}"));
    failures.push(what);
    if !srv.alive() {
        return Err(format!("redis-server is gone; its log:\n{}", srv.log_tail()));
    }
    Ok(())
}

const USAGE: &str = "rmq-bench [--quick] [--runs N] [--cpu N | --no-pin] [--module PATH] [--lua PATH]
          [--out DIR] [--report docs/BENCHMARKS.md] [--only a,b,…] [--skip cycle,memory,ack,guard,durable]
          [--n N] [--mem-n N] [--ack-big N] [--guard-n N] [--guard-runs N]
          [--redis-config \"name value\"]…  (a redis-server directive for every server started)
approaches: rmq rmq-lua streams streams-xdel lists lists-evalsha";

fn parse_args() -> Result<Config, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut c = if quick {
        Config {
            quick,
            runs: 3,
            cpu: Some(1),
            module: root.join("target/release/librmq.so"),
            lua: root.join("lua/rmq.lua"),
            out: root.join("target/bench-quick"),
            report: None,
            approaches: approaches::ALL.to_vec(),
            workloads: vec![
                Workload { body: 16, mode: Mode::Single, n: 5_000 },
                Workload { body: 16, mode: Mode::Pipeline(64), n: 20_000 },
                Workload { body: 16, mode: Mode::Conns(8), n: 4_000 },
            ],
            durable_workloads: vec![Workload { body: 16, mode: Mode::Pipeline(64), n: 20_000 }],
            mem_n: 20_000,
            mem_bodies: vec![16],
            ack_small: 1_000,
            ack_big: 100_000,
            ack_count: 5_000,
            guard_n: 100_000,
            guard_runs: 1,
            skip: Vec::new(),
            redis_config: Vec::new(),
        }
    } else {
        let mut workloads = Vec::new();
        let mut durable_workloads = Vec::new();
        for body in [16, 1024] {
            durable_workloads.push(Workload { body, mode: Mode::Single, n: 20_000 });
            durable_workloads.push(Workload { body, mode: Mode::Pipeline(64), n: 100_000 });
            workloads.push(Workload { body, mode: Mode::Single, n: 40_000 });
            workloads.push(Workload { body, mode: Mode::Pipeline(64), n: 200_000 });
            workloads.push(Workload { body, mode: Mode::Conns(8), n: 40_000 });
        }
        Config {
            quick,
            runs: 3,
            cpu: Some(1),
            module: root.join("target/release/librmq.so"),
            lua: root.join("lua/rmq.lua"),
            out: root.join("docs/bench"),
            report: Some(root.join("docs/BENCHMARKS.md")),
            approaches: approaches::ALL.to_vec(),
            workloads,
            durable_workloads,
            mem_n: 100_000,
            mem_bodies: vec![16, 1024],
            ack_small: 1_000,
            ack_big: 1_000_000,
            ack_count: 20_000,
            guard_n: 1_000_000,
            guard_runs: 3,
            skip: Vec::new(),
            redis_config: Vec::new(),
        }
    };
    let mut i = 0;
    let val = |i: &mut usize, name: &str| -> Result<String, String> {
        *i += 1;
        args.get(*i).cloned().ok_or_else(|| format!("{name} needs a value"))
    };
    let num = |s: String, name: &str| -> Result<usize, String> { s.parse::<usize>().map_err(|_| format!("{name}: not a number: {s}")) };
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--runs" => c.runs = num(val(&mut i, "--runs")?, "--runs")?.max(1),
            "--cpu" => c.cpu = Some(num(val(&mut i, "--cpu")?, "--cpu")?),
            "--no-pin" => c.cpu = None,
            "--module" => c.module = PathBuf::from(val(&mut i, "--module")?),
            "--lua" => c.lua = PathBuf::from(val(&mut i, "--lua")?),
            "--out" => c.out = PathBuf::from(val(&mut i, "--out")?),
            "--report" => c.report = Some(PathBuf::from(val(&mut i, "--report")?)),
            "--no-report" => c.report = None,
            "--only" => {
                let v = val(&mut i, "--only")?;
                c.approaches = v
                    .split(',')
                    .map(|s| Approach::from_short(s.trim()).ok_or(format!("unknown approach {s}")))
                    .collect::<Result<_, _>>()?;
            }
            "--skip" => c.skip = val(&mut i, "--skip")?.split(',').map(|s| s.trim().to_string()).collect(),
            "--n" => {
                let n = num(val(&mut i, "--n")?, "--n")?;
                for w in c.workloads.iter_mut().chain(c.durable_workloads.iter_mut()) {
                    w.n = if matches!(w.mode, Mode::Pipeline(_)) { n * 4 } else { n };
                }
            }
            "--mem-n" => c.mem_n = num(val(&mut i, "--mem-n")?, "--mem-n")?.max(1000),
            "--ack-big" => c.ack_big = num(val(&mut i, "--ack-big")?, "--ack-big")?.max(1000),
            "--guard-n" => c.guard_n = num(val(&mut i, "--guard-n")?, "--guard-n")?.max(1000),
            "--guard-runs" => c.guard_runs = num(val(&mut i, "--guard-runs")?, "--guard-runs")?,
            "--redis-config" => {
                let v = val(&mut i, "--redis-config")?;
                let (name, value) = v.trim().split_once(' ').ok_or(format!("--redis-config takes \"name value\", not {v:?}"))?;
                c.redis_config.push(format!("--{name}"));
                c.redis_config.extend(value.split_whitespace().map(str::to_string));
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
        i += 1;
    }
    for w in c.workloads.iter_mut().chain(c.durable_workloads.iter_mut()) {
        let k = w.mode.conns();
        w.n = (w.n / k).max(1) * k;
    }
    Ok(c)
}

fn log(msg: &str) {
    eprintln!("[rmq-bench] {msg}");
}

fn main() {
    // `rmq-bench archive …`: the SQL archive's section (bench/src/archive.rs).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("archive") {
        if let Err(e) = archive::main(&args[1..]) {
            eprintln!("rmq-bench archive: {e}");
            std::process::exit(1);
        }
        return;
    }
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match run(&cfg) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("rmq-bench: {e}");
            std::process::exit(1);
        }
    }
}

pub type CycleResults = HashMap<(usize, Approach), Vec<CycleSample>>;

/// Every approach through every workload, `cfg.runs` rounds, on `srv`; `replicated`: the
/// server has a replica to wait for at each phase's end.
#[allow(clippy::too_many_arguments)]
fn cycles(
    cfg: &Config,
    srv: &mut server::Server,
    ctl: &mut redis::Connection,
    shas: &approaches::Shas,
    workloads: &[Workload],
    replicated: bool,
    tag: &str,
    failures: &mut Vec<String>,
) -> Result<CycleResults, String> {
    let mut out = CycleResults::new();
    for (wi, w) in workloads.iter().enumerate() {
        let mut conns: Vec<_> = (0..w.mode.conns()).map(|_| srv.conn()).collect();
        for r in 0..cfg.runs {
            // A B C … then B C … A: every approach runs once per round, in a rotating order.
            let k = cfg.approaches.len();
            for j in 0..k {
                let a = cfg.approaches[(j + r) % k];
                let s = match experiments::cycle(ctl, &mut conns, a, shas, w, replicated) {
                    Ok(s) => s,
                    Err(e) => {
                        failed(srv, failures, format!("{tag} {} {} run {}: {e}", w.label(), a.name(), r + 1))?;
                        conns = (0..w.mode.conns()).map(|_| srv.conn()).collect();
                        *ctl = srv.conn();
                        continue;
                    }
                };
                log(&format!(
                    "{tag:<7}{:<22} {:<26} run {}: push {} fetch {} ack {} = {} µs CPU/msg, {} msg/s",
                    w.label(),
                    a.name(),
                    r + 1,
                    measure::f3(s.cpu[0]),
                    measure::f3(s.cpu[1]),
                    measure::f3(s.cpu[2]),
                    measure::f3(s.cpu_cycle()),
                    measure::int(s.rate_cycle(w.n))
                ));
                out.entry((wi, a)).or_default().push(s);
            }
        }
    }
    Ok(out)
}

fn run(cfg: &Config) -> Result<(), String> {
    let started = Instant::now();
    let source = report::source_state();
    let started_at = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !cfg.module.exists() {
        return Err(format!("{} is missing: run `cargo build --release -p rmq` (make bench does)", cfg.module.display()));
    }
    let lua = std::fs::read_to_string(&cfg.lua).map_err(|e| format!("{}: {e}", cfg.lua.display()))?;
    if let Some(cpu) = cfg.cpu {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if cpu >= n {
            return Err(format!("--cpu {cpu}: this machine has CPUs 0..{}", n - 1));
        }
        server::pin_self(cpu)?;
    }
    let mut srv = server::Server::start_with(&cfg.module, cfg.cpu, &cfg.redis_config)?;
    let mut ctl = srv.conn();
    let shas = approaches::load_scripts(&mut ctl, &lua)?;
    let server_cpus = srv.cpus_allowed();
    let client_cpus = server::cpus_allowed("/proc/self/status");
    let redis_version = measure::info_field(&mut ctl, "server", "redis_version")?;
    log(&format!(
        "redis-server {redis_version} pid {} on 127.0.0.1:{}, server CPUs {server_cpus}, client CPUs {client_cpus}",
        srv.pid(),
        srv.port
    ));

    // The noise floor: what the idle server burns per second (cron, the guard timer).
    let c0 = measure::cpu_us(&mut ctl)?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_cpu_us_per_s = measure::cpu_us(&mut ctl)? - c0;

    let mut res = Results {
        cycle: HashMap::new(),
        durable: HashMap::new(),
        memory: HashMap::new(),
        ack: HashMap::new(),
        guard: Vec::new(),
        idle_cpu_us_per_s,
        server_cpus,
        client_cpus,
        redis_version,
        elapsed_s: 0.0,
        failures: Vec::new(),
        source,
        started_at,
    };
    let skip = |s: &str| cfg.skip.iter().any(|x| x == s);

    if !skip("cycle") {
        res.cycle = cycles(cfg, &mut srv, &mut ctl, &shas, &cfg.workloads, false, "cycle", &mut res.failures)?;
    }
    if !skip("memory") {
        for &b in &cfg.mem_bodies {
            for r in 0..cfg.runs {
                let k = cfg.approaches.len();
                for j in 0..k {
                    let a = cfg.approaches[(j + r) % k];
                    let s = match experiments::memory(&srv, &mut ctl, a, &shas, b, cfg.mem_n) {
                        Ok(s) => s,
                        Err(e) => {
                            let what = format!("memory {} {} run {}: {e}", experiments::body_label(b), a.name(), r + 1);
                            failed(&mut srv, &mut res.failures, what)?;
                            ctl = srv.conn();
                            continue;
                        }
                    };
                    log(&format!(
                        "memory {:<8} {:<26} run {}: queued {} B/msg, in flight {} B/msg, after ack {} B/msg",
                        experiments::body_label(b),
                        a.name(),
                        r + 1,
                        measure::f3(s.queued),
                        measure::f3(s.inflight),
                        measure::f3(s.after_ack)
                    ));
                    res.memory.entry((b, a)).or_default().push(s);
                }
            }
        }
    }
    if !skip("ack") {
        let mut con = srv.conn();
        let aps: Vec<Approach> = [Approach::Rmq, Approach::Streams].into_iter().filter(|a| cfg.approaches.contains(a)).collect();
        for r in 0..cfg.runs {
            // Alternate: small big small … / big small big …, the approaches rotating too.
            let mut order: Vec<(Approach, usize)> = Vec::new();
            for j in 0..aps.len() {
                let a = aps[(j + r) % aps.len()];
                if r % 2 == 0 {
                    order.extend([(a, cfg.ack_small), (a, cfg.ack_big)]);
                } else {
                    order.extend([(a, cfg.ack_big), (a, cfg.ack_small)]);
                }
            }
            for (a, inflight) in order {
                let t = Instant::now();
                let s = match experiments::ack_inflight(&mut ctl, &mut con, a, inflight, cfg.ack_count, 1000, 11 + r as u64) {
                    Ok(s) => s,
                    Err(e) => {
                        let what = format!("ack {} {} in flight run {}: {e}", a.name(), inflight, r + 1);
                        failed(&mut srv, &mut res.failures, what)?;
                        ctl = srv.conn();
                        con = srv.conn();
                        continue;
                    }
                };
                log(&format!(
                    "ack    {:<14} {} in flight, run {}: {} µs CPU/ack random order, {} µs fetch order ({:.1} s)",
                    a.name(),
                    measure::int(inflight as f64),
                    r + 1,
                    measure::f3(s.cpu[0]),
                    measure::f3(s.cpu[1]),
                    t.elapsed().as_secs_f64()
                ));
                res.ack.entry((a, inflight)).or_default().push(s);
            }
        }
    }
    if !skip("guard") && cfg.approaches.contains(&Approach::Rmq) {
        for r in 0..cfg.guard_runs {
            let s = match experiments::guard(&srv, &mut ctl, cfg.guard_n, Duration::from_secs(600)) {
                Ok(s) => s,
                Err(e) => {
                    failed(&mut srv, &mut res.failures, format!("guard run {}: {e}", r + 1))?;
                    ctl = srv.conn();
                    let _ = redis::cmd("CONFIG").arg("SET").arg("rmq.guard-interval-ms").arg("3000").query::<()>(&mut ctl);
                    continue;
                }
            };
            log(&format!(
                "guard  {} expired, run {}: all back in {:.2} s; PING max {} µs (p99.9 {} µs, idle max {} µs); longest tick {} µs; setup {:.1} s",
                measure::int(s.n as f64),
                r + 1,
                s.total_s,
                s.ping_max_us,
                s.ping_p999_us,
                s.idle_ping_max_us,
                s.guard_tick_max_us,
                s.setup_s
            ));
            res.guard.push(s);
        }
    }
    if !skip("durable") && !cfg.durable_workloads.is_empty() {
        // Its own pair of servers; the main one is idle meanwhile.
        log("durable: starting a primary with appendonly yes, appendfsync everysec, and a replica");
        match durable::Durable::start(&cfg.module, cfg.cpu, &cfg.redis_config) {
            Ok(mut d) => {
                let mut dctl = d.primary.conn();
                let dshas = approaches::load_scripts(&mut dctl, &lua)?;
                res.durable = cycles(cfg, &mut d.primary, &mut dctl, &dshas, &cfg.durable_workloads, true, "durable", &mut res.failures)?;
            }
            Err(e) => failed(&mut srv, &mut res.failures, format!("durable setup: {e}"))?,
        }
    }
    res.elapsed_s = started.elapsed().as_secs_f64();
    drop(ctl);
    drop(srv);

    let rep = report::build(cfg, &res);
    println!("{}", rep.text);
    std::fs::create_dir_all(&cfg.out).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    let write = |name: &str, data: &str| -> Result<(), String> {
        let p = cfg.out.join(name);
        std::fs::write(&p, data).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("results.md", &rep.markdown)?;
    write("samples.csv", &rep.csv)?;
    if !skip("cycle") {
        chart::cpu_by_approach(&cfg.out.join("cpu_per_message.png"), cfg, &res)?;
        // One message per round trip, and pipelined (where the commands' own cost shows).
        chart::phases(&cfg.out.join("cpu_per_phase.png"), cfg, &res, 0)?;
        if let Some(wi) = cfg.workloads.iter().position(|w| matches!(w.mode, Mode::Pipeline(_))) {
            chart::phases(&cfg.out.join("cpu_per_phase_pipeline.png"), cfg, &res, wi)?;
        }
    }
    log(&format!("wrote {}/results.md, samples.csv and the charts", cfg.out.display()));
    if let Some(p) = &cfg.report {
        report::splice(p, &rep.summary)?;
        log(&format!("updated the generated part of {}", p.display()));
    }
    log(&format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    if !res.failures.is_empty() {
        return Err(format!("{} runs failed (listed in the report):\n{}", res.failures.len(), res.failures.join("\n")));
    }
    Ok(())
}
