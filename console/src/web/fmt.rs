//! How numbers, times and URLs are written on the pages.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but `A-Z a-z 0-9 - . _ ~` is escaped in a path segment (queue names may hold
/// `/`, `#` and `:`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `/queues/<name>` with the name escaped.
pub fn queue_url(q: &str) -> String {
    format!("/queues/{}", utf8_percent_encode(q, SEGMENT))
}

/// `/archive/messages/<id>?queue=<q>&offset=<n>`: an archived message's history page (the
/// offset tells apart messages that had the same id).
pub fn archive_message_url(q: &str, id: &str, offset: Option<i64>) -> String {
    let offset = offset.map(|o| o.to_string()).unwrap_or_default();
    format!("/archive/messages/{}{}", utf8_percent_encode(id, SEGMENT), query(&[("queue", q), ("offset", &offset)]))
}

/// A query string (`?a=1&b=x`) from pairs, escaped; pairs with an empty value are left out.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    let q = s.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

/// 1234567 → "1,234,567".
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in ms as "850ms", "12s", "4m 3s", "2h 5m", "3d 4h".
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => two(s / 60, "m", s % 60, "s"),
        3600..=86_399 => two(s / 3600, "h", (s % 3600) / 60, "m"),
        _ => two(s / 86_400, "d", (s % 86_400) / 3600, "h"),
    }
}

/// "4m 3s", or "5m" when the second part is 0.
fn two(a: u64, ua: &str, b: u64, ub: &str) -> String {
    if b == 0 {
        format!("{a}{ua}")
    } else {
        format!("{a}{ua} {b}{ub}")
    }
}

/// A rate per second: "0", "0.25/s", "12/s", "1.2k/s".
pub fn rate(r: f64) -> String {
    if r <= 0.0 {
        "0".into()
    } else if r < 10.0 {
        format!("{r:.2}/s")
    } else if r < 10_000.0 {
        format!("{r:.0}/s")
    } else {
        format!("{:.1}k/s", r / 1000.0)
    }
}

/// Unix ms as "2026-11-22 03:35:09 UTC".
pub fn time(unix_ms: u64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .map(|s| format!("{s} UTC"))
        .unwrap_or_else(|| unix_ms.to_string())
}

/// "in 25s" / "3s ago" relative to now.
pub fn relative(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms >= now_ms {
        format!("in {}", age(unix_ms - now_ms))
    } else {
        format!("{} ago", age(now_ms - unix_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(100), "100");
        assert_eq!(age(850), "850ms");
        assert_eq!(age(243_000), "4m 3s");
        assert_eq!(age(90_000_000), "1d 1h");
        assert_eq!(age(300_000), "5m");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.25), "0.25/s");
        assert_eq!(rate(12_345.0), "12.3k/s");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(relative(5_000, 2_000), "in 3s");
    }

    #[test]
    fn queue_names_with_any_allowed_byte_make_one_path_segment() {
        assert_eq!(queue_url("a/b:c#d-e_f.g"), "/queues/a%2Fb%3Ac%23d-e_f.g");
        assert_eq!(query(&[("state", "failed"), ("x", ""), ("id", "a&b")]), "?state=failed&id=a%26b");
        assert_eq!(archive_message_url("a/b", "x/y?z", Some(7)), "/archive/messages/x%2Fy%3Fz?queue=a%2Fb&offset=7");
    }
}
