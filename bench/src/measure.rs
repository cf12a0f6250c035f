//! What the harness reads from Redis, and the statistics it reports.

use redis::Connection;

use crate::approaches::R;

/// `INFO <section>` as name → value pairs.
pub fn info(con: &mut Connection, section: &str) -> R<Vec<(String, String)>> {
    let text: String = redis::cmd("INFO").arg(section).query(con).map_err(|e| e.to_string())?;
    Ok(text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect())
}

pub fn info_field(con: &mut Connection, section: &str, name: &str) -> R<String> {
    info(con, section)?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v).ok_or_else(|| format!("INFO {section} has no {name}"))
}

/// The server's CPU time so far, user + system, in microseconds (`INFO cpu`).
pub fn cpu_us(con: &mut Connection) -> R<f64> {
    let f = info(con, "cpu")?;
    let get = |n: &str| -> R<f64> {
        f.iter().find(|(k, _)| k == n).and_then(|(_, v)| v.parse::<f64>().ok()).ok_or_else(|| format!("INFO cpu has no {n}"))
    };
    Ok((get("used_cpu_sys")? + get("used_cpu_user")?) * 1e6)
}

/// `used_memory` in bytes.
pub fn used_memory(con: &mut Connection) -> R<f64> {
    info_field(con, "memory", "used_memory")?.parse::<f64>().map_err(|e| e.to_string())
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// (max − min) / median, in percent: how far the runs disagree.
pub fn spread_pct(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let max = v.iter().cloned().fold(f64::MIN, f64::max);
    let min = v.iter().cloned().fold(f64::MAX, f64::min);
    (max - min) / median(v) * 100.0
}

pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A small deterministic PRNG (xorshift64*), for bodies and shuffles.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A body of `len` printable bytes.
pub fn body(len: usize, seed: u64) -> Vec<u8> {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut r = Rng::new(seed);
    (0..len).map(|_| ALPHA[r.below(ALPHA.len())]).collect()
}

/// A plain-text table for stdout, and the same as markdown.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Columns aligned right (numbers).
    pub right: Vec<bool>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            right: header.iter().enumerate().map(|(i, _)| i > 0).collect(),
        }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    pub fn text(&self) -> String {
        let n = self.header.len();
        let mut w = vec![0usize; n];
        for r in std::iter::once(&self.header).chain(self.rows.iter()) {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let fmt = |r: &Vec<String>| -> String {
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    let c = r.get(i).cloned().unwrap_or_default();
                    let pad = w[i] - c.chars().count();
                    if self.right[i] {
                        format!("{}{c}", " ".repeat(pad))
                    } else {
                        format!("{c}{}", " ".repeat(pad))
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        };
        let mut out = fmt(&self.header);
        out.push('\n');
        out.push_str(&w.iter().map(|x| "-".repeat(*x)).collect::<Vec<_>>().join("  "));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&fmt(r));
            out.push('\n');
        }
        out
    }
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.header.join(" | "));
        out.push_str(&format!("|{}\n", self.right.iter().map(|r| if *r { "---:|" } else { "---|" }).collect::<String>()));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }
}

/// Numbers as a reader wants them: 3 significant digits.
pub fn f3(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Thousands separated with a thin space-free comma: 123,456.
pub fn int(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", x.round());
    let (sign, digits) = if let Some(d) = s.strip_prefix('-') { ("-", d) } else { ("", s.as_str()) };
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}
