//! How the console reaches Redis: the [`Backend`] trait shared with the SQL archive (crate
//! `rmq-backend`; the rmq client implements it in `client/src/backend.rs`), so the console
//! speaks whichever edition the server has, with the client's connection pool and timeouts.

pub use rmq_backend::{Backend, BoxFuture, Call, RedisError, Reply};

/// The URL with any password replaced by `***`, for pages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_string() };
            format!("{scheme}://{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_page() {
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://ann:s3cret@127.0.0.1:6379/0"), "redis://ann:***@127.0.0.1:6379/0");
        assert_eq!(redact_url("rediss://:pw@host:6380"), "rediss://:***@host:6380");
        assert_eq!(redact_url("redis://token@host"), "redis://***@host");
    }
}
