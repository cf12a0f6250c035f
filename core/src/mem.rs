//! An in-memory [`Store`], for unit tests of the queue logic without a server.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::store::{Key, Store};

/// A stream entry: its fields in order.
type Entry = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Default, Debug)]
pub struct MemStore {
    pub lists: HashMap<Key, VecDeque<Vec<u8>>>,
    pub zsets: HashMap<Key, BTreeMap<Vec<u8>, u64>>,
    pub hashes: HashMap<Key, BTreeMap<Vec<u8>, Vec<u8>>>,
    pub streams: HashMap<Key, VecDeque<Entry>>,
}

impl Store for MemStore {
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
        let Some(z) = self.zsets.get(&k) else { return Vec::new() };
        let mut all: Vec<(Vec<u8>, u64)> = z.iter().filter(|(_, s)| **s <= max).map(|(m, s)| (m.clone(), *s)).collect();
        all.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        all.truncate(limit);
        all
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
    fn hincrby(&mut self, k: Key, field: &[u8], by: i64) -> i64 {
        let h = self.hashes.entry(k).or_default();
        let old: i64 = h.get(field).and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
        h.insert(field.to_vec(), (old + by).to_string().into_bytes());
        old + by
    }
    fn xadd(&mut self, k: Key, maxlen: u64, fields: &[(&[u8], &[u8])]) {
        let s = self.streams.entry(k).or_default();
        s.push_back(fields.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect());
        while s.len() as u64 > maxlen {
            s.pop_front();
        }
    }
}
