//! An in-memory [`Store`], for unit tests of the queue logic without a server.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::store::{InflightVisit, Key, Kind, Store, Walk};

/// A stream entry: its fields in order.
type Entry = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Default, Debug)]
pub struct MemStore {
    pub lists: HashMap<Key, VecDeque<Vec<u8>>>,
    pub zsets: HashMap<Key, BTreeMap<Vec<u8>, u64>>,
    pub hashes: HashMap<Key, BTreeMap<Vec<u8>, Vec<u8>>>,
    pub streams: HashMap<Key, VecDeque<Entry>>,
    /// How many times the queue logic asked to wake waiting consumers.
    pub wakes: u64,
    /// The source of "random" bytes: a counter, so tests are repeatable.
    pub random_counter: u64,
}

impl MemStore {
    /// The type of a key that exists (tests may put a key of the wrong type by hand).
    fn kind_of(&self, k: Key) -> Option<Kind> {
        if self.lists.get(&k).is_some_and(|l| !l.is_empty()) {
            Some(Kind::List)
        } else if self.zsets.get(&k).is_some_and(|z| !z.is_empty()) {
            Some(Kind::Zset)
        } else if self.hashes.get(&k).is_some_and(|h| !h.is_empty()) {
            Some(Kind::Hash)
        } else if self.streams.get(&k).is_some_and(|s| !s.is_empty()) {
            Some(Kind::Stream)
        } else {
            None
        }
    }

    fn sorted_zset(&self, k: Key) -> Vec<(Vec<u8>, u64)> {
        let mut all: Vec<(Vec<u8>, u64)> = self.zsets.get(&k).map(|z| z.iter().map(|(m, s)| (m.clone(), *s)).collect()).unwrap_or_default();
        all.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        all
    }
}

impl Store for MemStore {
    fn check(&mut self, keys: &[Key]) -> crate::Result<()> {
        for k in keys {
            if self.kind_of(*k).is_some_and(|kind| kind != k.kind()) {
                return Err(crate::Error::WrongType);
            }
        }
        Ok(())
    }
    fn exists(&mut self, k: Key) -> bool {
        self.lists.get(&k).is_some_and(|l| !l.is_empty())
            || self.zsets.get(&k).is_some_and(|z| !z.is_empty())
            || self.hashes.get(&k).is_some_and(|h| !h.is_empty())
            || self.streams.get(&k).is_some_and(|s| !s.is_empty())
    }
    fn llen(&mut self, k: Key) -> u64 {
        self.lists.get(&k).map_or(0, |l| l.len() as u64)
    }
    fn rpush(&mut self, k: Key, v: &[u8]) {
        self.lists.entry(k).or_default().push_back(v.to_vec());
    }
    fn lpush(&mut self, k: Key, v: &[u8]) {
        self.lists.entry(k).or_default().push_front(v.to_vec());
    }
    fn lpop(&mut self, k: Key) -> Option<Vec<u8>> {
        self.lists.get_mut(&k)?.pop_front()
    }
    fn lindex(&mut self, k: Key, index: u64) -> Option<Vec<u8>> {
        self.lists.get(&k)?.get(index as usize).cloned()
    }
    fn list_walk(&mut self, k: Key, visit: &mut dyn FnMut(u64, &[u8]) -> Walk) {
        for (i, v) in self.lists.get(&k).into_iter().flatten().enumerate() {
            if visit(i as u64, v) == Walk::Stop {
                break;
            }
        }
    }
    fn lremove(&mut self, k: Key, index: u64, value: &[u8]) {
        let l = self.lists.get_mut(&k).expect("lremove of a list that exists");
        assert_eq!(l.get(index as usize).map(|v| v.as_slice()), Some(value), "lremove of what the walk found");
        l.remove(index as usize);
    }
    fn zcard(&mut self, k: Key) -> u64 {
        self.zsets.get(&k).map_or(0, |z| z.len() as u64)
    }
    fn zadd(&mut self, k: Key, score: u64, member: &[u8]) {
        self.zsets.entry(k).or_default().insert(member.to_vec(), score);
    }
    fn zrem(&mut self, k: Key, member: &[u8]) -> bool {
        self.zsets.get_mut(&k).is_some_and(|z| z.remove(member).is_some())
    }
    fn zscore(&mut self, k: Key, member: &[u8]) -> Option<u64> {
        self.zsets.get(&k)?.get(member).copied()
    }
    fn zrange_upto(&mut self, k: Key, max: u64, limit: usize) -> Vec<(Vec<u8>, u64)> {
        let mut all = self.sorted_zset(k);
        all.retain(|(_, s)| *s <= max);
        all.truncate(limit);
        all
    }
    fn zset_walk(&mut self, k: Key, visit: &mut dyn FnMut(&[u8], u64) -> Walk) {
        for (m, s) in self.sorted_zset(k) {
            if visit(&m, s) == Walk::Stop {
                break;
            }
        }
    }
    fn inflight_walk(&mut self, visit: &mut InflightVisit) {
        for (receipt, deadline) in self.sorted_zset(Key::Bak) {
            let Some(rec) = self.hashes.get(&Key::Inf).and_then(|h| h.get(&receipt)) else { continue };
            if visit(&receipt, deadline, rec) == Walk::Stop {
                break;
            }
        }
    }
    fn hget(&mut self, k: Key, field: &[u8]) -> Option<Vec<u8>> {
        self.hashes.get(&k)?.get(field).cloned()
    }
    fn hset(&mut self, k: Key, field: &[u8], value: &[u8]) {
        self.hashes.entry(k).or_default().insert(field.to_vec(), value.to_vec());
    }
    fn hdel(&mut self, k: Key, field: &[u8]) -> bool {
        self.hashes.get_mut(&k).is_some_and(|h| h.remove(field).is_some())
    }
    fn hincrby(&mut self, k: Key, field: &[u8], by: i64) -> crate::Result<i64> {
        let h = self.hashes.entry(k).or_default();
        let old: i64 = match h.get(field) {
            Some(v) => std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()).ok_or(crate::Error::NotAnInteger)?,
            None => 0,
        };
        h.insert(field.to_vec(), (old + by).to_string().into_bytes());
        Ok(old + by)
    }
    fn xadd(&mut self, k: Key, maxlen: u64, fields: &[(&'static [u8], &[u8])]) {
        let s = self.streams.entry(k).or_default();
        s.push_back(fields.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect());
        while s.len() as u64 > maxlen {
            s.pop_front();
        }
    }
    fn random(&mut self, out: &mut [u8]) {
        for b in out {
            self.random_counter += 1;
            *b = self.random_counter as u8;
        }
    }
    fn wake(&mut self) {
        self.wakes += 1;
    }
}
