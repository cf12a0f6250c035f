//! A lookup by id (GET, DEL, REQUEUE) that reads a big queue a slice at a time, so that Redis
//! serves other clients between slices, and still answers as if it had read the queue at
//! one instant.
//!
//! The reader (the module's timer) visits each state in turn: lists by index, the delayed zset
//! and the in-flight hash with a SCAN cursor (an element present for the whole scan is seen at
//! least once). Between two slices the queue's own commands go on changing it, and tell the
//! lookup what they did:
//! - a record written anywhere ([`Lookup::landed_in_list`], [`Lookup::visit_delayed`],
//!   [`Lookup::visit_inflight`]): if its id is wanted, it is a candidate
//!   where it landed, whether or not the scan had passed that place. This is how a message
//!   that moves (FETCH, NACK, the guard, RECOVER) while the scan runs is never missed;
//! - an element removed from, or pushed to the front of, a list ([`Lookup::list_removed`],
//!   [`Lookup::list_pushed`]): list indexes shift, and the cursor and the candidates shift with
//!   them, so no element is skipped and every candidate's index stays right.
//!
//! A candidate that was taken away (acked, deleted, moved on) is dropped when the lookup
//! finishes: [`Lookup::finish`] keeps only the candidates still where they were seen, reading
//! each place again in the same step that acts on them. Writes that do not come through the
//! queue's commands (a hand-made LPOP, a FLUSHALL) cannot be tracked: the module then starts
//! the lookup again ([`Lookup::restart`]).

use std::collections::HashSet;

use crate::queue::{Found, Place, State};
use crate::record::{self, Record};
use crate::store::{Key, Store};

/// The ids a lookup wants, compared without decoding a record: producer ids as bytes,
/// server-made ids (`<created>-<offset>`) as numbers, so that no record's id is formatted.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    given: HashSet<Vec<u8>>,
    made: HashSet<(u64, u64)>,
}

impl Wanted {
    pub fn new(ids: &[&[u8]]) -> Self {
        Wanted { given: ids.iter().map(|id| id.to_vec()).collect(), made: ids.iter().filter_map(|id| record::parse_made_id(id)).collect() }
    }

    /// Whether the encoded record has one of the ids (an undecodable record has none).
    pub fn matches(&self, record_bytes: &[u8]) -> bool {
        match record::id_of(record_bytes) {
            Ok(record::IdView::Given(id)) => self.given.contains(id),
            Ok(record::IdView::Made(created, offset)) => self.made.contains(&(created, offset)),
            Err(_) => false,
        }
    }
}

/// A place where a wanted message was seen.
#[derive(Debug, Clone)]
struct Candidate {
    state: State,
    place: Place,
    bytes: Vec<u8>,
}

/// A lookup by id in progress.
#[derive(Debug)]
pub struct Lookup {
    wanted: Wanted,
    /// The states to look in, in the order the reply lists them.
    states: Vec<State>,
    /// Index in `states` of the state being read; `states.len()` when all are read.
    stage: usize,
    /// The next index to read in the current state, when it is a list.
    cursor: u64,
    candidates: Vec<Candidate>,
}

impl Lookup {
    pub fn new(ids: &[&[u8]], states: &[State]) -> Self {
        Lookup { wanted: Wanted::new(ids), states: states.to_vec(), stage: 0, cursor: 0, candidates: Vec::new() }
    }

    /// The state being read, or None when every state is read.
    pub fn current(&self) -> Option<State> {
        self.states.get(self.stage).copied()
    }

    /// The next index to read in the current list.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// On to the next state.
    pub fn next_state(&mut self) {
        self.stage += 1;
        self.cursor = 0;
    }

    /// Reads everything again from the start (the queue changed in a way that was not told).
    pub fn restart(&mut self) {
        self.stage = 0;
        self.cursor = 0;
        self.candidates.clear();
    }

    /// The reader saw `bytes` at `index` of the current list; the cursor moves past it.
    pub fn visit_list(&mut self, index: u64, bytes: &[u8]) {
        if let Some(state) = self.current() {
            self.consider(state, Place::Index(index), bytes);
        }
        self.cursor = index + 1;
    }

    /// The reader saw a delayed record.
    pub fn visit_delayed(&mut self, bytes: &[u8]) {
        self.consider(State::Delayed, Place::Member, bytes);
    }

    /// The reader saw a record in flight under `receipt`.
    pub fn visit_inflight(&mut self, receipt: &[u8], bytes: &[u8]) {
        self.consider(State::Inflight, Place::Receipt(receipt.to_vec()), bytes);
    }

    /// A command wrote a record to a list, now at `index`. (Records written to the delayed
    /// zset or in flight are told with [`Lookup::visit_delayed`] and [`Lookup::visit_inflight`]:
    /// a sighting is a sighting, whoever makes it.)
    pub fn landed_in_list(&mut self, state: State, index: u64, bytes: &[u8]) {
        self.consider(state, Place::Index(index), bytes);
    }

    fn consider(&mut self, state: State, place: Place, bytes: &[u8]) {
        if !self.states.contains(&state) || !self.wanted.matches(bytes) {
            return;
        }
        // Records are unique within a state (each carries its offset): a second sighting is
        // the same message, at its latest known place.
        self.candidates.retain(|c| !(c.state == state && c.bytes == bytes));
        self.candidates.push(Candidate { state, place, bytes: bytes.to_vec() });
    }

    /// A command removed the element at `index` of a list (0: the front).
    pub fn list_removed(&mut self, state: State, index: u64) {
        if self.current() == Some(state) && index < self.cursor {
            self.cursor -= 1;
        }
        self.candidates.retain_mut(|c| match (&mut c.place, c.state == state) {
            (Place::Index(i), true) if *i == index => false,
            (Place::Index(i), true) if *i > index => {
                *i -= 1;
                true
            }
            _ => true,
        });
    }

    /// A command pushed an element to the front of a list.
    pub fn list_pushed_front(&mut self, state: State) {
        if self.current() == Some(state) {
            self.cursor += 1;
        }
        for c in self.candidates.iter_mut().filter(|c| c.state == state) {
            if let Place::Index(i) = &mut c.place {
                *i += 1;
            }
        }
    }

    /// The messages found: every candidate still where it was seen (read again here, in the
    /// step that acts on them), decoded, in the states' order and each state's order (ready,
    /// failed, errors: their lists; delayed: by due; in flight: by deadline); the first one
    /// only with `first_only`.
    pub fn finish<S: Store>(self, store: &mut S, first_only: bool) -> Vec<Found> {
        let mut found: Vec<(usize, u64, Found)> = Vec::new();
        for c in self.candidates {
            let (still_there, at, position) = match &c.place {
                Place::Index(i) => (store.lindex(c.state.key(), *i).as_deref() == Some(&c.bytes[..]), 0, *i),
                Place::Member => match store.zscore(Key::Dly, &c.bytes) {
                    Some(due) => (true, due, due),
                    None => (false, 0, 0),
                },
                Place::Receipt(r) => match (store.hget(Key::Inf, r), store.zscore(Key::Bak, r)) {
                    (Some(bytes), Some(deadline)) if bytes == c.bytes => (true, deadline, deadline),
                    _ => (false, 0, 0),
                },
            };
            if !still_there {
                continue;
            }
            let Ok(record) = Record::decode(&c.bytes) else { continue };
            let order = State::ALL.iter().position(|s| *s == c.state).unwrap_or(0);
            found.push((order, position, Found::new(c.state, record, at, c.bytes, c.place)));
        }
        found.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| a.2.stored().cmp(b.2.stored())));
        let mut found: Vec<Found> = found.into_iter().map(|(_, _, f)| f).collect();
        if first_only {
            found.truncate(1);
        }
        found
    }
}

/// The state a list key holds, for the commands that tell a lookup what they changed.
pub fn list_state(k: Key) -> Option<State> {
    match k {
        Key::Msg => Some(State::Ready),
        Key::Fai => Some(State::Failed),
        Key::Err => Some(State::Errors),
        _ => None,
    }
}
