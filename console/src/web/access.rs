//! Who may use the console, and what protects it from other web sites.
//!
//! - Authentication (`--auth user:password` as HTTP basic, `--token` as a bearer token or as
//!   the basic password) on every request when configured; compared in constant time.
//! - Without authentication the console listens on loopback only (checked at start), and
//!   accepts only requests whose `Host` is a loopback name, so a web page whose domain
//!   resolves to 127.0.0.1 (DNS rebinding) cannot read it.
//! - Every action is a POST that carries the console's secret form token (another site cannot
//!   read a page to learn it) and, when the browser says where it comes from (`Origin`,
//!   `Sec-Fetch-Site`), comes from the console itself.
//! - Every response forbids framing and inline scripts (Content-Security-Policy).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use headers::authorization::{Basic, Bearer};
use headers::{Authorization, HeaderMapExt};
use subtle::ConstantTimeEq;

use super::Shared;
use crate::Error;

/// The configured credentials.
#[derive(Clone, Debug, Default)]
pub struct Access {
    basic: Option<(String, String)>,
    token: Option<String>,
}

/// Who made a request, for the audit log.
#[derive(Clone, Debug)]
pub struct Who {
    pub user: String,
    pub from: String,
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl Access {
    pub fn new(auth: Option<&str>, token: Option<&str>) -> Result<Access, Error> {
        let basic = match auth {
            None => None,
            Some(a) => match a.split_once(':') {
                Some((u, p)) if !u.is_empty() && !p.is_empty() => Some((u.to_string(), p.to_string())),
                _ => return Err(Error::Usage("--auth wants USER:PASSWORD, both not empty".into())),
            },
        };
        let token = match token {
            Some("") => return Err(Error::Usage("--token must not be empty".into())),
            t => t.map(str::to_string),
        };
        Ok(Access { basic, token })
    }

    /// True when requests must authenticate.
    pub fn required(&self) -> bool {
        self.basic.is_some() || self.token.is_some()
    }

    /// The user a request authenticates as, or None.
    fn check(&self, headers: &HeaderMap) -> Option<String> {
        if let Some(Authorization(b)) = headers.typed_get::<Authorization<Basic>>() {
            if let Some((u, p)) = &self.basic {
                // Both compared, always, so the time does not tell which was wrong.
                let ok = same(b.username(), u) & same(b.password(), p);
                if ok {
                    return Some(u.clone());
                }
            }
            if let Some(t) = &self.token {
                if same(b.password(), t) {
                    let u = b.username();
                    return Some(if u.is_empty() { "token" } else { u }.to_string());
                }
            }
            return None;
        }
        if let Some(Authorization(b)) = headers.typed_get::<Authorization<Bearer>>() {
            if let Some(t) = &self.token {
                if same(b.token(), t) {
                    return Some("token".to_string());
                }
            }
        }
        None
    }
}

/// A `Host` header naming this machine's loopback (any port).
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8080
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text.to_string()).into_response()
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Runs before every request: Host check, authentication, then the security headers on the
/// response.
pub async fn guard(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default();
    let user = if app.access.required() {
        match app.access.check(req.headers()) {
            Some(u) => u,
            None => {
                let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"rmq console\", charset=\"UTF-8\""));
                return r;
            }
        }
    } else {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !loopback_host(host) {
            return plain(
                StatusCode::FORBIDDEN,
                "this console answers only to a loopback host name (127.0.0.1, localhost); \
                 give it --auth or --token to serve other names\n",
            );
        }
        "anonymous".to_string()
    };
    req.extensions_mut().insert(Who { user, from: peer });
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Why an action request is refused as cross-site, or None when it is the console's own.
pub fn cross_site(app: &Shared, headers: &HeaderMap, form_token: Option<&str>) -> Option<&'static str> {
    match form_token {
        Some(t) if same(t, &app.csrf) => {}
        _ => return Some("the form token is missing or wrong: reload the page and try again"),
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Some("the request came from another site");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).unwrap_or("");
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Some("the request came from another origin");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_pass_the_host_check() {
        for h in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.2"] {
            assert!(loopback_host(h), "{h}");
        }
        for h in ["evil.example:8080", "10.0.0.1:8080", "", "[::2]:80", "127.0.0.1.evil.example"] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn auth_options_are_checked() {
        assert!(Access::new(Some("ann"), None).is_err());
        assert!(Access::new(Some(":pw"), None).is_err());
        assert!(Access::new(None, Some("")).is_err());
        assert!(!Access::new(None, None).unwrap().required());
        assert!(Access::new(Some("ann:pw:x"), None).unwrap().required());
    }
}
