//! Queue names: which queues `--queues` selects, and what a queue's rows call it.

/// The `virtual_queue_name` of a queue's rows. The Java system names the partition of a
/// partitioned queue here. rmq's partitioned queues (a logical queue over several rmq queues)
/// live in the clients, and each partition is an rmq queue with offsets of its own, so rows
/// stay keyed by that rmq queue and this one function is where a partition's queue will be
/// mapped to its names once partitioned queues exist. Today every queue is its own.
pub fn virtual_queue_name(queue: &str) -> String {
    queue.to_string()
}

/// The `log:{q}` stream of a queue.
pub fn log_key(queue: &str) -> String {
    format!("log:{{{queue}}}")
}

/// The queue of a `log:{q}` key, if it is one.
pub fn queue_of_log_key(key: &str) -> Option<&str> {
    key.strip_prefix("log:{")?.strip_suffix('}')
}

/// `--queues`: comma-separated names and glob patterns (`*` any run of characters, `?` one
/// character), or none: every queue whose log is on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns {
    pats: Vec<String>,
}

impl Patterns {
    pub fn parse(spec: Option<&str>) -> Patterns {
        let pats = spec.unwrap_or("").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        Patterns { pats }
    }

    /// True when no pattern was given: follow the queues whose log is on, and no other.
    pub fn is_all_logged(&self) -> bool {
        self.pats.is_empty()
    }

    /// The plain names (no wildcard): followed, and their log turned on, even before the
    /// queue has any key.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.pats.iter().filter(|p| !p.contains(['*', '?'])).map(|s| s.as_str())
    }

    pub fn matches(&self, queue: &str) -> bool {
        self.pats.is_empty() || self.pats.iter().any(|p| glob(p.as_bytes(), queue.as_bytes()))
    }
}

/// `*` and `?` globbing, iterative (no backtracking blow-up).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_queues() {
        let p = Patterns::parse(Some("orders, pay*,j?b"));
        assert!(p.matches("orders"));
        assert!(p.matches("payments"));
        assert!(p.matches("pay"));
        assert!(p.matches("job"));
        assert!(!p.matches("orders2"));
        assert!(!p.matches("jobs"));
        assert_eq!(p.literals().collect::<Vec<_>>(), vec!["orders"]);
        assert!(!p.is_all_logged());
        assert!(Patterns::parse(None).is_all_logged());
        assert!(Patterns::parse(Some(" , ")).is_all_logged());
    }

    #[test]
    fn stars_match_anywhere() {
        assert!(glob(b"*a*b*", b"xxaxxbxx"));
        assert!(!glob(b"*a*b", b"xxaxxbxxc"));
        assert!(glob(b"**", b""));
    }

    #[test]
    fn log_keys_name_their_queue() {
        assert_eq!(log_key("orders"), "log:{orders}");
        assert_eq!(queue_of_log_key("log:{orders}"), Some("orders"));
        assert_eq!(queue_of_log_key("msg:{orders}"), None);
    }
}
