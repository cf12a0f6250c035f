//! The two editions against each other.
//!
//! - **Cross-edition data**: a queue written by one edition (every state, ids, tags, keys,
//!   headers, settings, the log) is copied key by key (DUMP/RESTORE) to a server of the other
//!   edition, and the same commands then run on the writer and on the copy: every reply and
//!   every key must match, and the copy must behave as the contract says (receipts issued by
//!   the writer ack, the dedup window holds, expired locks are reclaimed, …).
//! - **Seeded differential run**: a few thousand random commands (valid and invalid, several
//!   queues, ids with dedup, receipts fed back from FETCH replies, settings changes) on a
//!   module server and on a Lua server; after every step both replies and every key of the
//!   queue touched must match. `RMQ_DIFF_SEED=<n>` replays a seed, `RMQ_DIFF_STEPS=<n>`
//!   changes the length.
//!
//! ## Time
//!
//! The two servers' clocks differ, so times are compared by what they mean, never ignored.
//! Every command runs as `MULTI; TIME; <command>; TIME; EXEC`, which gives each step's `now`
//! on each server within a window (nearly always exact to the ms). After every step the keys of
//! the queue are read, and every time value is tied to an identity: `created` to the message's
//! offset, a lock deadline to its receipt (`bak:{q}`), a due time to the delayed delivery
//! (offset, deliveries), a dedup score to the producer id, a log entry to its stream id. A
//! value seen for the first time was set by this step: `created`, dedup scores and log times
//! must lie inside this step's window, and deadlines and due times must be the same distance
//! from `now` on both servers (or the same absolute value, for `AT`). Then the value is
//! replaced by a placeholder naming the step that set it (`created@12`, `lock@40`), and replies
//! and keys are compared with placeholders: a deadline a server forgot to move, or moved by a
//! different amount, shows up. Server-made ids (`<created>-<offset>`) become `id:<offset>`
//! once their created time is checked; `oldest_ready_ms` is checked against the front
//! message's created time and the step's window. Receipts (`<offset>-<deliveries>-<nonce>`)
//! differ by their random nonce: the test names a receipt `<offset>-<deliveries>` and spells
//! it per server (learned from its keys and replies), and compares them as `rcpt:<o>-<d>`.
//!
//! The run avoids outcomes that depend on racing the clock: the guard of the module is off
//! (`guard-interval-ms` one day), locks and delays are either 0, already past (`AT 1`), very
//! long, or 1 ms followed by a 3 ms sleep on both servers before the next step. Long locks
//! and delays are `10^7 + 1000·step` ms, unique per step, and every FETCH/TOUCH without LOCK
//! and every NACK without DELAY is preceded by a `CONFIG SET` of `lock-ms` / `backoff-ms` to
//! such a value: two entries of `bak:{q}` or `dly:{q}` then never share a score on one server
//! and not on the other, which would order them differently (equal scores sort by member).
//! For the same reason at most one 1-ms lock and one 1-ms delay per queue is pending at once.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Edition, Server, ServerOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

// ------------------------------------------------------------------------------------
// A small RESP3 client that keeps every byte (redis-rs refuses error replies that are not
// UTF-8, and the point here is to see exactly what each edition sends).
// ------------------------------------------------------------------------------------

/// A reply, or a canonical form of one (`T` is a masked time).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum C {
    Nil,
    Int(i64),
    Str(Vec<u8>),
    Status(String),
    Err(Vec<u8>),
    Arr(Vec<C>),
    Map(BTreeMap<C, C>),
    Bool(bool),
    Dbl(String),
    T(String),
}

impl fmt::Debug for C {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            C::Nil => write!(f, "nil"),
            C::Int(i) => write!(f, "{i}"),
            C::Str(b) => write!(f, "\"{}\"", b.escape_ascii()),
            C::Status(s) => write!(f, "+{s}"),
            C::Err(b) => write!(f, "-({})", b.escape_ascii()),
            C::Arr(a) => f.debug_list().entries(a).finish(),
            C::Map(m) => f.debug_map().entries(m).finish(),
            C::Bool(b) => write!(f, "#{b}"),
            C::Dbl(d) => write!(f, ",{d}"),
            C::T(t) => write!(f, "<{t}>"),
        }
    }
}

fn s(b: &[u8]) -> C {
    C::Str(b.to_vec())
}

impl C {
    fn get(&self, field: &str) -> Option<&C> {
        match self {
            C::Map(m) => m.get(&s(field.as_bytes())),
            _ => None,
        }
    }
    fn int(&self) -> i64 {
        match self {
            C::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }
    fn bytes(&self) -> Vec<u8> {
        match self {
            C::Str(b) => b.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
    fn arr(&self) -> Vec<C> {
        match self {
            C::Arr(a) => a.clone(),
            C::Nil => Vec::new(),
            other => panic!("not an array: {other:?}"),
        }
    }
    fn field(&self, name: &str) -> &C {
        self.get(name).unwrap_or_else(|| panic!("no field {name} in {self:?}"))
    }
}

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        w.set_nodelay(true).unwrap();
        let mut c = Conn { r: BufReader::new(w.try_clone().unwrap()), w };
        let hello = c.call(&[b"HELLO", b"3"]);
        assert!(matches!(hello, C::Map(_)), "HELLO 3: {hello:?}");
        c
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out).unwrap();
    }

    fn call(&mut self, args: &[&[u8]]) -> C {
        self.send(args);
        self.read()
    }

    fn line(&mut self) -> Vec<u8> {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l).unwrap();
        assert!(l.ends_with(b"\r\n"), "connection closed or bad line: {:?}", l.escape_ascii().to_string());
        l.truncate(l.len() - 2);
        l
    }

    fn read(&mut self) -> C {
        let l = self.line();
        let (t, rest) = (l[0], &l[1..]);
        let n = || std::str::from_utf8(rest).unwrap().parse::<i64>().unwrap();
        match t {
            b'+' => C::Status(String::from_utf8_lossy(rest).into_owned()),
            b'-' => C::Err(rest.to_vec()),
            b':' => C::Int(n()),
            b'_' => C::Nil,
            b'#' => C::Bool(rest == b"t"),
            b',' | b'(' => C::Dbl(String::from_utf8_lossy(rest).into_owned()),
            b'$' | b'=' | b'!' => {
                let len = n();
                if len < 0 {
                    return C::Nil;
                }
                let mut b = vec![0; len as usize + 2];
                self.r.read_exact(&mut b).unwrap();
                b.truncate(len as usize);
                match t {
                    b'!' => C::Err(b),
                    b'=' => C::Str(b[4..].to_vec()),
                    _ => C::Str(b),
                }
            }
            b'*' | b'~' | b'>' => {
                let len = n();
                if len < 0 {
                    return C::Nil;
                }
                C::Arr((0..len).map(|_| self.read()).collect())
            }
            b'%' | b'|' => {
                let len = n() as usize;
                let mut m = BTreeMap::new();
                for _ in 0..len {
                    let k = self.read();
                    let v = self.read();
                    assert!(m.insert(k.clone(), v).is_none(), "map field {k:?} given twice");
                }
                if t == b'|' {
                    return self.read(); // an attribute precedes the reply
                }
                C::Map(m)
            }
            other => panic!("unknown RESP type {:?}", other as char),
        }
    }
}

// ------------------------------------------------------------------------------------
// Records (docs/storage.md): a MessagePack array of 11+ fields.
// ------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Mp {
    U(u64),
    S(Vec<u8>),
    A(Vec<Mp>),
}

fn mp_decode(b: &[u8]) -> Option<Mp> {
    fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
        let s = b.get(*pos..*pos + n)?;
        *pos += n;
        Some(s)
    }
    fn uint(b: &[u8], pos: &mut usize, n: usize) -> Option<u64> {
        Some(take(b, pos, n)?.iter().fold(0u64, |acc, x| acc << 8 | *x as u64))
    }
    fn value(b: &[u8], pos: &mut usize) -> Option<Mp> {
        let c = uint(b, pos, 1)? as u8;
        let arr = |n: u64, pos: &mut usize| -> Option<Mp> { (0..n).map(|_| value(b, pos)).collect::<Option<Vec<_>>>().map(Mp::A) };
        let str_ = |n: u64, pos: &mut usize| -> Option<Mp> { take(b, pos, n as usize).map(|s| Mp::S(s.to_vec())) };
        match c {
            0x00..=0x7f => Some(Mp::U(c as u64)),
            0x90..=0x9f => arr((c - 0x90) as u64, pos),
            0xa0..=0xbf => str_((c - 0xa0) as u64, pos),
            0xcc => uint(b, pos, 1).map(Mp::U),
            0xcd => uint(b, pos, 2).map(Mp::U),
            0xce => uint(b, pos, 4).map(Mp::U),
            0xcf => uint(b, pos, 8).map(Mp::U),
            0xd9 | 0xc4 => {
                let n = uint(b, pos, 1)?;
                str_(n, pos)
            }
            0xda | 0xc5 => {
                let n = uint(b, pos, 2)?;
                str_(n, pos)
            }
            0xdb | 0xc6 => {
                let n = uint(b, pos, 4)?;
                str_(n, pos)
            }
            0xdc => {
                let n = uint(b, pos, 2)?;
                arr(n, pos)
            }
            0xdd => {
                let n = uint(b, pos, 4)?;
                arr(n, pos)
            }
            _ => None,
        }
    }
    let mut pos = 0;
    let v = value(b, &mut pos)?;
    (pos == b.len()).then_some(v)
}

/// What cmsgpack.pack writes: the smallest forms, str (never bin).
fn mp_encode(v: &Mp, out: &mut Vec<u8>) {
    match v {
        Mp::U(n) => match *n {
            0..=0x7f => out.push(*n as u8),
            0x80..=0xff => out.extend([0xcc, *n as u8]),
            0x100..=0xffff => {
                out.push(0xcd);
                out.extend((*n as u16).to_be_bytes())
            }
            0x1_0000..=0xffff_ffff => {
                out.push(0xce);
                out.extend((*n as u32).to_be_bytes())
            }
            _ => {
                out.push(0xcf);
                out.extend(n.to_be_bytes())
            }
        },
        Mp::S(b) => {
            match b.len() {
                n if n < 32 => out.push(0xa0 | n as u8),
                n if n <= 0xff => out.extend([0xd9, n as u8]),
                n if n <= 0xffff => {
                    out.push(0xda);
                    out.extend((n as u16).to_be_bytes())
                }
                n => {
                    out.push(0xdb);
                    out.extend((n as u32).to_be_bytes())
                }
            }
            out.extend_from_slice(b);
        }
        Mp::A(a) => {
            match a.len() {
                n if n < 16 => out.push(0x90 | n as u8),
                n if n <= 0xffff => {
                    out.push(0xdc);
                    out.extend((n as u16).to_be_bytes())
                }
                n => {
                    out.push(0xdd);
                    out.extend((n as u32).to_be_bytes())
                }
            }
            for x in a {
                mp_encode(x, out);
            }
        }
    }
}

/// A decoded record: (fields, offset, deliveries, created).
fn record(raw: &[u8]) -> Option<(Vec<Mp>, u64, u64, u64)> {
    let Mp::A(f) = mp_decode(raw)? else { return None };
    if f.len() < 11 {
        return None;
    }
    let u = |i: usize| match f[i] {
        Mp::U(n) => Some(n),
        _ => None,
    };
    let (created, offset, deliveries) = (u(5)?, u(7)?, u(8)?);
    Some((f, offset, deliveries, created))
}

// ------------------------------------------------------------------------------------
// One server of one edition, and what the test learned about its times.
// ------------------------------------------------------------------------------------

/// A command argument; a server-made id differs between servers (it holds the created ms),
/// so it is named by its queue and offset and spelled per server.
#[derive(Clone)]
enum Arg {
    B(Vec<u8>),
    Id(String, u64),
    /// The receipt of delivery `<offset>-<deliveries>` of a queue, as each server made it.
    Receipt(String, Vec<u8>),
}

#[derive(Clone)]
struct Op {
    name: &'static str,
    q: String,
    args: Vec<Arg>,
    /// A 1-ms lock or delay was asked for: sleep before the next step.
    sleep_after: bool,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.name.to_uppercase(), self.q)?;
        for a in &self.args {
            match a {
                Arg::B(b) => write!(f, " \"{}\"", b.escape_ascii())?,
                Arg::Id(q, o) => write!(f, " <server id of {q}#{o}>")?,
                Arg::Receipt(q, d) => write!(f, " <receipt {q}#{}>", d.escape_ascii())?,
            }
        }
        Ok(())
    }
}

/// An op; the receipts of ACK, NACK and TOUCH written `<offset>-<deliveries>` are resolved
/// on each server to the receipt it made for that delivery.
fn op(name: &'static str, q: &str, args: &[&[u8]]) -> Op {
    let args = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let receipt_position = name == "ack" || (i == 0 && (name == "nack" || name == "touch"));
            if receipt_position && parse_id(a).is_some() {
                Arg::Receipt(q.to_string(), a.to_vec())
            } else {
                Arg::B(a.to_vec())
            }
        })
        .collect();
    Op { name, q: q.to_string(), args, sleep_after: false }
}

/// What a lock deadline is tied to: the delivery of its receipt (the same on both servers).
fn lock_key(receipt: &[u8]) -> Vec<u8> {
    delivery_of(receipt).unwrap_or_else(|| receipt.to_vec())
}

/// `<offset>-<deliveries>` of a receipt `<offset>-<deliveries>-<nonce>`.
fn delivery_of(receipt: &[u8]) -> Option<Vec<u8>> {
    let t = std::str::from_utf8(receipt).ok()?;
    let (od, nonce) = t.rsplit_once('-')?;
    (nonce.len() == 12 && nonce.bytes().all(|b| b.is_ascii_hexdigit()) && parse_id(od.as_bytes()).is_some()).then(|| od.as_bytes().to_vec())
}

/// Identity of a time value: (kind, queue, what it belongs to).
type TimeKey = (char, String, Vec<u8>);

#[derive(Default)]
struct LogSeen {
    last: Option<(u64, u64)>,
    /// Stream id → (canonical entry, time, step that wrote it).
    canon: HashMap<Vec<u8>, (C, i64, usize)>,
}

/// A log stream: (entry id, fields).
type Stream = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

/// The keys of one queue as read after a step.
#[derive(Default, Clone)]
struct Raw {
    msg: Vec<Vec<u8>>,
    dly: Vec<(Vec<u8>, i64)>,
    bak: Vec<(Vec<u8>, i64)>,
    inf: BTreeMap<Vec<u8>, Vec<u8>>,
    fai: Vec<Vec<u8>>,
    err: Vec<Vec<u8>>,
    cfg: BTreeMap<Vec<u8>, Vec<u8>>,
    st: BTreeMap<Vec<u8>, Vec<u8>>,
    dup: Vec<(Vec<u8>, i64)>,
    log: Stream,
}

struct Side {
    name: &'static str,
    ed: Edition,
    _server: Server,
    c: Conn,
    /// The window of `now` of each step (index 0: the baseline, no window).
    win: Vec<Option<(i64, i64)>>,
    times: HashMap<TimeKey, (i64, usize)>,
    /// Time values first seen in the current step.
    fresh: Vec<(TimeKey, i64)>,
    logs: HashMap<String, LogSeen>,
    raw: HashMap<String, Raw>,
    /// (queue, `<offset>-<deliveries>`) → the receipt this server made.
    receipts: HashMap<(String, Vec<u8>), Vec<u8>>,
}

fn zset(v: &C) -> Vec<(Vec<u8>, i64)> {
    let score = |c: &C| -> i64 {
        let t = match c {
            C::Dbl(d) => d.clone(),
            C::Str(b) => String::from_utf8_lossy(b).into_owned(),
            C::Int(i) => return *i,
            other => panic!("not a score: {other:?}"),
        };
        let f: f64 = t.parse().unwrap();
        assert!(f == f.trunc(), "score {t} is not a whole number of ms");
        f as i64
    };
    let a = v.arr();
    if a.iter().all(|x| matches!(x, C::Arr(_))) {
        a.iter().map(|p| (p.arr()[0].bytes(), score(&p.arr()[1]))).collect()
    } else {
        a.chunks(2).map(|p| (p[0].bytes(), score(&p[1]))).collect()
    }
}

fn hash(v: &C) -> BTreeMap<Vec<u8>, Vec<u8>> {
    match v {
        C::Map(m) => m.iter().map(|(k, v)| (k.bytes(), v.bytes())).collect(),
        C::Arr(a) => a.chunks(2).map(|p| (p[0].bytes(), p[1].bytes())).collect(),
        other => panic!("not a hash: {other:?}"),
    }
}

fn parse_id(b: &[u8]) -> Option<(u64, u64)> {
    let t = std::str::from_utf8(b).ok()?;
    let (x, y) = t.split_once('-')?;
    let ok = |p: &str| !p.is_empty() && p.len() <= 19 && p.bytes().all(|c| c.is_ascii_digit());
    (ok(x) && ok(y)).then(|| (x.parse().unwrap(), y.parse().unwrap()))
}

fn valid_queue(q: &str) -> bool {
    !q.is_empty() && q.len() <= 200 && q.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.:-#/".contains(&c))
}

impl Side {
    fn new(name: &'static str, ed: Edition, server: Server) -> Side {
        let c = Conn::open(server.port);
        Side {
            name,
            ed,
            _server: server,
            c,
            win: Vec::new(),
            times: HashMap::new(),
            fresh: Vec::new(),
            logs: HashMap::new(),
            raw: HashMap::new(),
            receipts: HashMap::new(),
        }
    }

    fn learn_receipt(&mut self, q: &str, receipt: &[u8]) {
        if let Some(d) = delivery_of(receipt) {
            self.receipts.insert((q.to_string(), d), receipt.to_vec());
        }
    }

    /// Learns the receipts of a FETCH reply.
    fn learn_receipts(&mut self, q: &str, reply: &C) {
        if let C::Arr(msgs) = reply {
            for m in msgs {
                if let C::Map(f) = m {
                    if let Some(r) = f.get(&s(b"receipt")) {
                        self.learn_receipt(q, &r.bytes());
                    }
                }
            }
        }
    }

    fn argv(&mut self, o: &Op) -> Vec<Vec<u8>> {
        for a in &o.args {
            if let Arg::Receipt(q, d) = a {
                if !self.receipts.contains_key(&(q.clone(), d.clone())) {
                    // Not seen yet (copied keys): look in flight.
                    let members = self.plain(&[b"ZRANGE", format!("bak:{{{q}}}").as_bytes(), b"0", b"-1"]);
                    for m in members.arr() {
                        self.learn_receipt(q, &m.bytes());
                    }
                }
            }
        }
        let mut v: Vec<Vec<u8>> = match self.ed {
            Edition::Module => vec![format!("RMQ.{}", o.name.to_uppercase()).into_bytes()],
            Edition::Lua => vec![b"FCALL".to_vec(), format!("rmq_{}", o.name).into_bytes()],
        };
        match (self.ed, o.name) {
            (Edition::Module, "queues") => {}
            (Edition::Lua, "queues") => v.push(b"0".to_vec()),
            (Edition::Module, _) => v.push(o.q.clone().into_bytes()),
            (Edition::Lua, _) => {
                v.push(b"1".to_vec());
                v.push(o.q.clone().into_bytes());
            }
        }
        for a in &o.args {
            v.push(self.resolve(a));
        }
        v
    }

    fn resolve(&self, a: &Arg) -> Vec<u8> {
        match a {
            Arg::B(b) => b.clone(),
            Arg::Id(q, off) => {
                let c = self.times.get(&('c', q.clone(), off.to_string().into_bytes())).map_or(0, |t| t.0);
                format!("{c}-{off}").into_bytes()
            }
            Arg::Receipt(q, d) => self.receipts.get(&(q.clone(), d.clone())).cloned().unwrap_or_else(|| d.clone()),
        }
    }

    /// Runs one command as MULTI; TIME; cmd; TIME; EXEC: its reply and the window of `now`.
    fn exec(&mut self, argv: &[Vec<u8>]) -> (C, (i64, i64)) {
        let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
        self.c.send(&[b"MULTI"]);
        self.c.send(&[b"TIME"]);
        self.c.send(&refs);
        self.c.send(&[b"TIME"]);
        self.c.send(&[b"EXEC"]);
        let replies: Vec<C> = (0..5).map(|_| self.c.read()).collect();
        for (i, r) in replies[1..4].iter().enumerate() {
            assert_eq!(*r, C::Status("QUEUED".into()), "{}: command {i} of the transaction was not queued", self.name);
        }
        let out = replies[4].arr();
        let ms = |t: &C| {
            let a = t.arr();
            a[0].text().parse::<i64>().unwrap() * 1000 + a[1].text().parse::<i64>().unwrap() / 1000
        };
        // Valkey 8 answers TIME inside MULTI with the transaction's start time (Redis 7.0
        // with the clock), while a command reads the clock: a TIME after EXEC bounds it on
        // both.
        let after = self.c.call(&[b"TIME"]);
        (out[1].clone(), (ms(&out[0]), ms(&out[2]).max(ms(&after))))
    }

    fn plain(&mut self, args: &[&[u8]]) -> C {
        self.c.call(args)
    }

    fn read_raw(&mut self, q: &str) -> Raw {
        let k = |p: &str| format!("{p}:{{{q}}}").into_bytes();
        let cmds: Vec<Vec<Vec<u8>>> = vec![
            vec![b"LRANGE".to_vec(), k("msg"), b"0".to_vec(), b"-1".to_vec()],
            vec![b"ZRANGE".to_vec(), k("dly"), b"0".to_vec(), b"-1".to_vec(), b"WITHSCORES".to_vec()],
            vec![b"ZRANGE".to_vec(), k("bak"), b"0".to_vec(), b"-1".to_vec(), b"WITHSCORES".to_vec()],
            vec![b"HGETALL".to_vec(), k("inf")],
            vec![b"LRANGE".to_vec(), k("fai"), b"0".to_vec(), b"-1".to_vec()],
            vec![b"LRANGE".to_vec(), k("err"), b"0".to_vec(), b"-1".to_vec()],
            vec![b"HGETALL".to_vec(), k("cfg")],
            vec![b"HGETALL".to_vec(), k("st")],
            vec![b"ZRANGE".to_vec(), k("dup"), b"0".to_vec(), b"-1".to_vec(), b"WITHSCORES".to_vec()],
            vec![b"XRANGE".to_vec(), k("log"), b"-".to_vec(), b"+".to_vec()],
        ];
        for c in &cmds {
            let refs: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
            self.c.send(&refs);
        }
        let r: Vec<C> = (0..cmds.len()).map(|_| self.c.read()).collect();
        for (i, x) in r.iter().enumerate() {
            assert!(
                !matches!(x, C::Err(_)),
                "{}: reading the keys of {q}: {:?} gave {x:?}",
                self.name,
                cmds[i][1].escape_ascii().to_string()
            );
        }
        let list = |c: &C| c.arr().iter().map(|x| x.bytes()).collect::<Vec<_>>();
        Raw {
            msg: list(&r[0]),
            dly: zset(&r[1]),
            bak: zset(&r[2]),
            inf: hash(&r[3]),
            fai: list(&r[4]),
            err: list(&r[5]),
            cfg: hash(&r[6]),
            st: hash(&r[7]),
            dup: zset(&r[8]),
            log: r[9]
                .arr()
                .iter()
                .map(|e| {
                    let e = e.arr();
                    let flat = e[1].arr();
                    (e[0].bytes(), flat.chunks(2).map(|p| (p[0].bytes(), p[1].bytes())).collect())
                })
                .collect(),
        }
    }

    fn window(&self, step: usize) -> Option<(i64, i64)> {
        self.win[step]
    }

    /// Registers a time value; gives the step that set it.
    fn learn(&mut self, key: TimeKey, value: i64, step: usize, force: bool) -> usize {
        if let Some((v, origin)) = self.times.get(&key) {
            if *v == value && !force {
                return *origin;
            }
            assert!(
                key.0 != 'c',
                "{}: step {step}: the created time of {}#{} changed from {v} to {value}",
                self.name,
                key.1,
                String::from_utf8_lossy(&key.2)
            );
        }
        if matches!(key.0, 'c' | 'u') {
            if let Some((lo, hi)) = self.window(step) {
                assert!((lo..=hi).contains(&value), "{}: step {step}: {key:?} = {value} is not the step's now ({lo}..={hi})", self.name);
            }
        }
        self.times.insert(key.clone(), (value, step));
        self.fresh.push((key, value));
        step
    }

    /// A server-made id `<created>-<offset>` of a known message becomes `id:<offset>`, a
    /// receipt `rcpt:<offset>-<deliveries>`.
    fn mask_str(&self, q: &str, b: &[u8]) -> C {
        if let Some(d) = delivery_of(b) {
            return C::T(format!("rcpt:{}", String::from_utf8_lossy(&d)));
        }
        if let Some((ms, off)) = parse_id(b) {
            if let Some((c, _)) = self.times.get(&('c', q.to_string(), off.to_string().into_bytes())) {
                if *c as u64 == ms {
                    return C::T(format!("id:{off}"));
                }
            }
        }
        C::Str(b.to_vec())
    }

    fn mp_canon(&self, q: &str, v: &Mp) -> C {
        match v {
            Mp::U(n) => C::Int(*n as i64),
            Mp::S(b) => self.mask_str(q, b),
            Mp::A(a) => C::Arr(a.iter().map(|x| self.mp_canon(q, x)).collect()),
        }
    }

    /// A stored record: checked to be in cmsgpack's exact form, its created time tied to
    /// its offset.
    fn record(&mut self, q: &str, raw: &[u8], step: usize) -> C {
        let Some((fields, offset, _, created)) = record(raw) else {
            panic!("{}: step {step}: a value of {q} is not a record: {:?}", self.name, raw.escape_ascii().to_string());
        };
        let mut again = Vec::new();
        mp_encode(&Mp::A(fields.clone()), &mut again);
        assert_eq!(
            again.escape_ascii().to_string(),
            raw.escape_ascii().to_string(),
            "{}: step {step}: a record of {q} is not in cmsgpack's form (storage.md)",
            self.name
        );
        let origin = self.learn(('c', q.to_string(), offset.to_string().into_bytes()), created as i64, step, false);
        let mut out: Vec<C> = fields.iter().map(|f| self.mp_canon(q, f)).collect();
        out[5] = C::T(format!("created@{origin}"));
        C::Arr(out)
    }

    /// The canonical form of the keys of `q` after `step` (also remembered for replies).
    fn snapshot(&mut self, q: &str, step: usize, touched: Option<&[u8]>) -> C {
        let raw = self.read_raw(q);
        let mut m = BTreeMap::new();
        let mut put = |name: &str, v: C| {
            m.insert(s(name.as_bytes()), v);
        };
        let recs = |me: &mut Side, l: &[Vec<u8>]| C::Arr(l.iter().map(|r| me.record(q, r, step)).collect());
        put("msg", recs(self, &raw.msg));
        put("fai", recs(self, &raw.fai));
        put("err", recs(self, &raw.err));
        let mut dly = Vec::new();
        for (member, due) in &raw.dly {
            let rec = self.record(q, member, step);
            let (_, off, del, _) = record(member).unwrap();
            let origin = self.learn(('d', q.to_string(), format!("{off}-{del}").into_bytes()), *due, step, false);
            dly.push(C::Arr(vec![rec, C::T(format!("due@{origin}"))]));
        }
        put("dly", C::Arr(dly));
        let mut bak = BTreeMap::new();
        for (receipt, deadline) in &raw.bak {
            self.learn_receipt(q, receipt);
            let force = touched == Some(receipt.as_slice());
            let origin = self.learn(('l', q.to_string(), lock_key(receipt)), *deadline, step, force);
            bak.insert(self.mask_str(q, receipt), C::T(format!("lock@{origin}")));
        }
        put("bak", C::Map(bak));
        let mut inf = BTreeMap::new();
        for (receipt, rec) in &raw.inf {
            inf.insert(self.mask_str(q, receipt), self.record(q, rec, step));
        }
        put("inf", C::Map(inf));
        let mut dup = BTreeMap::new();
        for (id, at) in &raw.dup {
            let origin = self.learn(('u', q.to_string(), id.clone()), *at, step, false);
            dup.insert(s(id), C::T(format!("dedup@{origin}")));
        }
        put("dup", C::Map(dup));
        put("cfg", C::Map(raw.cfg.iter().map(|(k, v)| (s(k), s(v))).collect()));
        put("st", C::Map(raw.st.iter().map(|(k, v)| (s(k), s(v))).collect()));
        let log = self.log_canon(q, &raw, step);
        m.insert(s(b"log"), log);
        self.raw.insert(q.to_string(), raw);
        C::Map(m)
    }

    fn log_canon(&mut self, q: &str, raw: &Raw, step: usize) -> C {
        let win = self.window(step);
        let mut seen = self.logs.remove(q).unwrap_or_default();
        let mut out = Vec::new();
        for (sid, fields) in &raw.log {
            if let Some((c, _, _)) = seen.canon.get(sid) {
                out.push(c.clone());
                continue;
            }
            let id = parse_id(sid).unwrap_or_else(|| panic!("bad stream id {sid:?}"));
            assert!(
                seen.last.is_none_or(|l| id > l),
                "{}: step {step}: log entry {id:?} of {q} is new but not after the last one",
                self.name
            );
            if let Some((lo, hi)) = win {
                assert!(
                    (lo as u64..=hi as u64).contains(&id.0),
                    "{}: step {step}: log entry id {id:?} outside the step's window {lo}..={hi}",
                    self.name
                );
            }
            seen.last = Some(id);
            let mut m = BTreeMap::new();
            let time = fields
                .iter()
                .find(|(f, _)| f == b"time")
                .map(|(_, v)| String::from_utf8_lossy(v).parse::<i64>().expect("log time is a number"))
                .unwrap_or(-1);
            for (f, v) in fields {
                let c = match f.as_slice() {
                    b"time" => {
                        if let Some((lo, hi)) = win {
                            assert!(
                                (lo..=hi).contains(&time),
                                "{}: step {step}: log time {time} outside the step's window {lo}..={hi}",
                                self.name
                            );
                        }
                        C::T(format!("now@{step}"))
                    }
                    b"headers" => match mp_decode(v) {
                        Some(h @ Mp::A(_)) => self.mp_canon(q, &h),
                        _ => s(v),
                    },
                    // A lock deadline or a due time: now + LOCK / DELAY / backoff, the same
                    // distance from the entry's time on both servers; or an absolute AT.
                    b"deadline" | b"due" => {
                        let t = String::from_utf8_lossy(v).parse::<i64>().expect("log deadline/due is a number");
                        assert!(t >= time, "{}: step {step}: log {f:?} {t} before the entry's time {time}", self.name);
                        log_time_canon(t, time)
                    }
                    _ => self.mask_str(q, v),
                };
                assert!(m.insert(s(f), c).is_none(), "log field {f:?} twice");
            }
            let c = C::Map(m);
            seen.canon.insert(sid.clone(), (c.clone(), time, step));
            out.push(c);
        }
        self.logs.insert(q.to_string(), seen);
        C::Arr(out)
    }

    fn time_of(&self, kind: char, q: &str, ident: &[u8]) -> Option<(i64, usize)> {
        self.times.get(&(kind, q.to_string(), ident.to_vec())).copied()
    }

    /// The canonical form of a reply, after the step's snapshot of its queue.
    fn reply_canon(&self, o: &Op, r: &C, step: usize) -> C {
        let q = o.q.as_str();
        match (o.name, r) {
            ("touch", C::Int(v)) if *v > 0 => {
                let receipt = self.resolve(&o.args[0]);
                let (t, origin) = self
                    .time_of('l', q, &lock_key(&receipt))
                    .unwrap_or_else(|| panic!("{}: TOUCH gave {v} but {receipt:?} has no deadline", self.name));
                assert_eq!(t, *v, "{}: step {step}: TOUCH replied {v}, bak:{{{q}}} holds {t}", self.name);
                C::T(format!("lock@{origin}"))
            }
            ("stats", C::Map(m)) => {
                let mut m = m.clone();
                let key = s(b"oldest_ready_ms");
                let v = m.get(&key).map(|v| v.int()).unwrap_or_else(|| panic!("STATS without oldest_ready_ms: {r:?}"));
                let front = self.raw.get(q).and_then(|raw| raw.msg.first().cloned());
                match (front.and_then(|f| record(&f)), self.window(step)) {
                    (Some((_, _, _, created)), Some((lo, hi))) => {
                        let (lo, hi) = ((lo - created as i64).max(0), (hi - created as i64).max(0));
                        assert!(
                            (lo..=hi).contains(&v),
                            "{}: step {step}: oldest_ready_ms {v} is not now - created ({lo}..={hi})",
                            self.name
                        );
                        m.insert(key, C::T("now-created".into()));
                    }
                    (None, _) => assert_eq!(v, 0, "{}: oldest_ready_ms of a queue with nothing ready", self.name),
                    _ => {}
                }
                C::Map(m)
            }
            ("log", C::Arr(entries)) => {
                let raw_log = self.raw.get(q).map(|r| r.log.clone()).unwrap_or_default();
                let seen = self.logs.get(q);
                let mut cursor = 0;
                let out = entries
                    .iter()
                    .map(|e| {
                        let want = |f: &str| e.get(f).cloned();
                        let mut m = match self.walk(q, e, step) {
                            C::Map(m) => m,
                            other => return other,
                        };
                        if let Some(C::Int(t)) = want("time") {
                            // The stream entry it comes from, in order.
                            let field = |fields: &[(Vec<u8>, Vec<u8>)], f: &str| {
                                fields.iter().find(|(k, _)| k == f.as_bytes()).map(|(_, v)| v.clone())
                            };
                            let hit = raw_log[cursor..].iter().position(|(_, fields)| {
                                let off = want("offset").map(|o| o.int().to_string().into_bytes());
                                field(fields, "offset") == off
                                    && field(fields, "event") == want("event").map(|x| x.bytes())
                                    && field(fields, "id") == want("id").map(|x| x.bytes())
                                    && field(fields, "time") == Some(t.to_string().into_bytes())
                            });
                            let i =
                                hit.unwrap_or_else(|| panic!("{}: step {step}: LOG entry {e:?} is not in log:{{{q}}}", self.name)) + cursor;
                            cursor = i + 1;
                            let origin = seen.and_then(|s| s.canon.get(&raw_log[i].0)).map(|x| x.2).unwrap();
                            m.insert(s(b"time"), C::T(format!("now@{origin}")));
                            for f in [&b"deadline"[..], b"due"] {
                                if let Some(C::Int(v)) = want(std::str::from_utf8(f).unwrap()) {
                                    m.insert(s(f), log_time_canon(v, t));
                                }
                            }
                        }
                        C::Map(m)
                    })
                    .collect();
                C::Arr(out)
            }
            _ => self.walk(q, r, step),
        }
    }

    fn walk(&self, q: &str, r: &C, step: usize) -> C {
        match r {
            C::Str(b) => self.mask_str(q, b),
            C::Arr(a) => C::Arr(a.iter().map(|x| self.walk(q, x, step)).collect()),
            C::Map(m) if m.contains_key(&s(b"offset")) && !m.contains_key(&s(b"event")) => self.message(q, m, step),
            C::Map(m) => C::Map(m.iter().map(|(k, v)| (k.clone(), self.walk(q, v, step))).collect()),
            other => other.clone(),
        }
    }

    /// A message map of FETCH, PEEK or GET.
    fn message(&self, q: &str, m: &BTreeMap<C, C>, step: usize) -> C {
        let off = m[&s(b"offset")].int();
        let raw = self.raw.get(q).cloned().unwrap_or_default();
        let mut out = BTreeMap::new();
        for (k, v) in m {
            let name = match k {
                C::Str(b) => b.as_slice(),
                _ => b"",
            };
            let c = match (name, v) {
                (b"created", C::Int(t)) => {
                    let (c, origin) = self
                        .time_of('c', q, off.to_string().as_bytes())
                        .unwrap_or_else(|| panic!("{}: message {off} never seen in the keys", self.name));
                    assert_eq!(c, *t, "{}: step {step}: created of {q}#{off} in a reply is {t}, the record says {c}", self.name);
                    C::T(format!("created@{origin}"))
                }
                (b"deadline", C::Int(t)) => {
                    let receipt = match m.get(&s(b"receipt")) {
                        Some(r) => r.bytes(),
                        None => raw
                            .inf
                            .iter()
                            .find(|(_, rec)| record(rec).is_some_and(|r| r.1 as i64 == off))
                            .map(|(r, _)| r.clone())
                            .unwrap_or_else(|| panic!("{}: step {step}: {q}#{off} shown in flight but not in inf:{{{q}}}", self.name)),
                    };
                    let (d, origin) = self
                        .time_of('l', q, &lock_key(&receipt))
                        .unwrap_or_else(|| panic!("{}: no deadline known for {receipt:?}", self.name));
                    assert_eq!(d, *t, "{}: step {step}: deadline of {receipt:?} in a reply is {t}, bak holds {d}", self.name);
                    C::T(format!("lock@{origin}"))
                }
                (b"due", C::Int(t)) => {
                    let hit = raw.dly.iter().find(|(rec, _)| record(rec).is_some_and(|r| r.1 as i64 == off));
                    let (rec, due) =
                        hit.unwrap_or_else(|| panic!("{}: step {step}: {q}#{off} shown delayed but not in dly:{{{q}}}", self.name));
                    assert_eq!(*due, *t, "{}: step {step}: due of {q}#{off} in a reply is {t}, dly holds {due}", self.name);
                    let (_, _, del, _) = record(rec).unwrap();
                    let (_, origin) = self.time_of('d', q, format!("{off}-{del}").as_bytes()).unwrap();
                    C::T(format!("due@{origin}"))
                }
                _ => self.walk(q, v, step),
            };
            out.insert(k.clone(), c);
        }
        C::Map(out)
    }
}

// ------------------------------------------------------------------------------------
// Two servers run side by side.
// ------------------------------------------------------------------------------------

struct Pair {
    a: Side,
    b: Side,
    step: usize,
    seed: Option<u64>,
    history: Vec<String>,
}

/// A log entry's deadline or due time: now + LOCK / DELAY / backoff, the same distance from
/// the entry's time on both servers; or an absolute AT, far ahead.
fn log_time_canon(t: i64, time: i64) -> C {
    if t - time > 100_000_000_000 {
        C::T(format!("at:{t}"))
    } else {
        C::T(format!("time+{}", t - time))
    }
}

/// Does value `va` (set in window `wa`) mean the same as `vb` (set in `wb`)? Either the same
/// absolute time (AT, a copied key) or the same distance from each server's now.
fn same_time(va: i64, wa: Option<(i64, i64)>, vb: i64, wb: Option<(i64, i64)>) -> bool {
    if va == vb {
        return true;
    }
    match (wa, wb) {
        (Some((a0, a1)), Some((b0, b1))) => {
            let (ka, kb) = ((va - a1, va - a0), (vb - b1, vb - b0));
            ka.0 <= kb.1 && kb.0 <= ka.1
        }
        _ => false,
    }
}

impl Pair {
    fn new(a: Side, b: Side, seed: Option<u64>) -> Pair {
        Pair { a, b, step: 0, seed, history: Vec::new() }
    }

    fn fail(&self, what: String) -> ! {
        let seed = self.seed.map(|s| format!("seed {s} (RMQ_DIFF_SEED={s}), ")).unwrap_or_default();
        let tail: Vec<&String> = self.history.iter().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "{seed}step {}: {} and {} differ\n{what}\nlast steps:\n{}",
            self.step,
            self.a.name,
            self.b.name,
            tail.iter().map(|s| format!("  {s}")).collect::<Vec<_>>().join("\n")
        );
    }

    /// Compares the queue's keys on both servers after this step, and the times first seen.
    fn compare_keys(&mut self, q: &str, touched: Option<&Arg>) {
        let step = self.step;
        let (ta, tb) = (touched.map(|t| self.a.resolve(t)), touched.map(|t| self.b.resolve(t)));
        let ka = self.a.snapshot(q, step, ta.as_deref());
        let kb = self.b.snapshot(q, step, tb.as_deref());
        self.check_fresh();
        if ka != kb {
            let (C::Map(ma), C::Map(mb)) = (&ka, &kb) else { unreachable!() };
            let diff: Vec<String> = ma
                .iter()
                .filter(|(k, v)| mb.get(*k) != Some(*v))
                .map(|(k, v)| format!("  key {k:?} of {q}:\n    {}: {v:?}\n    {}: {:?}", self.a.name, self.b.name, mb.get(k)))
                .collect();
            self.fail(format!("keys differ:\n{}", diff.join("\n")));
        }
    }

    fn check_fresh(&mut self) {
        let step = self.step;
        let fa: BTreeMap<TimeKey, i64> = std::mem::take(&mut self.a.fresh).into_iter().collect();
        let fb: BTreeMap<TimeKey, i64> = std::mem::take(&mut self.b.fresh).into_iter().collect();
        let ka: BTreeSet<&TimeKey> = fa.keys().collect();
        let kb: BTreeSet<&TimeKey> = fb.keys().collect();
        if ka != kb {
            self.fail(format!(
                "times set by this step differ: {} set {:?}, {} set {:?}",
                self.a.name,
                ka.difference(&kb).collect::<Vec<_>>(),
                self.b.name,
                kb.difference(&ka).collect::<Vec<_>>()
            ));
        }
        for (k, va) in &fa {
            let vb = fb[k];
            if !same_time(*va, self.a.window(step), vb, self.b.window(step)) {
                self.fail(format!(
                    "time {k:?}: {} has {va} (now {:?}), {} has {vb} (now {:?}): not the same distance from now",
                    self.a.name,
                    self.a.window(step),
                    self.b.name,
                    self.b.window(step)
                ));
            }
        }
    }

    /// Step 0: the keys as they are (a copy of the same data on both).
    fn baseline(&mut self) {
        assert_eq!(self.step, 0);
        self.a.win.push(None);
        self.b.win.push(None);
        for q in self.queues() {
            self.compare_keys(&q, None);
        }
    }

    /// The queues that have keys on either server.
    fn queues(&mut self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for side in [&mut self.a, &mut self.b] {
            for k in side.plain(&[b"KEYS", b"*"]).arr() {
                let k = k.text();
                let (_, rest) = k.split_once(':').unwrap_or_else(|| panic!("unexpected key {k}"));
                let q = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')).unwrap_or_else(|| panic!("unexpected key {k}"));
                out.insert(q.to_string());
            }
        }
        out
    }

    /// Runs `o` on both; compares replies and keys. Gives both raw replies.
    fn run(&mut self, o: &Op) -> (C, C) {
        self.step += 1;
        let step = self.step;
        let (argv_a, argv_b) = (self.a.argv(o), self.b.argv(o));
        let (ra, wa) = self.a.exec(&argv_a);
        let (rb, wb) = self.b.exec(&argv_b);
        self.a.win.push(Some(wa));
        self.b.win.push(Some(wb));
        self.history.push(format!("{step}: {o}  ->  {ra:?}"));
        if o.sleep_after {
            std::thread::sleep(Duration::from_millis(3));
        }
        if o.name == "fetch" {
            self.a.learn_receipts(&o.q, &ra);
            self.b.learn_receipts(&o.q, &rb);
        }
        let touched = (o.name == "touch" && matches!(ra, C::Int(v) if v > 0)).then(|| o.args[0].clone());
        let queue_ok = valid_queue(&o.q);
        if queue_ok && o.name != "queues" {
            // Errors must change nothing, so the keys are compared after every step.
            self.compare_keys(&o.q, touched.as_ref());
        }
        let ca = self.a.reply_canon(o, &ra, step);
        let cb = self.b.reply_canon(o, &rb, step);
        if ca != cb {
            self.fail(format!(
                "{o}\n  {}: {ca:?}\n  {}: {cb:?}\n  (as sent: {}: {ra:?}\n             {}: {rb:?})",
                self.a.name, self.b.name, self.a.name, self.b.name
            ));
        }
        (ra, rb)
    }

    /// Every key of both servers: the same names, and the same content.
    fn compare_all(&mut self) {
        let names = |side: &mut Side| -> BTreeSet<Vec<u8>> { side.plain(&[b"KEYS", b"*"]).arr().iter().map(|k| k.bytes()).collect() };
        let (na, nb) = (names(&mut self.a), names(&mut self.b));
        if na != nb {
            let show = |s: &BTreeSet<Vec<u8>>| s.iter().map(|k| k.escape_ascii().to_string()).collect::<Vec<_>>();
            self.fail(format!("key names differ: {}: {:?}, {}: {:?}", self.a.name, show(&na), self.b.name, show(&nb)));
        }
        for q in self.queues() {
            self.compare_keys(&q, None);
        }
    }
}

fn module_server() -> Server {
    // No guard: nothing may move between commands, as in the Lua edition.
    Edition::Module.start_with(ServerOptions::default().arg("guard-interval-ms", "86400000"))
}

fn lua_server() -> Server {
    Edition::Lua.start()
}

fn start(ed: Edition) -> Server {
    match ed {
        Edition::Module => module_server(),
        Edition::Lua => lua_server(),
    }
}

fn ed_name(ed: Edition) -> &'static str {
    match ed {
        Edition::Module => "module",
        Edition::Lua => "lua",
    }
}

// ------------------------------------------------------------------------------------
// 1. Cross-edition data
// ------------------------------------------------------------------------------------

/// One server, commands by name (for writing the data).
struct One {
    side: Side,
}

impl One {
    fn run(&mut self, name: &'static str, q: &str, args: &[&[u8]]) -> C {
        let o = op(name, q, args);
        let argv = self.side.argv(&o);
        let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
        let r = self.side.plain(&refs);
        assert!(!matches!(r, C::Err(_)), "{} {o}: {r:?}", self.side.name);
        if name == "fetch" {
            self.side.learn_receipts(q, &r);
        }
        r
    }
}

/// Writes a queue in every state with `writer`'s edition: returns the writer.
fn fill(writer: Edition) -> One {
    let mut w = One { side: Side::new(ed_name(writer), writer, start(writer)) };
    let q = "jobs";
    w.run(
        "config",
        q,
        &[b"SET", b"log", b"1", b"max-attempts", b"3", b"backoff-ms", b"0", b"lock-ms", b"60000", b"dedup-window-ms", b"7200000"],
    );
    // Offsets 1-4: to failed, errors and two in flight.
    for (body, id) in [("f1", "fail-1"), ("e1", "err-1"), ("i1", "inflight-1"), ("i2", "inflight-2")] {
        w.run("push", q, &[body.as_bytes(), b"ID", id.as_bytes()]);
    }
    let got = w.run("fetch", q, &[b"COUNT", b"4", b"LOCK", b"10000000", b"CONSUMER", b"w1"]);
    let receipts: Vec<Vec<u8>> = got.arr().iter().filter_map(|m| delivery_of(&m.field("receipt").bytes())).collect();
    assert_eq!(receipts, [b"1-1", b"2-1", b"3-1", b"4-1"]);
    assert_eq!(w.run("nack", q, &[b"1-1", b"FAIL", b"REASON", b"boom"]), C::Int(1));
    assert_eq!(w.run("nack", q, &[b"2-1", b"ERROR", b"REASON", b"bad \xffinput"]), C::Int(1));
    // Offset 5: a retry waiting 10^7 ms; 6: in flight with a lock that runs out (the last
    // FETCH of the queue, so nothing reclaims it before the copy).
    w.run("push", q, &[b"rt", b"ID", b"retry-1"]);
    assert_eq!(delivery_of(&w.run("fetch", q, &[b"LOCK", b"10000000"]).arr()[0].field("receipt").bytes()).unwrap(), b"5-1");
    assert_eq!(w.run("nack", q, &[b"5-1", b"RETRY", b"DELAY", b"10000000", b"REASON", b"later"]), C::Int(1));
    w.run("push", q, &[b"x1", b"ID", b"expired-1", b"TAG", b"slow"]);
    assert_eq!(delivery_of(&w.run("fetch", q, &[b"LOCK", b"1", b"CONSUMER", b"w2"]).arr()[0].field("receipt").bytes()).unwrap(), b"6-1");
    // Offsets 7-9 ready (one with a server-made id and a binary body), a duplicate, then
    // 10 and 11 delayed.
    let r1 =
        &[&b"r1"[..], b"ID", b"order-1", b"TAG", b"created", b"KEY", b"cust-7", b"HEADER", b"trace", b"abc", b"HEADER", b"lang", b"fr"];
    assert_eq!(w.run("push", q, r1).text(), "order-1");
    let body2: Vec<u8> = (0..=255u8).collect();
    let id2 = w.run("push", q, &[&body2, b"TAG", b"bin"]).text();
    assert!(id2.ends_with("-8"), "server-made id {id2}");
    w.run("push", q, &[b"r3", b"ID", b"order-3"]);
    assert_eq!(w.run("push", q, &[b"r3 again", b"ID", b"order-3"]).text(), "order-3");
    w.run("push", q, &[b"d1", b"ID", b"delayed-1", b"DELAY", b"10000000"]);
    w.run("push", q, &[b"d2", b"AT", b"4000000000000", b"HEADER", b"h", b"v"]);
    std::thread::sleep(Duration::from_millis(5)); // 6-1's lock has run out
                                                  // An ordered queue whose retry holds the line.
    let o = "ord";
    w.run("config", o, &[b"SET", b"ordered", b"1"]);
    w.run("push", o, &[b"o1", b"ID", b"o-1"]);
    w.run("push", o, &[b"o2", b"ID", b"o-2"]);
    assert_eq!(delivery_of(&w.run("fetch", o, &[b"LOCK", b"10000000"]).arr()[0].field("receipt").bytes()).unwrap(), b"1-1");
    assert_eq!(w.run("nack", o, &[b"1-1", b"DELAY", b"10000000"]), C::Int(1));
    w
}

/// Copies every key with DUMP/RESTORE (no TTL), as a user moving a queue would.
fn copy_keys(from: &mut Side, to: &mut Side) {
    let keys = from.plain(&[b"KEYS", b"*"]).arr();
    assert!(keys.len() >= 10, "too few keys to copy: {keys:?}");
    for k in &keys {
        let k = k.bytes();
        assert_eq!(from.plain(&[b"PTTL", &k]), C::Int(-1));
        let dump = from.plain(&[b"DUMP", &k]).bytes();
        assert_eq!(to.plain(&[b"RESTORE", &k, b"0", &dump]), C::Status("OK".into()), "RESTORE {}", k.escape_ascii());
    }
}

fn stats_of(r: &C) -> BTreeMap<String, i64> {
    match r {
        C::Map(m) => m.iter().map(|(k, v)| (k.text(), v.int())).collect(),
        other => panic!("STATS: {other:?}"),
    }
}

fn bodies(r: &C) -> Vec<String> {
    r.arr().iter().map(|m| m.field("body").text()).collect()
}

/// Data written by `writer`, served by `reader`: the same commands on the writer and on the
/// copy give the same replies and keys, and the copy behaves as the contract says.
fn data_moves_between_editions(writer: Edition, reader: Edition) {
    let w = fill(writer);
    let mut a = w.side;
    a.name = if writer == Edition::Module { "writer (module)" } else { "writer (lua)" };
    let mut b = Side::new(if reader == Edition::Module { "copy on module" } else { "copy on lua" }, reader, start(reader));
    copy_keys(&mut a, &mut b);
    if reader == Edition::Lua {
        // The library was loaded at start; loading it again after the copy is what a user does.
        let lib = common::lua_library();
        assert_eq!(b.plain(&[b"FUNCTION", b"LOAD", b"REPLACE", lib.as_bytes()]), s(b"rmq"));
    }
    let mut p = Pair::new(a, b, None);
    p.baseline();
    let q = "jobs";
    let run = |p: &mut Pair, name: &'static str, qq: &str, args: &[&[u8]]| p.run(&op(name, qq, args)).1;

    // Everything reads the same.
    let st = stats_of(&run(&mut p, "stats", q, &[]));
    let want = [
        ("ready", 3),
        ("delayed", 3),
        ("inflight", 3),
        ("failed", 1),
        ("errors", 1),
        ("pushed", 11),
        ("acked", 0),
        ("dups", 1),
        ("dead", 1),
        ("errored", 1),
        ("retried", 1),
        ("offset", 11),
    ];
    for (k, v) in want {
        assert_eq!(st[k], v, "STATS {k} on the copy: {st:?}");
    }
    assert!(st["oldest_ready_ms"] > 0);
    assert_eq!(bodies(&run(&mut p, "peek", q, &[b"READY"])), ["r1", &String::from_utf8_lossy(&(0..=255u8).collect::<Vec<_>>()), "r3"]);
    assert_eq!(bodies(&run(&mut p, "peek", q, &[b"DELAYED"])), ["rt", "d1", "d2"], "by due");
    let inflight = run(&mut p, "peek", q, &[b"INFLIGHT", b"COUNT", b"100"]);
    assert_eq!(bodies(&inflight), ["x1", "i1", "i2"], "by deadline");
    assert_eq!(inflight.arr()[1].field("consumer").text(), "w1");
    let failed = run(&mut p, "peek", q, &[b"FAILED"]);
    assert_eq!(failed.arr()[0].field("error").text(), "boom");
    let errors = run(&mut p, "peek", q, &[b"ERRORS"]);
    assert_eq!(errors.arr()[0].field("error").bytes(), b"bad \xffinput");
    let g = run(&mut p, "get", q, &[b"order-1"]);
    assert_eq!((g.field("state").text(), g.field("key").text()), ("ready".into(), "cust-7".into()));
    assert_eq!(g.field("headers").field("lang").text(), "fr");
    let bin_id = Op { name: "get", q: q.into(), args: vec![Arg::Id(q.into(), 8)], sleep_after: false };
    assert_eq!(p.run(&bin_id).1.field("body").bytes(), (0..=255u8).collect::<Vec<_>>());
    for (id, state) in [
        ("delayed-1", "delayed"),
        ("retry-1", "delayed"),
        ("inflight-1", "inflight"),
        ("expired-1", "inflight"),
        ("fail-1", "failed"),
        ("err-1", "errors"),
    ] {
        assert_eq!(run(&mut p, "get", q, &[id.as_bytes()]).field("state").text(), state, "GET {id}");
    }
    assert_eq!(run(&mut p, "get", q, &[b"nope"]), C::Nil);
    let cfg = run(&mut p, "config", q, &[b"GET"]);
    assert_eq!(cfg.arr()[2..4].to_vec(), [s(b"max-attempts"), s(b"3")], "settings carried over");
    assert_eq!(run(&mut p, "log", q, &[b"COUNT", b"1000"]).arr().len(), 20, "11 pushes, 6 fetches, a fail, an error, a delay");
    assert_eq!(run(&mut p, "queues", "", &[]), C::Arr(vec![s(b"jobs"), s(b"ord")]));

    // Receipts issued by the writer work on the copy.
    assert!(run(&mut p, "touch", q, &[b"3-1", b"LOCK", b"20000000"]).int() > 0);
    assert_eq!(run(&mut p, "ack", q, &[b"3-1"]), C::Int(1));
    assert_eq!(run(&mut p, "ack", q, &[b"3-1", b"1-1", b"junk"]), C::Int(0), "stale receipts");
    assert_eq!(run(&mut p, "nack", q, &[b"4-1", b"RETRY"]), C::Int(1), "backoff-ms 0: back to ready");
    // The dedup window carried over.
    assert_eq!(run(&mut p, "push", q, &[b"again", b"ID", b"order-1"]), s(b"order-1"));
    assert_eq!(stats_of(&run(&mut p, "stats", q, &[]))["dups"], 2);
    // FETCH reclaims the expired lock first (to the back of ready), then hands out in order.
    let got = run(&mut p, "fetch", q, &[b"COUNT", b"10", b"LOCK", b"10000000", b"CONSUMER", b"w3"]);
    let receipts: Vec<Vec<u8>> = got.arr().iter().filter_map(|m| delivery_of(&m.field("receipt").bytes())).collect();
    assert_eq!(receipts, [&b"7-1"[..], b"8-1", b"9-1", b"4-2", b"6-2"]);
    assert_eq!(got.arr()[4].field("attempt"), &C::Int(2), "the expired delivery counted");
    let mut ack: Vec<&[u8]> = receipts.iter().map(|r| r.as_slice()).collect();
    ack.push(b"6-1");
    assert_eq!(run(&mut p, "ack", q, &ack), C::Int(5));
    assert_eq!(run(&mut p, "recover", q, &[]), C::Arr(vec![C::Int(0), C::Int(1), C::Int(1)]));
    assert_eq!(run(&mut p, "requeue", q, &[b"delayed-1", b"retry-1"]), C::Int(2));
    let d2 = Op { name: "del", q: q.into(), args: vec![Arg::Id(q.into(), 11)], sleep_after: false };
    assert_eq!(p.run(&d2).1, C::Int(1));
    let got = run(&mut p, "fetch", q, &[b"COUNT", b"10", b"LOCK", b"10000000"]);
    assert_eq!(bodies(&got), ["f1", "e1", "rt", "d1"], "recovered, then requeued in due order");
    assert_eq!(got.arr()[0].field("attempt"), &C::Int(1), "RECOVER restarts attempts");
    assert_eq!(got.arr()[2].field("attempt"), &C::Int(2), "REQUEUE of a delayed retry keeps them");
    assert_eq!(run(&mut p, "nack", q, &[b"12-1"]), C::Int(0), "stale");
    assert_eq!(run(&mut p, "nack", q, &[b"10-1", b"FAIL"]), C::Int(1));
    assert_eq!(run(&mut p, "nack", q, &[b"5-2", b"ERROR", b"REASON", b"x"]), C::Int(1));
    assert_eq!(run(&mut p, "replay", q, &[b"FROM", b"7", b"TO", b"7"]), C::Int(1));
    let replayed = run(&mut p, "peek", q, &[]);
    assert_eq!(replayed.arr()[0].field("headers").field("replay-of").text(), "order-1");
    // The ordered queue: the retry holds the line until it is requeued, then goes first.
    let o = "ord";
    assert_eq!(run(&mut p, "fetch", o, &[]), C::Nil, "hold carried over");
    assert_eq!(run(&mut p, "requeue", o, &[b"o-1"]), C::Int(1));
    let got = run(&mut p, "fetch", o, &[b"LOCK", b"10000000"]);
    assert_eq!((bodies(&got), got.arr()[0].field("attempt").int()), (vec!["o1".to_string()], 2));
    run(&mut p, "config", q, &[b"SET", b"log-maxlen", b"5"]);
    run(&mut p, "stats", q, &[]);
    run(&mut p, "stats", o, &[]);
    assert!(run(&mut p, "purge", q, &[b"ALL"]).int() > 0);
    run(&mut p, "stats", q, &[]);
    p.compare_all();
}

#[test]
fn module_data_is_served_by_the_lua_edition() {
    data_moves_between_editions(Edition::Module, Edition::Lua);
}

#[test]
fn lua_data_is_served_by_the_module() {
    data_moves_between_editions(Edition::Lua, Edition::Module);
}

// ------------------------------------------------------------------------------------
// 2. Seeded randomized differential run
// ------------------------------------------------------------------------------------

const QUEUES: [&str; 3] = ["q1", "jobs.v2", "a:b#c/d-e_f"];
const BAD_QUEUES: [&str; 5] = ["", "bad q", "{x}", "é", "a\nb"];
const IDS: [&str; 10] = ["id-0", "id-1", "id-2", "id-3", "order:42", "x", "~!@#", "id-7", "id-8", "id-9"];

#[derive(Default)]
struct QState {
    receipts: Vec<Vec<u8>>,
    server_ids: Vec<u64>,
    max_offset: u64,
    short_lock: bool,
    short_delay: bool,
}

struct Gen {
    rng: SmallRng,
    /// The step number the next op will get (unique long times are built from it).
    next_step: usize,
    qs: HashMap<String, QState>,
    fresh_id: u64,
}

fn kw(rng: &mut SmallRng, k: &str) -> Vec<u8> {
    match rng.gen_range(0..6) {
        0 => k.to_lowercase().into_bytes(),
        1 => k.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { c }).collect::<String>().into_bytes(),
        _ => k.as_bytes().to_vec(),
    }
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen { rng: SmallRng::seed_from_u64(seed), next_step: 1, qs: HashMap::new(), fresh_id: 0 }
    }

    /// A long time, unique to this step: 10^7 + 1000·step ms.
    fn long(&self) -> Vec<u8> {
        (10_000_000 + 1000 * self.next_step as u64).to_string().into_bytes()
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.gen_range(0..xs.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn body(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..6) {
            0 => Vec::new(),
            1 => format!("m{}", self.rng.gen_range(0..100)).into_bytes(),
            2 => (0..self.rng.gen_range(0..40)).map(|_| self.rng.gen()).collect(),
            3 => vec![b'z'; self.rng.gen_range(30..300)],
            _ => format!("job {}", self.next_step).into_bytes(),
        }
    }

    fn receipt(&mut self, q: &str) -> Vec<u8> {
        let st = self.qs.entry(q.to_string()).or_default();
        if st.receipts.is_empty() || self.rng.gen_bool(0.1) {
            return self.pick(&[&b"x"[..], b"1-", b"", b"99-99", b"1-1", b"-1"]).to_vec();
        }
        let n = st.receipts.len();
        // Mostly recent ones.
        let i = n - 1 - self.rng.gen_range(0..n.min(8));
        st.receipts[i].clone()
    }

    fn id_arg(&mut self, q: &str) -> Arg {
        let st = self.qs.entry(q.to_string()).or_default();
        if !st.server_ids.is_empty() && self.rng.gen_bool(0.4) {
            let off = st.server_ids[self.rng.gen_range(0..st.server_ids.len())];
            return Arg::Id(q.to_string(), off);
        }
        if self.rng.gen_bool(0.1) {
            return Arg::B(b"unknown-id".to_vec());
        }
        Arg::B(self.pick(&IDS).as_bytes().to_vec())
    }

    fn config_pair(&mut self, bad: bool) -> Vec<Vec<u8>> {
        let long = self.long();
        let name = self.pick(&[
            "lock-ms",
            "max-attempts",
            "backoff-ms",
            "backoff-max-ms",
            "maxlen",
            "ordered",
            "dedup-window-ms",
            "log",
            "log-maxlen",
        ]);
        if bad {
            // Invalid for this setting whatever its rule: a "bad" value that a setting accepts
            // (2 ms of dedup window or lock) would make the run race the clock.
            let v: &[u8] = match name {
                "ordered" | "log" if self.chance(0.5) => b"2",
                "lock-ms" | "max-attempts" | "log-maxlen" if self.chance(0.5) => b"0",
                _ => self.pick(&[&b"-1"[..], b"abc", b"", b"1e3", b"99999999999999999", b"+5"]),
            };
            let n: &[u8] = if self.chance(0.3) { self.pick(&[&b"nope"[..], b"lock", b"max_attempts"]) } else { name.as_bytes() };
            return vec![kw(&mut self.rng, &String::from_utf8_lossy(n)), v.to_vec()];
        }
        let v: Vec<u8> = match name {
            "lock-ms" => long,
            "max-attempts" => self.pick(&["1", "2", "3", "5", "007"]).as_bytes().to_vec(),
            "backoff-ms" => {
                if self.chance(0.5) {
                    b"0".to_vec()
                } else {
                    long
                }
            }
            "backoff-max-ms" => self.pick(&["0", "1000000000000"]).as_bytes().to_vec(),
            "maxlen" => self.pick(&["0", "0", "4", "30"]).as_bytes().to_vec(),
            "ordered" => self.pick(&["0", "0", "1"]).as_bytes().to_vec(),
            "dedup-window-ms" => self.pick(&["0", "3600000", "100000000"]).as_bytes().to_vec(),
            "log" => self.pick(&["0", "1", "1"]).as_bytes().to_vec(),
            _ => self.pick(&["3", "10", "1000000"]).as_bytes().to_vec(),
        };
        vec![kw(&mut self.rng, name), v]
    }

    fn mk(&mut self, name: &'static str, q: &str, args: Vec<Vec<u8>>) -> Op {
        self.next_step += 1;
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        op(name, q, &refs)
    }

    /// The next few ops (a FETCH without LOCK comes with the CONFIG SET of a fresh lock-ms,
    /// a NACK without DELAY with one of backoff-ms).
    fn next(&mut self) -> Vec<Op> {
        let bad_queue = self.chance(0.03);
        let q = if bad_queue { self.pick(&BAD_QUEUES).to_string() } else { self.pick(&QUEUES).to_string() };
        let fault = self.chance(0.12);
        let which = self.rng.gen_range(0..100);
        let mut ops = Vec::new();
        let mut o = match which {
            0..=24 => self.push(&q, fault),
            25..=42 => {
                let (o, pre) = self.fetch(&q, fault);
                if let Some(pre) = pre {
                    ops.push(pre);
                }
                o
            }
            43..=50 => {
                let mut a: Vec<Vec<u8>> = (0..self.rng.gen_range(1..4)).map(|_| self.receipt(&q)).collect();
                if fault {
                    a.clear();
                }
                self.mk("ack", &q, a)
            }
            51..=60 => {
                let (o, pre) = self.nack(&q, fault);
                if let Some(pre) = pre {
                    ops.push(pre);
                }
                o
            }
            61..=64 => {
                let (o, pre) = self.touch(&q, fault);
                if let Some(pre) = pre {
                    ops.push(pre);
                }
                o
            }
            65..=67 => {
                let mut a: Vec<Vec<u8>> = Vec::new();
                for w in ["EXPIRED", "FAILED", "ERRORS"] {
                    if self.chance(0.4) {
                        a.push(kw(&mut self.rng, w));
                    }
                }
                if fault {
                    a.push(self.pick(&[&b"EXPIRED"[..], b"failed", b"ALL", b"x"]).to_vec());
                }
                let n = a.len();
                if n > 1 {
                    let i = self.rng.gen_range(0..n);
                    a.swap(0, i);
                }
                let expired = a.is_empty() || a.iter().any(|x| x.eq_ignore_ascii_case(b"EXPIRED"));
                if !fault && expired {
                    self.qs.entry(q.clone()).or_default().short_lock = false;
                }
                self.mk("recover", &q, a)
            }
            68..=72 => {
                let a = if fault { vec![b"x".to_vec()] } else { vec![] };
                self.mk("stats", &q, a)
            }
            73..=78 => self.peek(&q, fault),
            79..=82 => {
                self.next_step += 1;
                let mut args = vec![self.id_arg(&q)];
                if fault {
                    if self.chance(0.5) {
                        args.clear();
                    } else {
                        args.push(Arg::B(b"extra".to_vec()));
                    }
                }
                Op { name: "get", q: q.clone(), args, sleep_after: false }
            }
            83..=87 => {
                self.next_step += 1;
                let name = if self.chance(0.5) { "del" } else { "requeue" };
                let args = if fault { vec![] } else { (0..self.rng.gen_range(1..4)).map(|_| self.id_arg(&q)).collect() };
                Op { name, q: q.clone(), args, sleep_after: false }
            }
            88 => {
                let mut a = vec![{
                    let w = self.pick(&["READY", "DELAYED", "INFLIGHT", "FAILED", "ERRORS", "ALL"]);
                    kw(&mut self.rng, w)
                }];
                if fault {
                    match self.rng.gen_range(0..3) {
                        0 => a.clear(),
                        1 => a[0] = b"EVERYTHING".to_vec(),
                        _ => a.push(b"READY".to_vec()),
                    }
                }
                self.mk("purge", &q, a)
            }
            89..=93 => self.config(&q, fault),
            94 => {
                let a = if fault { vec![b"x".to_vec()] } else { vec![] };
                self.mk("queues", &q, a)
            }
            95..=97 => {
                let mut a = Vec::new();
                let max = self.qs.get(&q).map_or(0, |s| s.max_offset);
                if self.chance(0.6) {
                    a.push(kw(&mut self.rng, "FROM"));
                    a.push(self.rng.gen_range(0..=max + 1).to_string().into_bytes());
                }
                if self.chance(0.5) {
                    a.push(kw(&mut self.rng, "COUNT"));
                    a.push(self.pick(&["1", "5", "100", "1000"]).as_bytes().to_vec());
                }
                if fault {
                    a.extend(self.number_fault(&["FROM", "COUNT"]));
                }
                self.mk("log", &q, a)
            }
            _ => {
                let mut a = Vec::new();
                let max = self.qs.get(&q).map_or(0, |s| s.max_offset);
                let from = if self.chance(0.5) { max.saturating_sub(self.rng.gen_range(0..6)) } else { self.rng.gen_range(0..=max + 1) };
                if !(fault && self.chance(0.3)) {
                    a.push(kw(&mut self.rng, "FROM"));
                    a.push(from.to_string().into_bytes());
                }
                if self.chance(0.7) {
                    a.push(kw(&mut self.rng, "TO"));
                    a.push((from + self.rng.gen_range(0..4)).to_string().into_bytes());
                }
                if fault {
                    a.extend(self.number_fault(&["FROM", "TO"]));
                }
                self.mk("replay", &q, a)
            }
        };
        if bad_queue && self.chance(0.5) {
            o.args.clear(); // arity and queue name both at fault
        }
        ops.push(o);
        ops
    }

    /// A keyword with a bad or missing value, or an unknown keyword.
    fn number_fault(&mut self, kws: &[&str]) -> Vec<Vec<u8>> {
        let k = {
            let w = self.pick(kws);
            kw(&mut self.rng, w)
        };
        match self.rng.gen_range(0..5) {
            0 => vec![k],
            1 => vec![k, b"-1".to_vec()],
            2 => vec![k, b"1e3".to_vec()],
            3 => vec![k, b"1000000000000001".to_vec()],
            _ => vec![self.pick(&[&b"FOO"[..], b"\xff", b"a\r\nb", b"\x00", b"\xe0\xa0"]).to_vec()],
        }
    }

    fn push(&mut self, q: &str, fault: bool) -> Op {
        let mut a = vec![self.body()];
        let mut short = false;
        if self.chance(0.6) {
            a.push(kw(&mut self.rng, "ID"));
            if self.chance(0.8) {
                a.push(self.pick(&IDS).as_bytes().to_vec());
            } else {
                self.fresh_id += 1;
                a.push(format!("u-{}", self.fresh_id).into_bytes());
            }
        }
        if self.chance(0.3) {
            a.push(kw(&mut self.rng, "TAG"));
            a.push(self.pick(&["", "t1", "created"]).as_bytes().to_vec());
        }
        if self.chance(0.2) {
            a.push(kw(&mut self.rng, "KEY"));
            a.push(self.pick(&["k1", "cust-7"]).as_bytes().to_vec());
        }
        for _ in 0..self.rng.gen_range(0..3) {
            a.push(kw(&mut self.rng, "HEADER"));
            a.push(self.pick(&["h1", "trace", "replay-of", "lang"]).as_bytes().to_vec());
            a.push(self.body());
        }
        if self.chance(0.35) {
            let st = self.qs.entry(q.to_string()).or_default();
            let short_ok = !st.short_delay;
            match self.rng.gen_range(0..7) {
                0 => a.extend([kw(&mut self.rng, "DELAY"), b"0".to_vec()]),
                1 | 2 => a.extend([kw(&mut self.rng, "DELAY"), self.long()]),
                3 if short_ok => {
                    a.extend([kw(&mut self.rng, "DELAY"), b"1".to_vec()]);
                    short = true;
                }
                4 => a.extend([kw(&mut self.rng, "AT"), self.pick(&["0", "1", "1000"]).as_bytes().to_vec()]),
                _ => a.extend([kw(&mut self.rng, "AT"), b"4000000000000".to_vec()]),
            }
        }
        if fault {
            let extra: Vec<Vec<u8>> = match self.rng.gen_range(0..9) {
                0 => vec![b"ID".to_vec(), self.pick(&[&b"a b"[..], b"", &[b'x'; 129][..], b"\x7f"]).to_vec()],
                1 => vec![b"HEADER".to_vec(), b"".to_vec(), b"v".to_vec()],
                2 => vec![b"HEADER".to_vec(), b"d".to_vec(), b"1".to_vec(), b"header".to_vec(), b"d".to_vec(), b"2".to_vec()],
                3 => vec![b"DELAY".to_vec(), b"5".to_vec(), b"AT".to_vec(), b"5".to_vec()],
                4 => vec![b"TAG".to_vec(), b"a".to_vec(), b"tag".to_vec(), b"b".to_vec()],
                5 => vec![b"HEADER".to_vec(), b"h".to_vec()],
                6 => vec![b"AT".to_vec(), self.pick(&[&b"-5"[..], b"0x10", b"+5", b" 1"]).to_vec()],
                7 => vec![b"CONSUMER".to_vec(), b"w".to_vec()],
                _ => self.number_fault(&["DELAY", "TAG", "ID"]),
            };
            a.extend(extra);
            if self.chance(0.2) {
                a.clear(); // no body
            }
        }
        if short {
            // Also after a fault: some faults are valid after all (`TAG -1`).
            self.qs.entry(q.to_string()).or_default().short_delay = true;
        }
        let mut o = self.mk("push", q, a);
        o.sleep_after = short;
        o
    }

    fn fetch(&mut self, q: &str, fault: bool) -> (Op, Option<Op>) {
        let mut a = Vec::new();
        let mut pre = None;
        let mut short = false;
        if self.chance(0.5) {
            a.push(kw(&mut self.rng, "COUNT"));
            a.push(self.pick(&["1", "2", "3", "5", "1000"]).as_bytes().to_vec());
        }
        let st_short = self.qs.entry(q.to_string()).or_default().short_lock;
        match self.rng.gen_range(0..10) {
            0 if !st_short => {
                a.extend([kw(&mut self.rng, "LOCK"), b"1".to_vec()]);
                short = true;
            }
            0..=4 => a.extend([kw(&mut self.rng, "LOCK"), self.long()]),
            _ => {
                let v = self.long();
                pre = Some(self.mk("config", q, vec![b"SET".to_vec(), b"lock-ms".to_vec(), v]));
            }
        }
        if self.chance(0.15) {
            a.push(kw(&mut self.rng, "BLOCK"));
            a.push(self.pick(&["0", "10", "100"]).as_bytes().to_vec());
        }
        if self.chance(0.3) {
            a.push(kw(&mut self.rng, "CONSUMER"));
            a.push(self.pick(&["w1", "w2"]).as_bytes().to_vec());
        }
        let n = a.len() / 2;
        if n > 1 {
            // Options in any order (pairs stay together).
            let i = self.rng.gen_range(0..n);
            let pair: Vec<Vec<u8>> = a.drain(2 * i..2 * i + 2).collect();
            a.splice(0..0, pair);
        }
        if fault {
            let extra: Vec<Vec<u8>> = match self.rng.gen_range(0..6) {
                0 => vec![b"COUNT".to_vec(), self.pick(&[&b"0"[..], b"1001", b"-1", b"x"]).to_vec()],
                1 => vec![b"LOCK".to_vec(), self.pick(&[&b"0"[..], b"abc", b""]).to_vec()],
                2 => vec![b"BLOCK".to_vec(), b"-1".to_vec()],
                3 => vec![b"CONSUMER".to_vec(), self.pick(&[&b""[..], &[b'c'; 201][..]]).to_vec()],
                4 => vec![b"CONSUMER".to_vec(), b"a".to_vec(), b"consumer".to_vec(), b"b".to_vec()],
                _ => self.number_fault(&["COUNT", "LOCK", "BLOCK", "CONSUMER"]),
            };
            a.extend(extra);
        } else {
            let st = self.qs.entry(q.to_string()).or_default();
            // A FETCH promotes and reclaims everything due: nothing 1-ms is pending after it.
            st.short_delay = false;
            st.short_lock = false;
        }
        if short {
            self.qs.entry(q.to_string()).or_default().short_lock = true;
        }
        let mut o = self.mk("fetch", q, a);
        o.sleep_after = short;
        (o, pre)
    }

    fn nack(&mut self, q: &str, fault: bool) -> (Op, Option<Op>) {
        let mut a = vec![self.receipt(q)];
        let mut pre = None;
        let mut short = false;
        let action = self.pick(&["", "", "RETRY", "FAIL", "ERROR"]);
        if !action.is_empty() {
            a.push(kw(&mut self.rng, action));
        }
        if action.is_empty() || action == "RETRY" {
            let st_short = self.qs.entry(q.to_string()).or_default().short_delay;
            match self.rng.gen_range(0..8) {
                0 => a.extend([kw(&mut self.rng, "DELAY"), b"0".to_vec()]),
                1 | 2 => a.extend([kw(&mut self.rng, "DELAY"), self.long()]),
                3 if !st_short => {
                    a.extend([kw(&mut self.rng, "DELAY"), b"1".to_vec()]);
                    short = true;
                }
                _ => {
                    let v = if self.chance(0.5) { b"0".to_vec() } else { self.long() };
                    pre = Some(self.mk("config", q, vec![b"SET".to_vec(), b"backoff-ms".to_vec(), v]));
                }
            }
        }
        if self.chance(0.4) {
            a.push(kw(&mut self.rng, "REASON"));
            a.push(self.body());
        }
        if fault {
            let extra: Vec<Vec<u8>> = match self.rng.gen_range(0..6) {
                0 => vec![b"FAIL".to_vec()],
                1 => vec![b"ERROR".to_vec(), b"DELAY".to_vec(), b"5".to_vec()],
                2 => vec![b"DELAY".to_vec(), b"-1".to_vec()],
                3 => vec![b"REASON".to_vec(), b"a".to_vec(), b"reason".to_vec(), b"b".to_vec()],
                4 => vec![b"RETRY".to_vec(), b"RETRY".to_vec()],
                _ => self.number_fault(&["DELAY", "REASON"]),
            };
            a.extend(extra);
            if self.chance(0.15) {
                a.clear();
            }
        }
        if short {
            // Also after a fault: some faults are valid after all (`TAG -1`).
            self.qs.entry(q.to_string()).or_default().short_delay = true;
        }
        let mut o = self.mk("nack", q, a);
        o.sleep_after = short;
        (o, pre)
    }

    fn touch(&mut self, q: &str, fault: bool) -> (Op, Option<Op>) {
        let mut a = vec![self.receipt(q)];
        let mut pre = None;
        let mut short = false;
        let st_short = self.qs.entry(q.to_string()).or_default().short_lock;
        match self.rng.gen_range(0..6) {
            0 if !st_short => {
                a.extend([kw(&mut self.rng, "LOCK"), b"1".to_vec()]);
                short = true;
            }
            0..=2 => a.extend([kw(&mut self.rng, "LOCK"), self.long()]),
            _ => {
                let v = self.long();
                pre = Some(self.mk("config", q, vec![b"SET".to_vec(), b"lock-ms".to_vec(), v]));
            }
        }
        if fault {
            match self.rng.gen_range(0..3) {
                0 => a.clear(),
                1 => a.extend([b"LOCK".to_vec(), b"0".to_vec()]),
                _ => a.extend(self.number_fault(&["LOCK"])),
            }
        }
        if short {
            // Also after a fault: some faults are valid after all (`TAG -1`).
            self.qs.entry(q.to_string()).or_default().short_lock = true;
        }
        let mut o = self.mk("touch", q, a);
        o.sleep_after = short;
        (o, pre)
    }

    fn peek(&mut self, q: &str, fault: bool) -> Op {
        let mut a = Vec::new();
        if self.chance(0.8) {
            a.push({
                let w = self.pick(&["READY", "DELAYED", "INFLIGHT", "FAILED", "ERRORS"]);
                kw(&mut self.rng, w)
            });
        }
        if self.chance(0.4) {
            a.push(kw(&mut self.rng, "START"));
            a.push(self.pick(&["0", "1", "3", "100"]).as_bytes().to_vec());
        }
        if self.chance(0.5) {
            a.push(kw(&mut self.rng, "COUNT"));
            a.push(self.pick(&["1", "2", "10", "1000"]).as_bytes().to_vec());
        }
        if !a.is_empty() && self.chance(0.3) {
            a.rotate_left(1);
        }
        if fault {
            let extra: Vec<Vec<u8>> = match self.rng.gen_range(0..4) {
                0 => vec![b"READY".to_vec(), b"FAILED".to_vec()],
                1 => vec![b"COUNT".to_vec(), self.pick(&[&b"0"[..], b"1001"]).to_vec()],
                2 => vec![b"START".to_vec(), b"-1".to_vec()],
                _ => self.number_fault(&["START", "COUNT"]),
            };
            a.extend(extra);
        }
        self.mk("peek", q, a)
    }

    fn config(&mut self, q: &str, fault: bool) -> Op {
        let a: Vec<Vec<u8>> = if self.chance(0.35) {
            let mut a = vec![kw(&mut self.rng, "GET")];
            if self.chance(0.6) {
                let n = self.pick(&["lock-ms", "MAX-ATTEMPTS", "log", "ordered", "maxlen", "dedup-window-ms"]).as_bytes().to_vec();
                a.push(n);
            }
            if fault {
                a.push(self.pick(&[&b"nope"[..], b"x"]).to_vec());
            }
            a
        } else {
            let mut a = vec![kw(&mut self.rng, "SET")];
            let pairs = self.rng.gen_range(1..4);
            let bad_at = if fault { Some(self.rng.gen_range(0..pairs)) } else { None };
            for i in 0..pairs {
                a.extend(self.config_pair(bad_at == Some(i)));
            }
            if fault && self.chance(0.3) {
                match self.rng.gen_range(0..3) {
                    0 => a.truncate(2),
                    1 => a = vec![b"SET".to_vec()],
                    _ => a[0] = b"FROB".to_vec(),
                }
            }
            a
        };
        let a = if fault && self.chance(0.1) { vec![] } else { a };
        self.mk("config", q, a)
    }

    /// Feeds back what the first server answered: receipts, server-made ids, offsets.
    fn learn(&mut self, o: &Op, reply: &C) {
        if !valid_queue(&o.q) {
            return;
        }
        let st = self.qs.entry(o.q.clone()).or_default();
        match (o.name, reply) {
            ("push", C::Str(id)) => {
                if let Some((_, off)) = parse_id(id) {
                    st.server_ids.push(off);
                }
            }
            ("fetch", C::Arr(msgs)) => {
                for m in msgs {
                    // Named by delivery; each server's own receipt is used (see `op`).
                    st.receipts.extend(delivery_of(&m.field("receipt").bytes()));
                    st.max_offset = st.max_offset.max(m.field("offset").int() as u64);
                }
            }
            _ => {}
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

fn differential_run(seed: u64, steps: usize) {
    let mut p = Pair::new(Side::new("module", Edition::Module, module_server()), Side::new("lua", Edition::Lua, lua_server()), Some(seed));
    p.baseline();
    let mut g = Gen::new(seed);
    let started = Instant::now();
    // Start each queue different: one logs, one is ordered, one has a short log and maxlen.
    for (q, pairs) in [
        ("q1", &["log", "1", "max-attempts", "3"][..]),
        ("jobs.v2", &["ordered", "1", "log", "1", "log-maxlen", "10"][..]),
        ("a:b#c/d-e_f", &["maxlen", "30", "dedup-window-ms", "0"][..]),
    ] {
        let mut args = vec![&b"SET"[..]];
        args.extend(pairs.iter().map(|p| p.as_bytes()));
        let o = g.mk("config", q, args.iter().map(|a| a.to_vec()).collect());
        assert_eq!(p.run(&o).0, C::Status("OK".into()));
    }
    let mut done = 0;
    // What the run did, by command: [answers, errors, nulls or zeros].
    let mut outcomes: BTreeMap<&str, [u32; 3]> = BTreeMap::new();
    while done < steps {
        for o in g.next() {
            let (ra, _) = p.run(&o);
            g.learn(&o, &ra);
            let slot = match &ra {
                C::Err(_) => 1,
                C::Nil | C::Int(0) => 2,
                C::Arr(a) if a.is_empty() => 2,
                _ => 0,
            };
            outcomes.entry(o.name).or_default()[slot] += 1;
            done += 1;
            // Keep the offsets of every queue known to the generator (LOG FROM, REPLAY FROM).
            if valid_queue(&o.q) {
                if let Some(off) = p.a.raw.get(&o.q).and_then(|r| r.st.get(&b"offset"[..]).cloned()) {
                    g.qs.entry(o.q.clone()).or_default().max_offset = String::from_utf8_lossy(&off).parse().unwrap_or(0);
                }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the run takes too long");
    }
    p.compare_all();
    // The run did exercise the queues: sanity, so a generator that produced only errors fails.
    let mut totals = BTreeMap::new();
    for q in QUEUES {
        let o = op("stats", q, &[]);
        let (r, _) = p.run(&o);
        for (k, v) in stats_of(&r) {
            *totals.entry(k).or_insert(0) += v;
        }
    }
    for k in ["pushed", "acked", "retried", "dead", "errored", "dups"] {
        assert!(totals[k] > 0, "seed {seed}: the run never produced {k}: {totals:?}");
    }
    eprintln!(
        "seed {seed}: {done} steps in {:?}\n  [answers, errors, null/0/empty] {outcomes:?}\n  STATS totals {totals:?}",
        started.elapsed()
    );
    for name in ["push", "fetch", "ack", "nack", "touch", "recover", "peek", "get", "del", "requeue", "config", "log", "replay"] {
        let [ok, err, _] = outcomes.get(name).copied().unwrap_or_default();
        assert!(ok > 0 && err > 0, "seed {seed}: {name} never answered or never refused: {outcomes:?}");
    }
}

#[test]
fn random_commands_give_the_same_replies_and_keys_on_both_editions() {
    let steps = env_u64("RMQ_DIFF_STEPS").unwrap_or(5000) as usize;
    match env_u64("RMQ_DIFF_SEED") {
        Some(seed) => differential_run(seed, steps),
        None => {
            for seed in [1, 20251122] {
                differential_run(seed, steps / 2);
            }
        }
    }
}

/// An argument echoed in an error reply reads the same from both editions: the module's
/// text (Rust's lossy UTF-8, NUL/CR/LF as spaces), byte for byte, for thousands of byte
/// strings made of the awkward bytes (continuation bytes, overlong and surrogate leads, …).
#[test]
fn error_texts_echo_odd_bytes_alike() {
    let mut sides = [Side::new("module", Edition::Module, module_server()), Side::new("lua", Edition::Lua, lua_server())];
    let mut rng = SmallRng::seed_from_u64(7);
    let alphabet: &[u8] = &[
        0x00, b'\r', b'\n', b'a', b'~', 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee,
        0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff,
    ];
    let args: Vec<Vec<u8>> =
        (0..3000).map(|_| (0..rng.gen_range(1..7)).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect()).collect();
    let mut replies: Vec<Vec<C>> = Vec::new();
    for side in sides.iter_mut() {
        for (i, a) in args.iter().enumerate() {
            // An unknown keyword of PUSH, an unknown setting of CONFIG (served by the Lua core
            // inside the module too), a duplicate HEADER name.
            let o = match i % 3 {
                0 => op("push", "q", &[b"body", a]),
                1 => op("config", "q", &[b"SET", a, b"1"]),
                _ => op("push", "q", &[b"body", b"HEADER", a, b"1", b"HEADER", a, b"2"]),
            };
            let argv = side.argv(&o);
            let refs: Vec<&[u8]> = argv.iter().map(|x| x.as_slice()).collect();
            side.c.send(&refs);
        }
        replies.push((0..args.len()).map(|_| side.c.read()).collect());
    }
    for (i, a) in args.iter().enumerate() {
        let shown = String::from_utf8_lossy(a).replace(['\0', '\r', '\n'], " ");
        let want = match i % 3 {
            0 => format!("ERR syntax error near '{shown}'"),
            1 => format!("ERR unknown setting '{shown}'"),
            _ => format!("ERR HEADER '{shown}' given twice"),
        };
        for (side, r) in sides.iter().zip(&replies) {
            assert_eq!(r[i], C::Err(want.clone().into_bytes()), "{}: argument {:?}", side.name, a.escape_ascii().to_string());
        }
    }
    for side in sides.iter_mut() {
        assert_eq!(side.plain(&[b"KEYS", b"*"]), C::Arr(vec![]), "{}: a refused command wrote", side.name);
    }
}
