//! Per-queue settings: the node's defaults, overridden by the queue's `cfg:{q}` hash.

use crate::error::{Error, Result};

/// The largest number any argument or setting may hold (exact in Lua's doubles, and
/// `now + it` stays exact too).
pub const MAX_NUMBER: u64 = 1_000_000_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub lock_ms: u64,
    pub max_attempts: u64,
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    pub maxlen: u64,
    pub ordered: bool,
    pub dedup_window_ms: u64,
    pub log: bool,
    pub log_maxlen: u64,
    /// While set, FETCH hands out nothing (BLOCK waits); everything else goes on.
    pub paused: bool,
}

/// SPEC.md's defaults: the module's own settings start from them, the Lua edition uses them,
/// and lua/rmq.lua's constants are checked against them (core/tests/lua_constants.rs).
pub const DEFAULTS: Settings = Settings {
    lock_ms: 30_000,
    max_attempts: 5,
    backoff_ms: 1_000,
    backoff_max_ms: 3_600_000,
    maxlen: 0,
    ordered: false,
    dedup_window_ms: 3_600_000,
    log: false,
    log_maxlen: 1_000_000,
    paused: false,
};

/// The most messages one FETCH (and PEEK, LOG) may ask for, unless the node says otherwise.
pub const MAX_FETCH_COUNT: u64 = 1000;

impl Default for Settings {
    fn default() -> Self {
        DEFAULTS
    }
}

/// The names RMQ.CONFIG knows, in the order CONFIG GET lists them.
pub const NAMES: [&str; 10] =
    ["lock-ms", "max-attempts", "backoff-ms", "backoff-max-ms", "maxlen", "ordered", "dedup-window-ms", "log", "log-maxlen", "paused"];

/// What values a setting takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// At least 1.
    Positive,
    /// At least 0.
    NonNegative,
    /// 0 or 1.
    Boolean,
}

/// The rule of a setting name (lower case).
pub fn rule(name: &str) -> Rule {
    match name {
        "lock-ms" | "max-attempts" | "log-maxlen" => Rule::Positive,
        "ordered" | "log" | "paused" => Rule::Boolean,
        _ => Rule::NonNegative,
    }
}

/// Parses a plain decimal number: digits only, at most [`MAX_NUMBER`].
pub fn parse_number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = s.iter().fold(0u64, |acc, d| acc * 10 + (d - b'0') as u64);
    (n <= MAX_NUMBER).then_some(n)
}

impl Settings {
    /// Checks one `name value` pair and gives the canonical (lower-case) name and the value.
    pub fn check(name: &[u8], value: &[u8]) -> Result<(&'static str, u64)> {
        let lower = name.to_ascii_lowercase();
        let canonical = NAMES.iter().find(|n| n.as_bytes() == lower.as_slice()).ok_or_else(|| Error::UnknownSetting(name.to_vec()))?;
        let n = parse_number(value);
        let ok = match (rule(canonical), n) {
            (Rule::Positive, Some(n)) => n >= 1,
            (Rule::NonNegative, Some(_)) => true,
            (Rule::Boolean, Some(n)) => n <= 1,
            _ => false,
        };
        if !ok {
            let text = match rule(canonical) {
                Rule::Positive => format!("{canonical} must be a positive integer"),
                Rule::NonNegative => format!("{canonical} must be a non-negative integer"),
                Rule::Boolean => format!("{canonical} must be 0 or 1"),
            };
            return Err(Error::BadSetting(text));
        }
        Ok((canonical, n.unwrap()))
    }

    /// Applies a stored override; a value that does not parse (someone wrote the hash by
    /// hand) is ignored, so a queue keeps working on the node's value.
    pub fn apply(&mut self, name: &[u8], value: &[u8]) {
        if let Ok((name, v)) = Settings::check(name, value) {
            self.set(name, v);
        }
    }

    fn set(&mut self, name: &str, v: u64) {
        match name {
            "lock-ms" => self.lock_ms = v,
            "max-attempts" => self.max_attempts = v,
            "backoff-ms" => self.backoff_ms = v,
            "backoff-max-ms" => self.backoff_max_ms = v,
            "maxlen" => self.maxlen = v,
            "ordered" => self.ordered = v == 1,
            "dedup-window-ms" => self.dedup_window_ms = v,
            "log" => self.log = v == 1,
            "log-maxlen" => self.log_maxlen = v,
            "paused" => self.paused = v == 1,
            _ => {}
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        match name {
            "lock-ms" => self.lock_ms,
            "max-attempts" => self.max_attempts,
            "backoff-ms" => self.backoff_ms,
            "backoff-max-ms" => self.backoff_max_ms,
            "maxlen" => self.maxlen,
            "ordered" => self.ordered as u64,
            "dedup-window-ms" => self.dedup_window_ms,
            "log" => self.log as u64,
            "log-maxlen" => self.log_maxlen,
            "paused" => self.paused as u64,
            _ => 0,
        }
    }

    /// The retry delay after attempt `n` (n ≥ 1): `min(backoff-ms · 2^(n−1), backoff-max-ms)`.
    pub fn backoff(&self, attempt: u64) -> u64 {
        if self.backoff_ms == 0 {
            return 0;
        }
        let shift = attempt.saturating_sub(1);
        let delay = if shift >= 63 { u64::MAX } else { self.backoff_ms.saturating_mul(1u64 << shift) };
        delay.min(self.backoff_max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_decimal_within_range() {
        assert_eq!(parse_number(b"0"), Some(0));
        assert_eq!(parse_number(b"1000000000000000"), Some(MAX_NUMBER));
        for bad in [&b""[..], b"-1", b"+1", b"1e3", b"0x10", b" 1", b"1000000000000001", b"99999999999999999999"] {
            assert_eq!(parse_number(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = Settings { backoff_ms: 1000, backoff_max_ms: 5000, ..Settings::default() };
        assert_eq!([1, 2, 3, 4, 100].map(|n| s.backoff(n)), [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(Settings { backoff_ms: 0, ..s }.backoff(3), 0);
    }

    #[test]
    fn bad_settings_name_their_rule() {
        assert_eq!(Settings::check(b"LOCK-MS", b"5"), Ok(("lock-ms", 5)));
        assert_eq!(Settings::check(b"lock-ms", b"0").unwrap_err().to_string(), "ERR lock-ms must be a positive integer");
        assert_eq!(Settings::check(b"ordered", b"2").unwrap_err().to_string(), "ERR ordered must be 0 or 1");
        assert_eq!(Settings::check(b"maxlen", b"-1").unwrap_err().to_string(), "ERR maxlen must be a non-negative integer");
        assert_eq!(Settings::check(b"nope", b"1").unwrap_err().to_string(), "ERR unknown setting 'nope'");
    }
}
