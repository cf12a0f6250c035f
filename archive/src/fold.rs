//! A message's row is the fold of its log events in log order: this file is the whole state
//! machine of the archive, with no SQL in it.
//!
//! The latest event decides `status`; fields that an event does not carry (the attempt count
//! on an `ack`, the last error on a `fetch`) keep what earlier events said. A `push` starts
//! the message afresh: when Redis lost data and gave an offset again, the events before the
//! newest push belong to the message that had the offset before.

use crate::event::{LogEvent, Payload, StreamId};

/// What the archive says about a message, as the `status` column spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ready,
    Delayed,
    Inflight,
    Acked,
    Retried,
    Failed,
    Errored,
    Deleted,
    Purged,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Ready,
        Status::Delayed,
        Status::Inflight,
        Status::Acked,
        Status::Retried,
        Status::Failed,
        Status::Errored,
        Status::Deleted,
        Status::Purged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Delayed => "delayed",
            Status::Inflight => "inflight",
            Status::Acked => "acked",
            Status::Retried => "retried",
            Status::Failed => "failed",
            Status::Errored => "errored",
            Status::Deleted => "deleted",
            Status::Purged => "purged",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// One `redismq_message` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub queue: String,
    pub offset: i64,
    pub id: String,
    /// The message as pushed; `None` while the archive has not seen its `push` entry (the
    /// log was trimmed before the archiver read it).
    pub payload: Option<Payload>,
    pub status: Status,
    pub create_ms: i64,
    pub update_ms: i64,
    pub attempts: i64,
    /// How many times it was handed out (`fetch` events).
    pub deliveries: i64,
    pub error: Option<String>,
    /// Who took it last.
    pub consumer: Option<String>,
    pub due_ms: Option<i64>,
    /// The lock deadline given at the last delivery (TOUCH is not logged).
    pub deadline_ms: Option<i64>,
    pub last_event: String,
    /// The newest event folded in.
    pub pos: StreamId,
}

impl Row {
    /// A row from the first event known of the message.
    pub fn start(queue: &str, e: &LogEvent) -> Row {
        let mut r = Row {
            queue: queue.to_string(),
            offset: e.offset,
            id: e.id.clone(),
            payload: None,
            status: Status::Ready,
            create_ms: e.time_ms,
            update_ms: e.time_ms,
            attempts: 0,
            deliveries: 0,
            error: None,
            consumer: None,
            due_ms: None,
            deadline_ms: None,
            last_event: String::new(),
            pos: e.pos,
        };
        r.apply(e);
        r
    }

    /// Folds one event in. The caller gives events in log order.
    pub fn apply(&mut self, e: &LogEvent) {
        let was = self.status;
        match e.event.as_str() {
            "push" => {
                self.id = e.id.clone();
                self.payload = e.payload.clone();
                self.create_ms = e.time_ms;
                self.attempts = 0;
                self.deliveries = 0;
                self.error = None;
                self.consumer = None;
                self.deadline_ms = None;
                self.due_ms = e.due_ms;
                self.status = if e.due_ms.is_some() { Status::Delayed } else { Status::Ready };
            }
            "fetch" => {
                self.status = Status::Inflight;
                self.attempts = e.attempt.unwrap_or(self.attempts + 1);
                self.deliveries += 1;
                if e.consumer.is_some() {
                    self.consumer = e.consumer.clone();
                }
                self.deadline_ms = e.deadline_ms;
                self.due_ms = None;
            }
            "ack" => self.status = Status::Acked,
            "retry" => {
                self.status = Status::Retried;
                self.took_attempt(e);
            }
            "delay" => {
                self.status = Status::Delayed;
                self.took_attempt(e);
                self.due_ms = e.due_ms;
            }
            "reclaim" => {
                self.status = Status::Ready;
                self.took_attempt(e);
            }
            "fail" => {
                self.status = Status::Failed;
                self.took_attempt(e);
            }
            "error" => {
                self.status = Status::Errored;
                self.took_attempt(e);
            }
            "recover" => {
                self.status = Status::Ready;
                self.attempts = 0;
                self.error = None;
            }
            "requeue" => {
                // From failed or errors the attempts start again (as RECOVER does); a delayed
                // message keeps its count.
                if matches!(was, Status::Failed | Status::Errored) {
                    self.attempts = 0;
                    self.error = None;
                }
                self.status = Status::Ready;
                self.due_ms = None;
            }
            "delete" => self.status = Status::Deleted,
            "purge" => self.status = Status::Purged,
            // An event a newer server added: recorded in the events table, status kept.
            _ => {}
        }
        if self.id.is_empty() {
            self.id = e.id.clone();
        }
        self.update_ms = e.time_ms;
        self.last_event = e.event.clone();
        self.pos = e.pos;
    }

    /// The fields of an event that ends a delivery.
    fn took_attempt(&mut self, e: &LogEvent) {
        if let Some(a) = e.attempt {
            self.attempts = a;
        }
        if e.error.is_some() {
            self.error = e.error.clone();
        }
        self.deadline_ms = None;
    }
}

/// Folds a message's events from scratch (sorted here): from its newest `push` when there is
/// one (what came before belongs to a message that had the offset earlier), else from its
/// first event. `None` for no events.
pub fn rebuild(queue: &str, events: &mut [LogEvent]) -> Option<Row> {
    events.sort_by_key(|e| e.pos);
    let start = events.iter().rposition(|e| e.event == "push").unwrap_or(0);
    let (first, rest) = events[start..].split_first()?;
    let mut row = Row::start(queue, first);
    for e in rest {
        row.apply(e);
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, event: &str) -> LogEvent {
        LogEvent {
            pos: StreamId::new(1000, seq),
            offset: 1,
            event: event.into(),
            id: "m1".into(),
            time_ms: 1000 + seq,
            consumer: None,
            attempt: None,
            deadline_ms: None,
            due_ms: None,
            error: None,
            payload: if event == "push" { Some(Payload { body: b"hi".to_vec(), ..Default::default() }) } else { None },
        }
    }

    fn with(mut e: LogEvent, f: impl FnOnce(&mut LogEvent)) -> LogEvent {
        f(&mut e);
        e
    }

    #[test]
    fn fetch_then_ack_keeps_who_took_it_and_the_attempt() {
        let mut evs = vec![
            ev(0, "push"),
            with(ev(1, "fetch"), |e| {
                e.attempt = Some(1);
                e.consumer = Some("w1".into());
                e.deadline_ms = Some(5000);
            }),
            ev(2, "ack"),
        ];
        let r = rebuild("q", &mut evs).unwrap();
        assert_eq!(r.status, Status::Acked);
        assert_eq!(r.attempts, 1);
        assert_eq!(r.deliveries, 1);
        assert_eq!(r.consumer.as_deref(), Some("w1"));
        assert_eq!(r.create_ms, 1000);
        assert_eq!(r.update_ms, 1002);
        assert_eq!(r.last_event, "ack");
    }

    #[test]
    fn retry_with_reason_then_fail_keeps_the_last_error() {
        let mut evs = vec![
            ev(0, "push"),
            with(ev(1, "fetch"), |e| e.attempt = Some(1)),
            with(ev(2, "delay"), |e| {
                e.attempt = Some(1);
                e.due_ms = Some(9000);
                e.error = Some("timeout".into());
            }),
            with(ev(3, "fetch"), |e| e.attempt = Some(2)),
            with(ev(4, "fail"), |e| {
                e.attempt = Some(2);
                e.error = Some("max attempts".into());
            }),
        ];
        let r = rebuild("q", &mut evs).unwrap();
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.error.as_deref(), Some("max attempts"));
    }

    #[test]
    fn recover_and_requeue_from_failed_start_the_attempts_again() {
        let mut evs = vec![
            ev(0, "push"),
            with(ev(1, "fetch"), |e| e.attempt = Some(1)),
            with(ev(2, "error"), |e| {
                e.attempt = Some(1);
                e.error = Some("bad".into());
            }),
            ev(3, "requeue"),
        ];
        let r = rebuild("q", &mut evs).unwrap();
        assert_eq!((r.status, r.attempts, r.error.clone()), (Status::Ready, 0, None));
    }

    #[test]
    fn events_in_any_order_fold_the_same() {
        let mut a = vec![
            ev(0, "push"),
            with(ev(1, "fetch"), |e| e.attempt = Some(1)),
            ev(2, "reclaim"),
            with(ev(3, "fetch"), |e| e.attempt = Some(2)),
            ev(4, "ack"),
        ];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(rebuild("q", &mut a), rebuild("q", &mut b));
    }

    #[test]
    fn a_newer_push_under_the_same_offset_starts_a_new_message() {
        let mut evs = vec![ev(0, "push"), ev(1, "ack"), with(ev(2, "push"), |e| e.id = "other".into())];
        let r = rebuild("q", &mut evs).unwrap();
        assert_eq!((r.id.as_str(), r.status), ("other", Status::Ready));
    }

    #[test]
    fn without_its_push_a_message_has_no_body_but_a_status() {
        let mut evs = vec![with(ev(1, "fetch"), |e| e.attempt = Some(3)), ev(2, "ack")];
        let r = rebuild("q", &mut evs).unwrap();
        assert!(r.payload.is_none());
        assert_eq!((r.status, r.attempts), (Status::Acked, 3));
    }

    #[test]
    fn a_delayed_push_is_delayed() {
        let r = Row::start("q", &with(ev(0, "push"), |e| e.due_ms = Some(99_999)));
        assert_eq!(r.status, Status::Delayed);
        assert_eq!(r.due_ms, Some(99_999));
    }
}
