//! The local spool: where the producer keeps messages that Redis could not take.
//!
//! A spool is a directory of *segments* (`0000000000000001.seg`, …), append-only files of
//! framed records, plus a `quarantine` file in the same framing. A frame is
//!
//! ```text
//! magic "RMQs" (4) | len: u32 LE (4) | crc32(len bytes ‖ payload): u32 LE (4) | payload (len)
//! ```
//!
//! and the payload is a format byte (1) followed by the postcard encoding of
//! [`SpoolRecord`]. Writers append to the newest segment and `fsync` before they return;
//! a drain first *seals* the segments (later appends go to a new one), then re-sends the
//! sealed ones oldest first and deletes each once Redis took all of it. How far a drain got
//! inside a segment is kept in `<segment>.pos`, so a drain that stops half way goes on from
//! there (a record re-sent twice is harmless: its id makes the server drop the copy).
//!
//! Damage is told apart like this:
//! - a frame is good when its CRC matches (the magic is only used to find frames again);
//! - bad bytes followed by a good frame are a *corrupt record*: they go to the quarantine
//!   file with the reason, and the drain reports them;
//! - a complete frame (its magic right and its length inside the file) at the end of a
//!   segment whose CRC does not match is corrupt too;
//! - anything else at the end of a segment is a *torn tail*, the remains of a write that a
//!   crash interrupted before its `fsync` returned (so nobody was told it was stored): it is
//!   cut off, and the number of bytes cut is reported.
//!
//! Several processes may share a spool: appends and sealing hold an exclusive `flock` on
//! `LOCK`, and a drain holds one on `DRAIN` for its whole run.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The magic that starts every frame.
pub const MAGIC: [u8; 4] = *b"RMQs";
/// Header bytes before the payload: magic, length, CRC.
pub const HEADER: usize = 12;
/// The largest payload accepted (Redis's own limit for a bulk string is 512 MiB).
pub const MAX_PAYLOAD: usize = 512 * 1024 * 1024 + 64 * 1024;
/// The format byte of a [`SpoolRecord`] payload.
const RECORD_FORMAT: u8 = 1;
/// The format byte of a [`QuarantineEntry`] payload.
const QUARANTINE_FORMAT: u8 = 1;
/// A new segment is started once the newest one is this big.
pub const SEGMENT_ROLL_BYTES: u64 = 64 * 1024 * 1024;
/// Records handed to the sender at once during a drain.
pub const DRAIN_BATCH: usize = 500;

/// One spooled message: everything needed to PUSH it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolRecord {
    pub queue: String,
    pub id: String,
    pub body: Vec<u8>,
    pub tag: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    /// Absolute due time (unix ms) for a delayed message, so a message re-sent an hour later
    /// is not delayed again from that later time.
    pub at: Option<u64>,
    /// When it was spooled (unix ms).
    pub spooled_at: u64,
}

impl SpoolRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_FORMAT];
        // Serializing plain structs of strings, bytes and integers into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of a SpoolRecord"));
        out
    }

    pub fn decode(payload: &[u8]) -> Result<SpoolRecord, String> {
        match payload.first() {
            Some(&RECORD_FORMAT) => postcard::from_bytes(&payload[1..]).map_err(|e| format!("undecodable record: {e}")),
            Some(v) => Err(format!("unknown record format {v}")),
            None => Err("empty record".into()),
        }
    }
}

/// A record or a stretch of bytes moved aside: kept for a person to look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// The segment it came from.
    pub segment: String,
    /// Its byte offset in that segment.
    pub offset: u64,
    /// Why it was moved aside.
    pub reason: String,
    /// When (unix ms).
    pub time: u64,
    /// The raw bytes of the damaged frame, or the encoded record that Redis refused.
    pub bytes: Vec<u8>,
}

impl QuarantineEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![QUARANTINE_FORMAT];
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of a QuarantineEntry"));
        out
    }

    pub fn decode(payload: &[u8]) -> Result<QuarantineEntry, String> {
        match payload.first() {
            Some(&QUARANTINE_FORMAT) => postcard::from_bytes(&payload[1..]).map_err(|e| e.to_string()),
            Some(v) => Err(format!("unknown quarantine format {v}")),
            None => Err("empty entry".into()),
        }
    }

    /// The record, when the entry holds a whole, decodable record (a refused one).
    pub fn record(&self) -> Option<SpoolRecord> {
        SpoolRecord::decode(&self.bytes).ok()
    }
}

/// Appends one frame around `payload` to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// What a scan of a segment found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A good frame: its payload is `buf[start + HEADER .. end]`.
    Frame { start: usize, end: usize },
    /// Damaged bytes `buf[start..end]`.
    Corrupt { start: usize, end: usize, reason: String },
    /// Torn tail from `start` to the end of the buffer.
    Torn { start: usize },
}

/// The end of the good frame at `pos`, or why there is none. A frame is good when its CRC
/// matches; `magic_ok` tells whether it also started with the magic.
fn check_frame(buf: &[u8], pos: usize) -> Result<usize, FrameFault> {
    if buf.len() - pos < HEADER {
        return Err(FrameFault::Short);
    }
    let magic_ok = buf[pos..pos + 4] == MAGIC;
    let len_bytes: [u8; 4] = buf[pos + 4..pos + 8].try_into().unwrap();
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes(buf[pos + 8..pos + 12].try_into().unwrap());
    if len > MAX_PAYLOAD {
        return Err(if magic_ok { FrameFault::BadLength } else { FrameFault::NoMagic });
    }
    let end = pos + HEADER + len;
    if end > buf.len() {
        return Err(if magic_ok { FrameFault::Incomplete } else { FrameFault::NoMagic });
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(&buf[pos + HEADER..end]);
    if h.finalize() == crc {
        Ok(end)
    } else if magic_ok {
        Err(FrameFault::Crc { end })
    } else {
        Err(FrameFault::NoMagic)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameFault {
    Short,
    NoMagic,
    BadLength,
    Incomplete,
    Crc { end: usize },
}

impl FrameFault {
    fn reason(self) -> &'static str {
        match self {
            FrameFault::Short | FrameFault::Incomplete => "truncated frame",
            FrameFault::NoMagic => "bad frame header",
            FrameFault::BadLength => "bad frame length",
            FrameFault::Crc { .. } => "CRC mismatch",
        }
    }
}

/// The next good frame that starts with the magic at or after `from`.
fn next_good(buf: &[u8], from: usize) -> Option<usize> {
    let mut p = from;
    while p + HEADER <= buf.len() {
        match buf[p..].windows(4).position(|w| w == MAGIC) {
            None => return None,
            Some(i) => {
                let at = p + i;
                if check_frame(buf, at).is_ok() {
                    return Some(at);
                }
                p = at + 1;
            }
        }
    }
    None
}

/// Splits `buf[from..]` into good frames, corrupt stretches and a torn tail.
pub fn scan(buf: &[u8], from: usize) -> Vec<Item> {
    let mut items = Vec::new();
    let mut pos = from;
    while pos < buf.len() {
        match check_frame(buf, pos) {
            Ok(end) => {
                items.push(Item::Frame { start: pos, end });
                pos = end;
            }
            Err(fault) => {
                if let Some(next) = next_good(buf, pos + 1) {
                    // Good data follows: whatever lies between is damage, not a torn tail.
                    items.push(Item::Corrupt { start: pos, end: next, reason: fault.reason().into() });
                    pos = next;
                } else if let FrameFault::Crc { end } = fault {
                    // A complete frame with the magic right but the CRC wrong: its bytes were
                    // damaged after they were written.
                    items.push(Item::Corrupt { start: pos, end, reason: fault.reason().into() });
                    pos = end;
                } else {
                    items.push(Item::Torn { start: pos });
                    break;
                }
            }
        }
    }
    items
}

/// The spool as found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpoolStatus {
    /// Records waiting to be re-sent.
    pub records: u64,
    /// Bytes of those records (frames included).
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Damaged stretches found in the segments (they are quarantined by the next drain).
    pub corrupt: u64,
    /// Entries in the quarantine file.
    pub quarantined: u64,
    /// Size of the quarantine file.
    pub quarantine_bytes: u64,
}

/// What opening a spool repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of torn tail cut off the newest segment.
    pub torn_bytes: u64,
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Records Redis took.
    pub sent: u64,
    /// Records Redis refused for good (moved to the quarantine, with Redis's error).
    pub refused: u64,
    /// Damaged stretches moved to the quarantine.
    pub corrupt: u64,
    /// Bytes of torn tails cut off.
    pub torn_bytes: u64,
    /// Records still in the spool afterwards (sealed segments only; new appends not counted).
    pub remaining: u64,
    /// Why the drain stopped early (Redis unavailable …), if it did.
    pub stopped: Option<String>,
    /// True when another process was draining, so this one did nothing.
    pub busy: bool,
}

/// What the sender made of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Redis has it (stored now, or a duplicate of what it already had).
    Taken,
    /// Redis refused it for good: it goes to the quarantine with this reason.
    Refused(String),
}

/// The default spool directory: `$RMQ_SPOOL` when set, else `rmq/spool` in the user's state
/// directory (`$XDG_STATE_HOME`, or `~/.local/state`), never the working directory (a
/// command run from another directory would not find what an earlier one spooled). Only
/// without any home directory: `./rmq-spool`.
pub fn default_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("RMQ_SPOOL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".local/state")));
    match state {
        Some(s) => s.join("rmq").join("spool"),
        None => PathBuf::from("rmq-spool"),
    }
}

/// True when the spool at `dir` holds records not yet re-sent. Opens nothing and creates
/// nothing: a directory that does not exist holds nothing.
pub fn has_pending(dir: &Path) -> io::Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let spool = Spool { dir: dir.to_path_buf(), mu: Mutex::new(()) };
    spool.has_data()
}

/// The spool directory.
pub struct Spool {
    dir: PathBuf,
    /// Serialises appends and sealing inside this process (flock serialises processes).
    mu: Mutex<()>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn seg_name(n: u64) -> String {
    format!("{n:016}.seg")
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Holds an exclusive flock on a file until dropped.
struct FileLock(File);

impl FileLock {
    fn lock(path: &Path) -> io::Result<FileLock> {
        let f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        f.lock()?;
        Ok(FileLock(f))
    }

    fn try_lock(path: &Path) -> io::Result<Option<FileLock>> {
        let f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(FileLock(f))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Spool {
    /// Opens (creating it if needed) the spool at `dir` and cuts a torn tail off its newest
    /// segment.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<(Spool, OpenReport)> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let spool = Spool { dir, mu: Mutex::new(()) };
        let report = spool.repair_newest()?;
        Ok((spool, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("LOCK")
    }

    fn quarantine_path(&self) -> PathBuf {
        self.dir.join("quarantine")
    }

    /// Segment numbers, oldest first.
    fn segments(&self) -> io::Result<Vec<u64>> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok()) {
                v.push(n);
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    fn seg_path(&self, n: u64) -> PathBuf {
        self.dir.join(seg_name(n))
    }

    fn pos_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:016}.pos"))
    }

    /// Where a drain got to in segment `n` (0 when it never started or the file is bad).
    fn read_pos(&self, n: u64) -> u64 {
        fs::read_to_string(self.pos_path(n)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    fn write_pos(&self, n: u64, pos: u64) -> io::Result<()> {
        let tmp = self.dir.join(format!("{n:016}.pos.tmp"));
        fs::write(&tmp, pos.to_string())?;
        fs::rename(&tmp, self.pos_path(n))
    }

    fn repair_newest(&self) -> io::Result<OpenReport> {
        let _g = self.mu.lock().unwrap_or_else(|e| e.into_inner());
        let _fl = FileLock::lock(&self.lock_path())?;
        let mut report = OpenReport::default();
        let segs = self.segments()?;
        if let Some(&n) = segs.last() {
            report.torn_bytes = self.cut_torn_tail(n)?;
        }
        self.remove_orphan_positions(&segs)?;
        Ok(report)
    }

    /// Removes the `.pos` files whose segment is gone (a drain that crashed between deleting
    /// a segment and its `.pos`). Left in place, one would make a later segment of the same
    /// number start half way, skipping records.
    fn remove_orphan_positions(&self, segs: &[u64]) -> io::Result<()> {
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let Some(n) = name.to_str().and_then(|s| s.strip_suffix(".pos")).and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if !segs.contains(&n) {
                fs::remove_file(self.pos_path(n))?;
            }
        }
        Ok(())
    }

    /// Cuts a torn tail off segment `n` (the caller holds the append lock). Returns the bytes cut.
    fn cut_torn_tail(&self, n: u64) -> io::Result<u64> {
        let path = self.seg_path(n);
        let buf = fs::read(&path)?;
        if let Some(Item::Torn { start }) = scan(&buf, 0).last() {
            let cut = (buf.len() - start) as u64;
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(*start as u64)?;
            f.sync_all()?;
            tracing::warn!(segment = %path.display(), bytes = cut, "rmq spool: cut a torn tail left by a crash");
            return Ok(cut);
        }
        Ok(0)
    }

    /// Appends `records` and fsyncs them: when this returns Ok, they are on disk. Either all
    /// of them are appended or an error is returned (a partial write is cut off again).
    pub fn append(&self, records: &[SpoolRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            let payload = r.encode();
            if payload.len() > MAX_PAYLOAD {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "message too large for the spool"));
            }
            frame(&payload, &mut buf);
        }
        let _g = self.mu.lock().unwrap_or_else(|e| e.into_inner());
        let _fl = FileLock::lock(&self.lock_path())?;
        let segs = self.segments()?;
        let mut n = segs.last().copied().unwrap_or(0);
        let mut created = false;
        if n == 0 || fs::metadata(self.seg_path(n)).map(|m| m.len() >= SEGMENT_ROLL_BYTES).unwrap_or(false) {
            n += 1;
            created = true;
        }
        let path = self.seg_path(n);
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        let before = f.metadata()?.len();
        let res = f.write_all(&buf).and_then(|_| f.sync_data());
        if let Err(e) = res {
            // Do not leave half a batch behind: the caller is told it failed.
            let _ = f.set_len(before);
            let _ = f.sync_all();
            return Err(e);
        }
        if created {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// True when some segment holds bytes (a cheap look: sizes only).
    pub fn has_data(&self) -> io::Result<bool> {
        for n in self.segments()? {
            match fs::metadata(self.seg_path(n)) {
                Ok(m) if m.len() > self.read_pos(n) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Reads what the spool holds. It changes nothing.
    pub fn status(&self) -> io::Result<SpoolStatus> {
        let mut st = SpoolStatus::default();
        for n in self.segments()? {
            st.segments += 1;
            let buf = match fs::read(self.seg_path(n)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let from = (self.read_pos(n) as usize).min(buf.len());
            for item in scan(&buf, from) {
                match item {
                    Item::Frame { start, end } => {
                        st.records += 1;
                        st.bytes += (end - start) as u64;
                    }
                    Item::Corrupt { .. } => st.corrupt += 1,
                    Item::Torn { .. } => {}
                }
            }
        }
        match fs::read(self.quarantine_path()) {
            Ok(buf) => {
                st.quarantine_bytes = buf.len() as u64;
                st.quarantined = scan(&buf, 0).iter().filter(|i| matches!(i, Item::Frame { .. })).count() as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(st)
    }

    /// The quarantine's entries, oldest first.
    pub fn quarantine(&self) -> io::Result<Vec<QuarantineEntry>> {
        let buf = match fs::read(self.quarantine_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for item in scan(&buf, 0) {
            if let Item::Frame { start, end } = item {
                if let Ok(e) = QuarantineEntry::decode(&buf[start + HEADER..end]) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    fn append_quarantine(&self, entries: &[QuarantineEntry]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            frame(&e.encode(), &mut buf);
        }
        let path = self.quarantine_path();
        let existed = path.exists();
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        f.write_all(&buf)?;
        f.sync_data()?;
        if !existed {
            fsync_dir(&self.dir)?;
        }
        for e in entries {
            tracing::error!(segment = %e.segment, offset = e.offset, reason = %e.reason,
                "rmq spool: a record was moved to the quarantine");
        }
        Ok(())
    }

    /// Starts a new segment when the newest one holds anything, so what exists now can be
    /// drained while new appends go elsewhere. Returns the sealed segments, oldest first.
    fn seal(&self, torn: &mut u64) -> io::Result<Vec<u64>> {
        let _g = self.mu.lock().unwrap_or_else(|e| e.into_inner());
        let _fl = FileLock::lock(&self.lock_path())?;
        let segs = self.segments()?;
        let Some(&last) = segs.last() else {
            return Ok(Vec::new());
        };
        let len = fs::metadata(self.seg_path(last))?.len();
        if len == 0 {
            return Ok(segs[..segs.len() - 1].to_vec());
        }
        // The newest segment may end in a torn tail from a crashed writer: cut it now, while
        // no writer can append after it.
        *torn += self.cut_torn_tail(last)?;
        File::create(self.seg_path(last + 1))?.sync_all()?;
        fsync_dir(&self.dir)?;
        Ok(segs)
    }

    /// Re-sends the spool, oldest first, through `send`, which gets batches of records and
    /// answers, per record, whether Redis took it or refused it for good; an `Err` means Redis
    /// is unavailable and stops the drain (what was not sent stays, in order). `on_total` is
    /// told how many records the sealed segments hold before sending starts, and `progress`
    /// the number handled so far after each batch.
    pub fn drain<S, P>(&self, mut send: S, mut on_total: impl FnMut(u64), mut progress: P) -> io::Result<DrainReport>
    where
        S: FnMut(&[SpoolRecord]) -> Result<Vec<SendOutcome>, String>,
        P: FnMut(u64),
    {
        let mut report = DrainReport::default();
        let Some(_drain_lock) = FileLock::try_lock(&self.dir.join("DRAIN"))? else {
            report.busy = true;
            return Ok(report);
        };
        let sealed = self.seal(&mut report.torn_bytes)?;
        // Count first, for progress bars.
        let mut total = 0u64;
        for &n in &sealed {
            if let Ok(buf) = fs::read(self.seg_path(n)) {
                let from = (self.read_pos(n) as usize).min(buf.len());
                total += scan(&buf, from).iter().filter(|i| matches!(i, Item::Frame { .. })).count() as u64;
            }
        }
        on_total(total);
        let mut handled = 0u64;
        for &n in &sealed {
            if report.stopped.is_some() {
                break;
            }
            let path = self.seg_path(n);
            let buf = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let from = (self.read_pos(n) as usize).min(buf.len());
            let items = scan(&buf, from);
            let seg = seg_name(n);
            // Walk the items, sending good frames in batches; damaged ones are quarantined in
            // their place in the order, so the position only ever moves past handled bytes.
            let mut batch: Vec<(SpoolRecord, usize, usize)> = Vec::new();
            let mut pos = from;
            let mut idx = 0;
            loop {
                let item = items.get(idx);
                // Decoded before the flush decision: a frame that does not decode is moved
                // aside like a corrupt one, so the records before it must be sent first (else
                // `.pos` would pass records that were never sent).
                let decoded = match item {
                    Some(Item::Frame { start, end }) => Some(SpoolRecord::decode(&buf[start + HEADER..*end])),
                    _ => None,
                };
                let flush = match (item, &decoded) {
                    (None, _) => true,
                    (Some(Item::Frame { .. }), Some(Ok(_))) => batch.len() >= DRAIN_BATCH,
                    _ => true,
                };
                if flush && !batch.is_empty() {
                    let recs: Vec<SpoolRecord> = batch.iter().map(|(r, _, _)| r.clone()).collect();
                    match send(&recs) {
                        Err(why) => {
                            report.stopped = Some(why);
                            break;
                        }
                        Ok(outcomes) => {
                            let mut refused = Vec::new();
                            for ((rec, start, _), out) in batch.iter().zip(outcomes.iter()) {
                                match out {
                                    SendOutcome::Taken => report.sent += 1,
                                    SendOutcome::Refused(why) => {
                                        report.refused += 1;
                                        refused.push(QuarantineEntry {
                                            segment: seg.clone(),
                                            offset: *start as u64,
                                            reason: format!("refused by Redis: {why}"),
                                            time: now_ms(),
                                            bytes: rec.encode(),
                                        });
                                    }
                                }
                            }
                            if outcomes.len() < batch.len() {
                                // A sender that answered for fewer records than it was given
                                // is a bug; stop rather than lose the rest.
                                report.sent -= outcomes.iter().filter(|o| **o == SendOutcome::Taken).count() as u64;
                                report.stopped = Some("sender answered for fewer records than sent".into());
                                break;
                            }
                            self.append_quarantine(&refused)?;
                            pos = batch.last().unwrap().2;
                            handled += batch.len() as u64;
                            batch.clear();
                            self.write_pos(n, pos as u64)?;
                            progress(handled);
                        }
                    }
                }
                let Some(item) = item else { break };
                match item {
                    Item::Frame { start, end } => {
                        match decoded.expect("a frame is decoded above") {
                            Ok(rec) => batch.push((rec, *start, *end)),
                            Err(why) => {
                                // A frame whose CRC matches but whose payload does not decode (a
                                // newer format, or a bug): keep it aside, never drop it.
                                self.append_quarantine(&[QuarantineEntry {
                                    segment: seg.clone(),
                                    offset: *start as u64,
                                    reason: why,
                                    time: now_ms(),
                                    bytes: buf[*start..*end].to_vec(),
                                }])?;
                                report.corrupt += 1;
                                pos = *end;
                                handled += 1;
                                self.write_pos(n, pos as u64)?;
                            }
                        }
                    }
                    Item::Corrupt { start, end, reason } => {
                        self.append_quarantine(&[QuarantineEntry {
                            segment: seg.clone(),
                            offset: *start as u64,
                            reason: reason.clone(),
                            time: now_ms(),
                            bytes: buf[*start..*end].to_vec(),
                        }])?;
                        report.corrupt += 1;
                        pos = *end;
                        self.write_pos(n, pos as u64)?;
                    }
                    Item::Torn { start } => {
                        report.torn_bytes += (buf.len() - start) as u64;
                        tracing::warn!(segment = %seg, bytes = buf.len() - start,
                            "rmq spool: cut a torn tail left by a crash");
                        pos = buf.len();
                    }
                }
                idx += 1;
            }
            if report.stopped.is_none() && pos >= buf.len() {
                // All of it handled: the segment goes, then its .pos. A crash in between
                // leaves a .pos without its segment, which the next open removes, so it can
                // never apply to a later segment of the same number.
                fs::remove_file(&path)?;
                let _ = fs::remove_file(self.pos_path(n));
                fsync_dir(&self.dir)?;
            }
        }
        report.remaining = total.saturating_sub(handled);
        if report.stopped.is_none() {
            report.remaining = 0;
        }
        Ok(report)
    }
}

/// Reads a whole file (used by tools and tests).
pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> SpoolRecord {
        SpoolRecord {
            queue: "q".into(),
            id: format!("id-{i}"),
            body: format!("body {i}").into_bytes(),
            tag: if i.is_multiple_of(2) { "even".into() } else { String::new() },
            key: String::new(),
            headers: vec![("h".into(), i.to_string())],
            at: None,
            spooled_at: 1,
        }
    }

    fn drain_all(spool: &Spool) -> (DrainReport, Vec<SpoolRecord>) {
        let mut got = Vec::new();
        let r = spool
            .drain(
                |b| {
                    got.extend_from_slice(b);
                    Ok(vec![SendOutcome::Taken; b.len()])
                },
                |_| {},
                |_| {},
            )
            .unwrap();
        (r, got)
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let mut segs: Vec<_> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
        segs.sort();
        assert_eq!(segs.len(), 1, "{segs:?}");
        segs.pop().unwrap()
    }

    #[test]
    fn record_roundtrip() {
        let r = rec(3);
        assert_eq!(SpoolRecord::decode(&r.encode()).unwrap(), r);
        assert!(SpoolRecord::decode(&[9, 1, 2]).unwrap_err().contains("unknown record format"));
    }

    #[test]
    fn append_then_drain_in_order_and_removes() {
        let d = tempfile::tempdir().unwrap();
        let (s, rep) = Spool::open(d.path()).unwrap();
        assert_eq!(rep.torn_bytes, 0);
        let recs: Vec<_> = (0..1200).map(rec).collect();
        s.append(&recs[..700]).unwrap();
        for r in &recs[700..] {
            s.append(std::slice::from_ref(r)).unwrap();
        }
        let st = s.status().unwrap();
        assert_eq!(st.records, 1200);
        assert_eq!(st.quarantined, 0);
        let (r, got) = drain_all(&s);
        assert_eq!(r.sent, 1200);
        assert_eq!(r.remaining, 0);
        assert_eq!(got, recs);
        let st = s.status().unwrap();
        assert_eq!(st.records, 0);
        assert_eq!(st.bytes, 0);
        // A second drain has nothing to do.
        let (r, got) = drain_all(&s);
        assert_eq!((r.sent, got.len()), (0, 0));
    }

    #[test]
    fn drain_stopped_by_redis_goes_on_from_where_it_stopped() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        let recs: Vec<_> = (0..1300).map(rec).collect();
        s.append(&recs).unwrap();
        let mut calls = 0;
        let mut got = Vec::new();
        let r = s
            .drain(
                |b| {
                    calls += 1;
                    if calls == 2 {
                        return Err("redis down".into());
                    }
                    got.extend_from_slice(b);
                    Ok(vec![SendOutcome::Taken; b.len()])
                },
                |_| {},
                |_| {},
            )
            .unwrap();
        assert_eq!(r.sent, DRAIN_BATCH as u64);
        assert_eq!(r.stopped.as_deref(), Some("redis down"));
        assert_eq!(r.remaining, 1300 - DRAIN_BATCH as u64);
        assert_eq!(s.status().unwrap().records, 1300 - DRAIN_BATCH as u64);
        // Appends made meanwhile go after the sealed ones.
        s.append(&[rec(5000)]).unwrap();
        let (r, rest) = drain_all(&s);
        assert_eq!(r.sent, 1300 - DRAIN_BATCH as u64 + 1);
        got.extend(rest);
        let mut want = recs.clone();
        want.push(rec(5000));
        assert_eq!(got, want);
    }

    #[test]
    fn torn_tail_is_cut_at_open() {
        let d = tempfile::tempdir().unwrap();
        {
            let (s, _) = Spool::open(d.path()).unwrap();
            s.append(&(0..5).map(rec).collect::<Vec<_>>()).unwrap();
        }
        let seg = only_segment(d.path());
        let good_len = fs::metadata(&seg).unwrap().len();
        // Half a frame, as a crash during write leaves it.
        let mut half = Vec::new();
        frame(&rec(99).encode(), &mut half);
        half.truncate(half.len() / 2);
        OpenOptions::new().append(true).open(&seg).unwrap().write_all(&half).unwrap();
        let (s, rep) = Spool::open(d.path()).unwrap();
        assert_eq!(rep.torn_bytes, half.len() as u64);
        assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
        s.append(&[rec(6)]).unwrap();
        let (r, got) = drain_all(&s);
        assert_eq!(r.corrupt, 0);
        assert_eq!(got.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ["id-0", "id-1", "id-2", "id-3", "id-4", "id-6"]);
        assert_eq!(s.status().unwrap().quarantined, 0);
    }

    #[test]
    fn zeroed_tail_is_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        s.append(&[rec(1), rec(2)]).unwrap();
        let seg = only_segment(d.path());
        OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[0u8; 100]).unwrap();
        let (r, got) = drain_all(&s);
        assert_eq!(got.len(), 2);
        assert_eq!(r.torn_bytes, 100);
        assert_eq!(r.corrupt, 0);
    }

    /// Flips one byte inside record `victim`'s payload of a 10-record segment, adds a torn
    /// tail, and checks every other record is delivered and the bad one is quarantined.
    #[test]
    fn flipped_byte_is_quarantined_and_torn_tail_cut() {
        for victim in [0usize, 4, 9] {
            let d = tempfile::tempdir().unwrap();
            let (s, _) = Spool::open(d.path()).unwrap();
            let recs: Vec<_> = (0..10).map(rec).collect();
            s.append(&recs).unwrap();
            let seg = only_segment(d.path());
            let mut buf = fs::read(&seg).unwrap();
            // Find the victim's frame start.
            let starts: Vec<usize> = scan(&buf, 0)
                .into_iter()
                .map(|i| match i {
                    Item::Frame { start, .. } => start,
                    other => panic!("{other:?}"),
                })
                .collect();
            buf[starts[victim] + HEADER + 3] ^= 0x40;
            let mut torn = Vec::new();
            frame(&rec(77).encode(), &mut torn);
            torn.truncate(7);
            buf.extend_from_slice(&torn);
            fs::write(&seg, &buf).unwrap();

            let st = s.status().unwrap();
            assert_eq!(st.records, 9);
            assert_eq!(st.corrupt, 1);
            let (r, got) = drain_all(&s);
            assert_eq!(r.sent, 9, "victim {victim}");
            assert_eq!(r.corrupt, 1);
            assert_eq!(r.torn_bytes, 7);
            let want: Vec<_> = recs.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, r)| r.clone()).collect();
            assert_eq!(got, want);
            let q = s.quarantine().unwrap();
            assert_eq!(q.len(), 1);
            assert_eq!(q[0].offset, starts[victim] as u64);
            assert_eq!(q[0].reason, "CRC mismatch");
            let st = s.status().unwrap();
            assert_eq!((st.records, st.quarantined, st.corrupt), (0, 1, 0));
        }
    }

    #[test]
    fn flipped_length_or_magic() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        let recs: Vec<_> = (0..6).map(rec).collect();
        s.append(&recs).unwrap();
        let seg = only_segment(d.path());
        let mut buf = fs::read(&seg).unwrap();
        let starts: Vec<usize> = scan(&buf, 0)
            .into_iter()
            .map(|i| match i {
                Item::Frame { start, .. } => start,
                _ => unreachable!(),
            })
            .collect();
        // Record 1: its length made huge (quarantined). Record 3: its magic damaged; its CRC
        // still matches, so it is kept.
        buf[starts[1] + 7] = 0x7f;
        buf[starts[3]] = b'X';
        fs::write(&seg, &buf).unwrap();
        let (r, got) = drain_all(&s);
        let ids: Vec<_> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["id-0", "id-2", "id-3", "id-4", "id-5"]);
        assert_eq!(r.corrupt, 1);
        assert_eq!(s.quarantine().unwrap()[0].reason, "bad frame length");
    }

    /// A frame whose CRC is right but whose record does not decode (a newer format) after
    /// records that were not sent yet: when Redis is down, those records stay in the spool.
    #[test]
    fn an_undecodable_frame_never_moves_the_position_past_unsent_records() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        s.append(&[rec(1), rec(2)]).unwrap();
        let seg = only_segment(d.path());
        let mut buf = fs::read(&seg).unwrap();
        frame(&[9, 1, 2, 3], &mut buf);
        frame(&rec(3).encode(), &mut buf);
        fs::write(&seg, &buf).unwrap();
        let r = s.drain(|_| Err("redis down".into()), |_| {}, |_| {}).unwrap();
        assert_eq!(r.stopped.as_deref(), Some("redis down"));
        let (r, got) = drain_all(&s);
        let ids: Vec<_> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["id-1", "id-2", "id-3"]);
        assert_eq!(r.corrupt, 1);
        assert!(s.quarantine().unwrap()[0].reason.contains("unknown record format"));
    }

    #[test]
    fn refused_records_are_quarantined_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        s.append(&(0..4).map(rec).collect::<Vec<_>>()).unwrap();
        let r = s
            .drain(
                |b| {
                    Ok(b.iter()
                        .map(|r| if r.id == "id-2" { SendOutcome::Refused("ERR nope".into()) } else { SendOutcome::Taken })
                        .collect())
                },
                |_| {},
                |_| {},
            )
            .unwrap();
        assert_eq!((r.sent, r.refused), (3, 1));
        let q = s.quarantine().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].record().unwrap().id, "id-2");
        assert!(q[0].reason.contains("ERR nope"));
    }

    #[test]
    fn a_position_left_by_a_crashed_drain_never_skips_a_later_segment() {
        let d = tempfile::tempdir().unwrap();
        // A drain deleted segment 1 and crashed before deleting its .pos.
        fs::write(d.path().join("0000000000000001.pos"), b"100").unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        // The next segment 1 must be sent whole.
        let recs: Vec<_> = (0..5).map(rec).collect();
        s.append(&recs).unwrap();
        assert_eq!(s.status().unwrap().records, 5);
        let (r, got) = drain_all(&s);
        assert_eq!(r.sent, 5);
        assert_eq!(got, recs);
    }

    #[test]
    fn unwritable_spool_fails_the_append() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("spool");
        let (s, _) = Spool::open(&dir).unwrap();
        // Replace the directory with a file: every later write fails, even as root.
        fs::remove_dir_all(&dir).unwrap();
        fs::write(&dir, b"not a dir").unwrap();
        assert!(s.append(&[rec(1)]).is_err());
        // And a spool that cannot be created fails to open.
        assert!(Spool::open(dir.join("sub")).is_err());
    }

    #[test]
    fn a_second_drainer_is_told_busy() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        let (s2, _) = Spool::open(d.path()).unwrap();
        s.append(&[rec(1)]).unwrap();
        let r = s
            .drain(
                |b| {
                    let (r2, got2) = drain_all(&s2);
                    assert!(r2.busy);
                    assert!(got2.is_empty());
                    Ok(vec![SendOutcome::Taken; b.len()])
                },
                |_| {},
                |_| {},
            )
            .unwrap();
        assert_eq!(r.sent, 1);
    }
}
