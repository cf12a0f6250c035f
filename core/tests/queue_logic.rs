//! The queue state machine alone, on the in-memory store: no server, no FFI.

use rmq_core::args::{self, NackAction, Recover};
use rmq_core::mem::MemStore;
use rmq_core::queue::{PushOutcome, Queue, State};
use rmq_core::record::Record;
use rmq_core::settings::Settings;
use rmq_core::store::{Key, Store};

fn q(store: &mut MemStore, now: u64) -> Queue<'_, MemStore> {
    Queue::new(store, &Settings::default(), now)
}

fn push(store: &mut MemStore, now: u64, argv: &[&[u8]]) -> PushOutcome {
    q(store, now).push(&args::push(argv).unwrap()).unwrap()
}

#[test]
fn a_stale_receipt_changes_nothing_after_redelivery() {
    let mut s = MemStore::default();
    push(&mut s, 1000, &[b"job"]);
    let first = q(&mut s, 1000).fetch(1, Some(10), b"a").unwrap().remove(0);
    let second = q(&mut s, 2000).fetch(1, Some(10), b"b").unwrap().remove(0);
    assert_ne!(first.receipt, second.receipt);
    assert_eq!(second.layout.attempt, 2);
    let mut queue = q(&mut s, 2001);
    assert_eq!(queue.ack(&[&first.receipt]).unwrap(), 0);
    assert!(!queue.nack(&first.receipt, NackAction::Fail, None).unwrap());
    assert_eq!(queue.touch(&first.receipt, None).unwrap(), None);
    assert_eq!(queue.ack(&[&second.receipt]).unwrap(), 1);
    assert!(!s.exists(Key::Bak) && !s.exists(Key::Inf) && !s.exists(Key::Msg));
}

#[test]
fn a_message_that_keeps_expiring_stops_at_max_attempts() {
    let mut s = MemStore::default();
    push(&mut s, 0, &[b"poison"]);
    let max = Settings::default().max_attempts;
    for i in 0..max {
        let got = q(&mut s, i * 100).fetch(1, Some(10), b"").unwrap();
        assert_eq!(got.len(), 1, "delivery {}", i + 1);
    }
    let moved = q(&mut s, max * 100).reclaim_expired(10);
    assert_eq!(moved.reclaimed, 1);
    let failed = Record::decode(&s.lindex(Key::Fai, 0).unwrap()).unwrap();
    assert_eq!(failed.error, b"max attempts (lock expired)");
    assert_eq!(q(&mut s, max * 100).stats().unwrap()[8], ("dead", 1));
}

#[test]
fn retry_waits_out_an_exponential_capped_backoff() {
    let mut s = MemStore::default();
    s.hset(Key::Cfg, b"backoff-ms", b"100");
    s.hset(Key::Cfg, b"backoff-max-ms", b"250");
    push(&mut s, 0, &[b"job"]);
    let mut due = Vec::new();
    let mut now = 0;
    for _ in 0..3 {
        let d = q(&mut s, now).fetch(1, None, b"").unwrap().remove(0);
        assert!(q(&mut s, now).nack(&d.receipt, NackAction::Retry { delay: None }, Some(b"flaky")).unwrap());
        let (_, at) = s.zrange_upto(Key::Dly, u64::MAX, 1).remove(0);
        due.push(at - now);
        now = at;
    }
    assert_eq!(due, vec![100, 200, 250]);
    assert_eq!(q(&mut s, now - 1).fetch(1, None, b"").unwrap().len(), 0, "not due yet");
    assert_eq!(q(&mut s, now).fetch(1, None, b"").unwrap()[0].record().error, b"flaky");
}

#[test]
fn dedup_drops_a_resend_within_the_window_only() {
    let mut s = MemStore::default();
    s.hset(Key::Cfg, b"dedup-window-ms", b"1000");
    assert_eq!(push(&mut s, 0, &[b"a", b"ID", b"x"]), PushOutcome::Stored(b"x".to_vec()));
    assert_eq!(push(&mut s, 999, &[b"a", b"ID", b"x"]), PushOutcome::Duplicate(b"x".to_vec()));
    assert_eq!(push(&mut s, 1001, &[b"a", b"ID", b"x"]), PushOutcome::Stored(b"x".to_vec()));
    assert_eq!(s.llen(Key::Msg), 2);
    let st = q(&mut s, 1001).stats().unwrap();
    assert_eq!((st[5], st[10]), (("pushed", 2), ("dups", 1)));
}

#[test]
fn maxlen_counts_ready_delayed_and_in_flight() {
    let mut s = MemStore::default();
    s.hset(Key::Cfg, b"maxlen", b"2");
    push(&mut s, 0, &[b"a"]);
    push(&mut s, 0, &[b"b", b"DELAY", b"50"]);
    let err = q(&mut s, 0).push(&args::push(&[b"c"]).unwrap()).unwrap_err();
    assert_eq!(err.to_string(), "ERR queue full");
    q(&mut s, 0).fetch(1, None, b"").unwrap();
    assert!(q(&mut s, 0).push(&args::push(&[b"c"]).unwrap()).is_err(), "in flight still counts");
    assert_eq!(q(&mut s, 0).stats().unwrap()[11], ("offset", 2), "a refused push takes no offset");
}

#[test]
fn ordered_queue_retry_holds_the_line_then_goes_first() {
    let mut s = MemStore::default();
    s.hset(Key::Cfg, b"ordered", b"1");
    s.hset(Key::Cfg, b"backoff-ms", b"100");
    for b in [b"1", b"2"] {
        push(&mut s, 0, &[b]);
    }
    let d = q(&mut s, 0).fetch(5, None, b"").unwrap().remove(0);
    assert!(q(&mut s, 0).nack(&d.receipt, NackAction::Retry { delay: None }, None).unwrap());
    assert!(q(&mut s, 50).fetch(1, None, b"").unwrap().is_empty(), "the retry holds the line during its backoff");
    let again = q(&mut s, 100).fetch(1, None, b"").unwrap().remove(0);
    assert_eq!(again.record().body, b"1");
    assert_eq!(s.hget(Key::St, b"hold"), None);
}

#[test]
fn recover_resets_attempts_of_failed_and_errored_but_not_of_expired() {
    let mut s = MemStore::default();
    for b in [b"f", b"e", b"x"] {
        push(&mut s, 0, &[b]);
    }
    let got = q(&mut s, 0).fetch(3, Some(10), b"").unwrap();
    q(&mut s, 0).nack(&got[0].receipt, NackAction::Fail, None).unwrap();
    q(&mut s, 0).nack(&got[1].receipt, NackAction::Error, Some(b"bad")).unwrap();
    let all = Recover { expired: true, failed: true, errors: true };
    assert_eq!(q(&mut s, 100).recover(all).unwrap(), [1, 1, 1]);
    let back: Vec<Record> = (0..3).map(|i| Record::decode(&s.lindex(Key::Msg, i).unwrap()).unwrap()).collect();
    let by_body = |b: &[u8]| back.iter().find(|r| r.body == b).unwrap().clone();
    assert_eq!((by_body(b"x").attempt, by_body(b"f").attempt, by_body(b"e").attempt), (1, 0, 0));
    assert!(by_body(b"e").error.is_empty());
}

#[test]
fn a_corrupt_ready_record_goes_to_errors_not_away() {
    let mut s = MemStore::default();
    s.rpush(Key::Msg, b"\x01not a record");
    push(&mut s, 0, &[b"good"]);
    let got = q(&mut s, 0).fetch(2, None, b"").unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].record().body, b"good");
    let kept = Record::decode(&s.lindex(Key::Err, 0).unwrap()).unwrap();
    assert_eq!((kept.body.as_slice(), kept.error.as_slice()), (&b"\x01not a record"[..], &b"corrupt record"[..]));
}

#[test]
fn a_key_of_the_wrong_type_is_refused_before_anything_changes() {
    let mut s = MemStore::default();
    push(&mut s, 0, &[b"job"]);
    s.hset(Key::Bak, b"not", b"a zset");
    assert_eq!(q(&mut s, 1).fetch(1, None, b"").unwrap_err(), rmq_core::Error::WrongType);
    assert_eq!(s.llen(Key::Msg), 1, "the message is still ready");
}

#[test]
fn fetch_count_counts_good_messages_and_quarantines_the_rest() {
    let mut s = MemStore::default();
    push(&mut s, 0, &[b"a"]);
    s.rpush(Key::Msg, b"garbage");
    s.rpush(Key::Msg, b"more garbage");
    push(&mut s, 0, &[b"b"]);
    let got = q(&mut s, 1).fetch(2, None, b"").unwrap();
    assert_eq!(got.iter().map(|d| d.record().body).collect::<Vec<_>>(), [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(s.llen(Key::Err), 2);
}

#[test]
fn by_id_commands_find_delete_and_requeue_in_every_state() {
    let mut s = MemStore::default();
    s.hset(Key::Cfg, b"dedup-window-ms", b"0");
    s.hset(Key::Cfg, b"backoff-ms", b"100000");
    for id in [&b"r"[..], b"i", b"d", b"f", b"x", b"r"] {
        push(&mut s, 0, &[b"body", b"ID", id]);
    }
    let mut fetched = q(&mut s, 1).fetch(4, None, b"w").unwrap().into_iter();
    let (r, i, d, f) = (fetched.next().unwrap(), fetched.next().unwrap(), fetched.next().unwrap(), fetched.next().unwrap());
    assert!(q(&mut s, 2).nack(&r.receipt, NackAction::Retry { delay: Some(0) }, None).unwrap());
    assert!(q(&mut s, 2).nack(&d.receipt, NackAction::Retry { delay: None }, None).unwrap());
    assert!(q(&mut s, 2).nack(&f.receipt, NackAction::Fail, None).unwrap());
    let state = |s: &mut MemStore, id: &[u8]| q(s, 3).get(id).unwrap().map(|f| f.state);
    assert_eq!(state(&mut s, b"i"), Some(State::Inflight));
    assert_eq!(state(&mut s, b"d"), Some(State::Delayed));
    assert_eq!(state(&mut s, b"f"), Some(State::Failed));
    assert_eq!(state(&mut s, b"r"), Some(State::Ready));
    assert_eq!(state(&mut s, b"nope"), None);
    assert_eq!(q(&mut s, 3).requeue(&[b"d", b"f", b"i"]).unwrap(), 2, "delayed and failed, not in flight");
    assert_eq!(q(&mut s, 3).delete(&[b"r", b"i"]).unwrap(), 3, "both messages with id r, and the one in flight");
    assert_eq!(q(&mut s, 3).stats().unwrap()[0], ("ready", 3));
    assert_eq!(q(&mut s, 3).ack(&[&i.receipt]).unwrap(), 0, "a deleted delivery's receipt is stale");
}

#[test]
fn receipts_differ_between_deliveries_and_queues() {
    let mut a = MemStore::default();
    let mut b = MemStore { random_counter: 100, ..MemStore::default() };
    push(&mut a, 0, &[b"x"]);
    push(&mut b, 0, &[b"x"]);
    let ra = q(&mut a, 1).fetch(1, None, b"").unwrap().remove(0).receipt;
    let rb = q(&mut b, 1).fetch(1, None, b"").unwrap().remove(0).receipt;
    assert!(ra.starts_with(b"1-1-") && rb.starts_with(b"1-1-"));
    assert_ne!(ra, rb);
    assert_eq!(q(&mut b, 2).ack(&[&ra]).unwrap(), 0);
}

#[test]
fn an_ordered_queue_asks_to_wake_waiters_when_its_line_frees() {
    let mut s = MemStore::default();
    s.hset(Key::Cfg, b"ordered", b"1");
    push(&mut s, 0, &[b"a"]);
    push(&mut s, 0, &[b"b"]);
    let d = q(&mut s, 1).fetch(1, None, b"").unwrap().remove(0);
    let before = s.wakes;
    assert_eq!(q(&mut s, 2).ack(&[&d.receipt]).unwrap(), 1);
    assert_eq!(s.wakes, before + 1);
}
