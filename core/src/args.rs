//! Argument parsing: every command's arguments become a typed request here, and every bad
//! input is refused here, before anything is read or written.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::settings::parse_number;

/// The most HEADERs one message may carry: headers are metadata (a trace id, a content type),
/// and a bound keeps one PUSH's work small.
pub const MAX_HEADERS: usize = 1000;

/// Checks a queue name: 1–200 bytes of `A-Z a-z 0-9 _ . : - # /`.
pub fn check_queue(q: &[u8]) -> Result<()> {
    let ok = !q.is_empty() && q.len() <= 200 && q.iter().all(|c| c.is_ascii_alphanumeric() || b"_.:-#/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidQueueName)
    }
}

/// Checks a producer id: 1–128 bytes of 0x21–0x7E.
pub fn check_id(id: &[u8]) -> Result<()> {
    if !id.is_empty() && id.len() <= 128 && id.iter().all(|c| (0x21..=0x7e).contains(c)) {
        Ok(())
    } else {
        Err(Error::InvalidId)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Now,
    Delay(u64),
    At(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push<'a> {
    pub body: &'a [u8],
    pub id: Option<&'a [u8]>,
    pub tag: &'a [u8],
    pub key: &'a [u8],
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub when: When,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch<'a> {
    pub count: u64,
    pub lock: Option<u64>,
    pub block: Option<u64>,
    pub consumer: &'a [u8],
    /// Each message as an array of its values in a fixed order instead of a map.
    pub compact: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    Retry { delay: Option<u64> },
    Fail,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack<'a> {
    pub receipt: &'a [u8],
    pub action: NackAction,
    pub reason: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch<'a> {
    pub receipt: &'a [u8],
    pub lock: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recover {
    pub expired: bool,
    pub failed: bool,
    pub errors: bool,
}

/// Walks `keyword value` options left to right.
struct Options<'a, 'b> {
    args: &'b [&'a [u8]],
    pos: usize,
}

impl<'a> Options<'a, '_> {
    fn next_keyword(&mut self) -> Option<(&'a [u8], Vec<u8>)> {
        let raw = *self.args.get(self.pos)?;
        self.pos += 1;
        Some((raw, raw.to_ascii_uppercase()))
    }

    fn value(&mut self, kw: &'static str) -> Result<&'a [u8]> {
        let v = *self.args.get(self.pos).ok_or(Error::NeedsValue(kw))?;
        self.pos += 1;
        Ok(v)
    }

    fn number(&mut self, kw: &'static str, min: u64, msg: &'static str) -> Result<u64> {
        let v = self.value(kw)?;
        match parse_number(v) {
            Some(n) if n >= min => Ok(n),
            _ => Err(Error::Number(msg)),
        }
    }
}

/// Refuses an option given twice.
fn once<T>(slot: &Option<T>, raw: &[u8]) -> Result<()> {
    if slot.is_some() {
        Err(Error::Syntax(raw.to_vec()))
    } else {
        Ok(())
    }
}

/// The error texts of numeric arguments (after `ERR `), by keyword.
pub const NUMBER_ERRORS: [(&str, &str); 8] = [
    ("LOCK", LOCK_MSG),
    ("DELAY", DELAY_MSG),
    ("AT", AT_MSG),
    ("BLOCK", BLOCK_MSG),
    ("COUNT", COUNT_MSG),
    ("START", "START must be a non-negative integer"),
    ("FROM", "FROM must be a non-negative integer"),
    ("TO", "TO must be a non-negative integer"),
];
const LOCK_MSG: &str = "LOCK must be a positive integer of milliseconds";
const DELAY_MSG: &str = "DELAY must be a non-negative integer of milliseconds";
const AT_MSG: &str = "AT must be a non-negative integer of unix milliseconds";
const BLOCK_MSG: &str = "BLOCK must be a non-negative integer of milliseconds";
const COUNT_MSG: &str = "COUNT must be a positive integer";

/// `RMQ.PUSH q body [ID id] [TAG tag] [KEY key] [HEADER name value]… [DELAY ms | AT unix-ms]`;
/// `args` starts at the body.
pub fn push<'a>(args: &[&'a [u8]]) -> Result<Push<'a>> {
    let body = *args.first().ok_or(Error::WrongArity("rmq.push"))?;
    let mut o = Options { args, pos: 1 };
    let (mut id, mut tag, mut key, mut delay, mut at) = (None, None, None, None, None);
    let mut headers: Vec<(&[u8], &[u8])> = Vec::new();
    let mut header_names: HashSet<&[u8]> = HashSet::new();
    while let Some((raw, kw)) = o.next_keyword() {
        match kw.as_slice() {
            b"ID" => {
                once(&id, raw)?;
                let v = o.value("ID")?;
                check_id(v)?;
                id = Some(v);
            }
            b"TAG" => {
                once(&tag, raw)?;
                tag = Some(o.value("TAG")?);
            }
            b"KEY" => {
                once(&key, raw)?;
                key = Some(o.value("KEY")?);
            }
            b"HEADER" => {
                let name = o.value("HEADER")?;
                let value = o.value("HEADER")?;
                if name.is_empty() {
                    return Err(Error::EmptyHeaderName);
                }
                if !header_names.insert(name) {
                    return Err(Error::HeaderTwice(name.to_vec()));
                }
                if headers.len() == MAX_HEADERS {
                    return Err(Error::TooManyHeaders(MAX_HEADERS));
                }
                headers.push((name, value));
            }
            b"DELAY" => {
                once(&delay, raw)?;
                let n = o.number("DELAY", 0, DELAY_MSG)?;
                if at.is_some() {
                    return Err(Error::DelayWithAt);
                }
                delay = Some(n);
            }
            b"AT" => {
                once(&at, raw)?;
                let n = o.number("AT", 0, AT_MSG)?;
                if delay.is_some() {
                    return Err(Error::DelayWithAt);
                }
                at = Some(n);
            }
            _ => return Err(Error::Syntax(raw.to_vec())),
        }
    }
    let when = match (delay, at) {
        (Some(d), _) => When::Delay(d),
        (_, Some(a)) => When::At(a),
        _ => When::Now,
    };
    Ok(Push { body, id, tag: tag.unwrap_or(b""), key: key.unwrap_or(b""), headers, when })
}

/// `RMQ.FETCH q [COUNT n] [LOCK ms] [BLOCK ms] [CONSUMER name]`; `args` starts after q.
pub fn fetch<'a>(args: &[&'a [u8]], max_fetch_count: u64) -> Result<Fetch<'a>> {
    let mut o = Options { args, pos: 0 };
    let (mut count, mut lock, mut block, mut consumer, mut compact) = (None, None, None, None, None);
    while let Some((raw, kw)) = o.next_keyword() {
        match kw.as_slice() {
            b"COUNT" => {
                once(&count, raw)?;
                count = Some(parse_count(&mut o, max_fetch_count)?);
            }
            b"COMPACT" => {
                once(&compact, raw)?;
                compact = Some(true);
            }
            b"LOCK" => {
                once(&lock, raw)?;
                lock = Some(o.number("LOCK", 1, LOCK_MSG)?);
            }
            b"BLOCK" => {
                once(&block, raw)?;
                block = Some(o.number("BLOCK", 0, BLOCK_MSG)?);
            }
            b"CONSUMER" => {
                once(&consumer, raw)?;
                let v = o.value("CONSUMER")?;
                if v.is_empty() || v.len() > 200 {
                    return Err(Error::InvalidConsumer);
                }
                consumer = Some(v);
            }
            _ => return Err(Error::Syntax(raw.to_vec())),
        }
    }
    Ok(Fetch { count: count.unwrap_or(1), lock, block, consumer: consumer.unwrap_or(b""), compact: compact.is_some() })
}

fn parse_count(o: &mut Options, max: u64) -> Result<u64> {
    let n = o.number("COUNT", 1, COUNT_MSG)?;
    if n > max {
        return Err(Error::CountAboveMax(max));
    }
    Ok(n)
}

/// `RMQ.ACK q receipt [receipt …]`; `args` starts after q.
pub fn ack<'a>(args: &[&'a [u8]]) -> Result<Vec<&'a [u8]>> {
    if args.is_empty() {
        return Err(Error::WrongArity("rmq.ack"));
    }
    Ok(args.to_vec())
}

/// `RMQ.NACK q receipt [RETRY [DELAY ms] | FAIL | ERROR] [REASON text]`; `args` starts at the receipt.
pub fn nack<'a>(args: &[&'a [u8]]) -> Result<Nack<'a>> {
    let receipt = *args.first().ok_or(Error::WrongArity("rmq.nack"))?;
    let mut o = Options { args, pos: 1 };
    let (mut action, mut delay, mut reason): (Option<NackAction>, Option<u64>, Option<&[u8]>) = (None, None, None);
    while let Some((raw, kw)) = o.next_keyword() {
        let chosen = match kw.as_slice() {
            b"RETRY" => Some(NackAction::Retry { delay: None }),
            b"FAIL" => Some(NackAction::Fail),
            b"ERROR" => Some(NackAction::Error),
            b"DELAY" => {
                once(&delay, raw)?;
                let n = o.number("DELAY", 0, DELAY_MSG)?;
                if matches!(action, Some(NackAction::Fail | NackAction::Error)) {
                    return Err(Error::DelayWithoutRetry);
                }
                delay = Some(n);
                None
            }
            b"REASON" => {
                once(&reason, raw)?;
                reason = Some(o.value("REASON")?);
                None
            }
            _ => return Err(Error::Syntax(raw.to_vec())),
        };
        if let Some(a) = chosen {
            if action.is_some() {
                return Err(Error::TwoNackActions);
            }
            if delay.is_some() && a != (NackAction::Retry { delay: None }) {
                return Err(Error::DelayWithoutRetry);
            }
            action = Some(a);
        }
    }
    let action = match action.unwrap_or(NackAction::Retry { delay: None }) {
        NackAction::Retry { .. } => NackAction::Retry { delay },
        other => other,
    };
    Ok(Nack { receipt, action, reason })
}

/// `RMQ.TOUCH q receipt [LOCK ms]`; `args` starts at the receipt.
pub fn touch<'a>(args: &[&'a [u8]]) -> Result<Touch<'a>> {
    let receipt = *args.first().ok_or(Error::WrongArity("rmq.touch"))?;
    let mut o = Options { args, pos: 1 };
    let mut lock = None;
    while let Some((raw, kw)) = o.next_keyword() {
        match kw.as_slice() {
            b"LOCK" => {
                once(&lock, raw)?;
                lock = Some(o.number("LOCK", 1, LOCK_MSG)?);
            }
            _ => return Err(Error::Syntax(raw.to_vec())),
        }
    }
    Ok(Touch { receipt, lock })
}

/// `RMQ.RECOVER q [EXPIRED] [FAILED] [ERRORS]`; `args` starts after q.
pub fn recover(args: &[&[u8]]) -> Result<Recover> {
    let (mut expired, mut failed, mut errors) = (None, None, None);
    for raw in args {
        let slot = match raw.to_ascii_uppercase().as_slice() {
            b"EXPIRED" => &mut expired,
            b"FAILED" => &mut failed,
            b"ERRORS" => &mut errors,
            _ => return Err(Error::Syntax(raw.to_vec())),
        };
        once(slot, raw)?;
        *slot = Some(());
    }
    if args.is_empty() {
        return Ok(Recover { expired: true, failed: true, errors: true });
    }
    Ok(Recover { expired: expired.is_some(), failed: failed.is_some(), errors: errors.is_some() })
}

/// `RMQ.GET q id`; `args` starts after q.
pub fn get<'a>(args: &[&'a [u8]]) -> Result<&'a [u8]> {
    let id = *args.first().ok_or(Error::WrongArity("rmq.get"))?;
    nothing(&args[1..])?;
    Ok(id)
}

/// `RMQ.DEL q id [id …]` and `RMQ.REQUEUE q id [id …]`; `args` starts after q. Any bytes may
/// be looked for: an id that no message has counts 0.
pub fn ids<'a>(args: &[&'a [u8]], command: &'static str) -> Result<Vec<&'a [u8]>> {
    if args.is_empty() {
        return Err(Error::WrongArity(command));
    }
    Ok(args.to_vec())
}

/// Commands that take nothing after q (`RMQ.STATS q`).
/// RMQ.PURGE's state, after the queue: `READY|DELAYED|INFLIGHT|FAILED|ERRORS` (Some) or `ALL`
/// (None). Its absence is an arity error, checked before the queue name by the caller.
pub fn purge(args: &[&[u8]]) -> Result<Option<crate::queue::State>> {
    use crate::queue::State;
    let raw = args.first().copied().unwrap_or_default();
    let which = match raw.to_ascii_uppercase().as_slice() {
        b"READY" => Some(State::Ready),
        b"DELAYED" => Some(State::Delayed),
        b"INFLIGHT" => Some(State::Inflight),
        b"FAILED" => Some(State::Failed),
        b"ERRORS" => Some(State::Errors),
        b"ALL" => None,
        _ => return Err(Error::Syntax(raw.to_vec())),
    };
    nothing(&args[1..])?;
    Ok(which)
}

pub fn nothing(args: &[&[u8]]) -> Result<()> {
    match args.first() {
        Some(extra) => Err(Error::Syntax(extra.to_vec())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn queue_names_follow_the_spec() {
        assert!(check_queue(b"jobs.v1:eu-west#3/a_b").is_ok());
        for bad in [&b""[..], b"a b", b"{x}", b"a\n", &[b'a'; 201]] {
            assert_eq!(check_queue(bad), Err(Error::InvalidQueueName));
        }
    }

    #[test]
    fn push_options_parse_in_any_case() {
        let p = push(&[b"body", b"id", b"x1", b"Tag", b"t", b"HEADER", b"h", b"v", b"delay", b"5"]).unwrap();
        assert_eq!(p.id, Some(&b"x1"[..]));
        assert_eq!(p.tag, b"t");
        assert_eq!(p.headers, vec![(&b"h"[..], &b"v"[..])]);
        assert_eq!(p.when, When::Delay(5));
    }

    #[test]
    fn push_refusals_name_the_argument() {
        assert_eq!(e(push(&[])), "ERR wrong number of arguments for 'rmq.push' command");
        assert_eq!(e(push(&[b"b", b"ID"])), "ERR ID needs a value");
        assert_eq!(e(push(&[b"b", b"ID", b"a b"])), "ERR ID must be 1 to 128 printable ASCII characters without spaces");
        assert_eq!(e(push(&[b"b", b"DELAY", b"1", b"AT", b"2"])), "ERR DELAY and AT cannot be used together");
        assert_eq!(e(push(&[b"b", b"DELAY", b"-1"])), "ERR DELAY must be a non-negative integer of milliseconds");
        assert_eq!(e(push(&[b"b", b"TAG", b"a", b"tag", b"b"])), "ERR syntax error near 'tag'");
        assert_eq!(e(push(&[b"b", b"FOO"])), "ERR syntax error near 'FOO'");
        assert_eq!(e(push(&[b"b", b"HEADER", b"h"])), "ERR HEADER needs a value");
        assert_eq!(e(push(&[b"b", b"HEADER", b"h", b"1", b"HEADER", b"h", b"2"])), "ERR HEADER 'h' given twice");
    }

    #[test]
    fn headers_are_capped_and_checked_in_linear_time() {
        let names: Vec<Vec<u8>> = (0..=MAX_HEADERS).map(|i| format!("h{i}").into_bytes()).collect();
        let mut argv: Vec<&[u8]> = vec![b"body"];
        for n in &names[..MAX_HEADERS] {
            argv.extend_from_slice(&[b"HEADER", n, b"v"]);
        }
        assert_eq!(push(&argv).unwrap().headers.len(), MAX_HEADERS);
        argv.extend_from_slice(&[b"HEADER", &names[MAX_HEADERS], b"v"]);
        assert_eq!(e(push(&argv)), "ERR a message has at most 1000 HEADERs");
    }

    #[test]
    fn fetch_count_is_bounded_by_max_fetch_count() {
        assert_eq!(fetch(&[b"COUNT", b"1000"], 1000).unwrap().count, 1000);
        assert_eq!(e(fetch(&[b"COUNT", b"1001"], 1000)), "ERR COUNT must not exceed max-fetch-count (1000)");
        assert_eq!(e(fetch(&[b"COUNT", b"0"], 1000)), "ERR COUNT must be a positive integer");
        assert_eq!(e(fetch(&[b"LOCK", b"0"], 1000)), "ERR LOCK must be a positive integer of milliseconds");
    }

    #[test]
    fn fetch_compact_is_a_flag_given_once() {
        assert!(!fetch(&[], 1000).unwrap().compact);
        let f = fetch(&[b"COUNT", b"2", b"compact"], 1000).unwrap();
        assert!(f.compact && f.count == 2);
        assert_eq!(e(fetch(&[b"COMPACT", b"COMPACT"], 1000)), "ERR syntax error near 'COMPACT'");
    }

    #[test]
    fn nack_actions_exclude_each_other() {
        assert_eq!(nack(&[b"r"]).unwrap().action, NackAction::Retry { delay: None });
        assert_eq!(nack(&[b"r", b"DELAY", b"5"]).unwrap().action, NackAction::Retry { delay: Some(5) });
        assert_eq!(nack(&[b"r", b"retry", b"delay", b"5"]).unwrap().action, NackAction::Retry { delay: Some(5) });
        assert_eq!(e(nack(&[b"r", b"FAIL", b"ERROR"])), "ERR RETRY, FAIL and ERROR cannot be used together");
        assert_eq!(e(nack(&[b"r", b"FAIL", b"DELAY", b"1"])), "ERR DELAY goes only with RETRY");
        assert_eq!(e(nack(&[b"r", b"DELAY", b"1", b"ERROR"])), "ERR DELAY goes only with RETRY");
        let n = nack(&[b"r", b"ERROR", b"REASON", b"bad"]).unwrap();
        assert_eq!((n.action, n.reason), (NackAction::Error, Some(&b"bad"[..])));
    }

    #[test]
    fn recover_defaults_to_all_three() {
        assert_eq!(recover(&[]).unwrap(), Recover { expired: true, failed: true, errors: true });
        assert_eq!(recover(&[b"failed"]).unwrap(), Recover { expired: false, failed: true, errors: false });
        assert_eq!(e(recover(&[b"FAILED", b"FAILED"])), "ERR syntax error near 'FAILED'");
    }
}
