//! The audit log: one JSON line per console action (who, what, which queue and ids, how many
//! were asked for and how many Redis changed), appended to a file and fsynced, and the latest
//! entries kept in memory for the audit page.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Entries the audit page can show.
const KEEP: usize = 1000;
/// At start, the tail of an existing file read back for the page.
const TAIL_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Increasing number of the entry in this file.
    pub seq: u64,
    /// Unix ms.
    pub time: u64,
    /// The authenticated user (`token` for a token), or `anonymous` on a loopback console
    /// without authentication.
    pub who: String,
    /// The client's address.
    pub from: String,
    /// `requeue`, `delete`, `recover`, `purge`, `push`, `settings`, `pause`, `resume`, and
    /// `replay` (from the archive).
    pub action: String,
    pub queue: String,
    /// The message ids acted on (requeue, delete; replay: the originals pushed again, at most
    /// 1000), or the pushed id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// The rest of the request: the state purged, the parts recovered, the settings set, the
    /// replay's target, run name and selection.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// How many messages the operator confirmed (when the action asks for confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<u64>,
    /// How many messages Redis reported changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected: Option<u64>,
    /// `ok`, or the error Redis gave.
    pub outcome: String,
}

impl Entry {
    pub fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: std::fs::File,
    recent: VecDeque<Entry>,
    next_seq: u64,
}

impl AuditLog {
    /// Opens (or creates, with its folder) the file and reads its latest entries back.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let from = len.saturating_sub(TAIL_BYTES);
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        // Lossy: the cut may fall inside a multi-byte character.
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<&str> = text.lines().collect();
        if from > 0 && !lines.is_empty() {
            lines.remove(0); // cut in the middle
        }
        let mut recent: VecDeque<Entry> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        while recent.len() > KEEP {
            recent.pop_front();
        }
        let next_seq = recent.back().map_or(1, |e| e.seq + 1);
        Ok(AuditLog { path: path.to_path_buf(), inner: Mutex::new(Inner { file, recent, next_seq }) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry (its `seq` is set here) and returns it as written.
    pub fn append(&self, mut e: Entry) -> std::io::Result<Entry> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        e.seq = g.next_seq;
        let mut line = serde_json::to_string(&e).map_err(std::io::Error::other)?;
        line.push('\n');
        g.file.write_all(line.as_bytes())?;
        g.file.sync_data()?;
        g.next_seq += 1;
        g.recent.push_back(e.clone());
        while g.recent.len() > KEEP {
            g.recent.pop_front();
        }
        Ok(e)
    }

    /// The latest entries, newest first.
    pub fn recent(&self, n: usize) -> Vec<Entry> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.recent.iter().rev().take(n).cloned().collect()
    }

    pub fn get(&self, seq: u64) -> Option<Entry> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.recent.iter().rev().find(|e| e.seq == seq).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> Entry {
        Entry {
            seq: 0,
            time: 1,
            who: "ann".into(),
            from: "127.0.0.1:5000".into(),
            action: action.into(),
            queue: "q".into(),
            ids: vec!["a".into()],
            detail: String::new(),
            confirmed: Some(1),
            affected: Some(1),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn entries_survive_a_restart_and_keep_counting() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(&p).unwrap();
        assert_eq!(log.append(entry("requeue")).unwrap().seq, 1);
        assert_eq!(log.append(entry("delete")).unwrap().seq, 2);
        drop(log);
        let log = AuditLog::open(&p).unwrap();
        let r = log.recent(10);
        assert_eq!(r.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["delete", "requeue"]);
        assert_eq!(log.append(entry("purge")).unwrap().seq, 3);
        assert_eq!(log.get(3).unwrap().action, "purge");
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3);
    }
}
