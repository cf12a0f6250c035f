//! Times and durations on the command line, and times in output (RFC 3339, UTC, ms).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `2026-11-22T10:00:00.123Z`.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A duration: `90s`, `15m`, `2h`, `30d`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration ({e}); try 30s, 15m, 2h or 7d"))
}

/// A point in time for `--since` / `--until`, as unix ms: an RFC 3339 time
/// (`2026-11-22T10:00:00Z`), a UTC date and time (`2026-11-22 10:00[:00]`), a UTC date
/// (`2026-11-22`), unix milliseconds (`1763805600000`), or a duration meaning that long ago
/// (`2h`, `7d`).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<i64>().map_err(|_| format!("{s:?}: number too large"));
    }
    if let Ok(d) = humantime::parse_duration(t) {
        return Ok(now_ms - d.as_millis() as i64);
    }
    let mut candidates = vec![t.to_string()];
    if t.len() == 10 {
        candidates.push(format!("{t}T00:00:00Z"));
    }
    if t.len() == 16 {
        candidates.push(format!("{t}:00"));
    }
    for c in candidates {
        let parsed = humantime::parse_rfc3339(&c).or_else(|_| humantime::parse_rfc3339_weak(&c));
        if let Ok(st) = parsed {
            return Ok(st.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0));
        }
    }
    Err(format!("{s:?} is not a time: give 2026-11-22, 2026-11-22T10:00:00Z, unix ms, or an age such as 2h or 7d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let day = 1_763_769_600_000; // 2025-11-22T00:00:00Z
        assert_eq!(parse_time("2025-11-22", 0).unwrap(), day);
        assert_eq!(parse_time("2025-11-22T00:00:00Z", 0).unwrap(), day);
        assert_eq!(parse_time("2025-11-22 01:00", 0).unwrap(), day + 3_600_000);
        assert_eq!(parse_time("2025-11-22 01:00:00.5", 0).unwrap(), day + 3_600_500);
        assert_eq!(parse_time("1763769600000", 0).unwrap(), day);
        assert_eq!(parse_time("2h", day).unwrap(), day - 7_200_000);
        assert!(parse_time("yesterday-ish", 0).is_err());
        assert_eq!(format_ms(day + 5), "2025-11-22T00:00:00.005Z");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert!(parse_duration("soon").is_err());
    }
}
