//! A lookup by id read in slices, on the in-memory store, with the queue changing between
//! slices as the module's commands change it (and tell the lookup).

use rmq_core::lookup::Lookup;
use rmq_core::mem::MemStore;
use rmq_core::queue::{Queue, State};
use rmq_core::record::Record;
use rmq_core::settings::Settings;
use rmq_core::store::{Key, Store, Walk};

fn record(id: &str, offset: u64) -> Vec<u8> {
    Record { id: id.into(), body: format!("body of {id}").into(), offset, created: 1, ..Default::default() }.encode()
}

/// A ready line of `n` messages `m0 … m<n-1>`.
fn line(n: u64) -> MemStore {
    let mut s = MemStore::default();
    for i in 0..n {
        s.rpush(Key::Msg, &record(&format!("m{i}"), i + 1));
    }
    s
}

/// Reads up to `count` ready elements from the lookup's cursor, as one slice of the module.
fn read_slice(s: &mut MemStore, lookup: &mut Lookup, count: usize) {
    let from = lookup.cursor();
    let mut read = 0;
    s.list_walk(Key::Msg, &mut |i, bytes| {
        if i < from {
            return Walk::Next;
        }
        lookup.visit_list(i, bytes);
        read += 1;
        if read == count {
            Walk::Stop
        } else {
            Walk::Next
        }
    });
}

fn ids(found: &[rmq_core::queue::Found]) -> Vec<String> {
    found.iter().map(|f| String::from_utf8(f.record.message_id().into_owned()).unwrap()).collect()
}

#[test]
fn pops_at_the_front_between_slices_skip_nothing() {
    let mut s = line(100);
    let mut lookup = Lookup::new(&[b"m25", b"m90"], &[State::Ready]);
    read_slice(&mut s, &mut lookup, 20); // m0 … m19
    for _ in 0..15 {
        s.lpop(Key::Msg); // FETCH takes m0 … m14
        lookup.list_removed(State::Ready, 0);
    }
    assert_eq!(lookup.cursor(), 5, "the cursor moved with the line");
    read_slice(&mut s, &mut lookup, 1000);
    let found = lookup.finish(&mut s, false);
    assert_eq!(ids(&found), ["m25", "m90"]);
    assert_eq!(Queue::new(&mut s, &Settings::default(), 2).delete_found(found).unwrap(), 2);
    assert_eq!(s.llen(Key::Msg), 83);
    assert!((0..s.llen(Key::Msg)).all(|i| {
        let id = Record::decode(&s.lindex(Key::Msg, i).unwrap()).unwrap().id;
        id != b"m25" && id != b"m90"
    }));
}

#[test]
fn a_candidate_taken_away_is_not_reported_and_others_keep_their_place() {
    let mut s = line(10);
    let mut lookup = Lookup::new(&[b"m5", b"m8"], &[State::Ready]);
    read_slice(&mut s, &mut lookup, 1000);
    // m5 goes (DEL by another command), then something is put at the front.
    let five = s.lindex(Key::Msg, 5).unwrap();
    s.lremove(Key::Msg, 5, &five);
    lookup.list_removed(State::Ready, 5);
    s.lpush(Key::Msg, &record("front", 99));
    lookup.list_pushed_front(State::Ready);
    let found = lookup.finish(&mut s, false);
    assert_eq!(ids(&found), ["m8"]);
    assert_eq!(s.lindex(Key::Msg, 8).unwrap(), found[0].stored(), "m8 is now at 8: one gone before it, one added in front");
}

#[test]
fn a_message_that_lands_where_the_reader_has_been_is_found() {
    let mut s = line(10);
    let mut lookup = Lookup::new(&[b"late"], &[State::Ready, State::Failed]);
    read_slice(&mut s, &mut lookup, 1000);
    lookup.next_state();
    // Ready is read; a message with the id arrives at its back (a NACK RETRY, a promotion).
    let bytes = record("late", 11);
    s.rpush(Key::Msg, &bytes);
    lookup.landed_in_list(State::Ready, s.llen(Key::Msg) - 1, &bytes);
    lookup.next_state();
    let found = lookup.finish(&mut s, true);
    assert_eq!((ids(&found), found[0].state), (vec!["late".to_string()], State::Ready));
}

#[test]
fn requeue_looks_only_where_requeue_takes_from() {
    let mut s = line(3);
    let failed = record("m1", 50);
    s.rpush(Key::Fai, &failed);
    let mut lookup = Lookup::new(&[b"m1"], &State::REQUEUABLE);
    // A ready copy of the id is no candidate for REQUEUE, wherever it is seen.
    lookup.landed_in_list(State::Ready, 1, &s.lindex(Key::Msg, 1).unwrap());
    lookup.visit_delayed(&record("other", 60));
    lookup.next_state();
    lookup.visit_list(0, &failed);
    let found = lookup.finish(&mut s, false);
    assert_eq!((ids(&found), found[0].state), (vec!["m1".to_string()], State::Failed));
}
