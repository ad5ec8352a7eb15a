//! An opt-in cookie store (docs/spec/cookies.md).
//!
//! A client keeps no cookies unless it is given a [`CookieJar`]
//! ([`ClientBuilder::cookie_store`](crate::ClientBuilder::cookie_store) for a
//! jar of its own, [`ClientBuilder::cookie_jar`](crate::ClientBuilder::cookie_jar)
//! to share one on purpose). The jar applies RFC 6265's rules, by the
//! `cookie_store` crate: a cookie goes back only to the hosts its `Domain`
//! covers (only the host that set it, without one), under its `Path`, over
//! `https` if it is `Secure`, until it expires. Every response's
//! `Set-Cookie` is stored, redirects' included, and every request, each hop
//! of a redirect included, carries what the jar holds for its own URL, so a
//! cookie never reaches a host it was not meant for.
//!
//! ```
//! use breakwater::cookies::CookieJar;
//! use url::Url;
//!
//! let jar = CookieJar::new();
//! let api = Url::parse("https://api.example.com/login").unwrap();
//! jar.set_cookie("session=abc; Path=/; Secure; HttpOnly", &api);
//! let me = Url::parse("https://api.example.com/me").unwrap();
//! assert_eq!(jar.cookie_header(&me).unwrap(), "session=abc");
//! let other = Url::parse("https://evil.example.net/").unwrap();
//! assert!(jar.cookie_header(&other).is_none());
//! // Debug never shows a cookie's value.
//! assert!(!format!("{jar:?}").contains("abc"));
//! ```

use std::fmt;
use std::sync::Mutex;

use cookie_store::{CookieStore, RawCookie};
use http::header::{HeaderMap, HeaderValue, SET_COOKIE};
use url::Url;

/// Cookies kept between requests, shareable between clients on purpose.
pub struct CookieJar {
    store: Mutex<CookieStore>,
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and values may be credentials: only the count is shown.
        f.debug_struct("CookieJar")
            .field("cookies", &self.len())
            .finish()
    }
}

impl Default for CookieJar {
    fn default() -> Self {
        CookieJar::new()
    }
}

impl CookieJar {
    /// An empty jar.
    pub fn new() -> Self {
        CookieJar {
            store: Mutex::new(CookieStore::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CookieStore> {
        // A panic elsewhere while the lock was held leaves the store whole:
        // each change to it is one call.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a cookie as if a response from `url` had set it with this
    /// `Set-Cookie` value. Returns whether it was stored (a cookie for
    /// another domain, or one that does not parse, is not).
    pub fn set_cookie(&self, set_cookie: &str, url: &Url) -> bool {
        let Ok(cookie) = RawCookie::parse(set_cookie) else {
            return false;
        };
        if !domain_is_plausible(&cookie, url) {
            return false;
        }
        let Ok(cookie) = cookie_store::Cookie::try_from_raw_cookie(&cookie.into_owned(), url)
        else {
            return false;
        };
        let mut store = self.lock();
        let replaces = store.iter_any().any(|c| {
            c.name() == cookie.name() && c.domain == cookie.domain && c.path == cookie.path
        });
        if !replaces {
            // RFC 6265 §6.1's floor is what the jar also keeps at most: a
            // server cannot grow the Cookie header of every later request
            // (until its origin answers 431) nor the jar without bound.
            if store
                .iter_any()
                .filter(|c| c.domain == cookie.domain)
                .count()
                >= MAX_PER_DOMAIN
            {
                return false;
            }
            if store.iter_any().count() >= MAX_COOKIES {
                drop_expired(&mut store);
                if store.iter_any().count() >= MAX_COOKIES {
                    return false;
                }
            }
        }
        store.insert(cookie.into_owned(), url).is_ok()
    }

    /// Stores every `Set-Cookie` of a response from `url`.
    pub(crate) fn store_response(&self, headers: &HeaderMap, url: &Url) {
        for value in headers.get_all(SET_COOKIE) {
            if let Ok(text) = value.to_str() {
                self.set_cookie(text, url);
            }
        }
    }

    /// The `Cookie` header a request to `url` carries, if the jar holds any
    /// cookie for it; marked sensitive, so no `Debug` shows it.
    pub fn cookie_header(&self, url: &Url) -> Option<HeaderValue> {
        let store = self.lock();
        let mut cookies = store.matches(url);
        // RFC 6265 §5.4's order: longer paths first, then the older cookie
        // (the store keeps them in the order they were set). A fixed order
        // also keeps a simulated run's bytes the same from run to run.
        cookies.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        let pairs: Vec<String> = cookies
            .iter()
            .map(|c| {
                let (name, value) = c.name_value();
                format!("{name}={value}")
            })
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let mut value = HeaderValue::from_str(&pairs.join("; ")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// The value of the cookie `name` that a request to `url` would carry.
    pub fn get(&self, url: &Url, name: &str) -> Option<String> {
        self.lock()
            .get_request_values(url)
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.to_owned())
    }

    /// How many unexpired cookies the jar holds.
    pub fn len(&self) -> usize {
        self.lock().iter_unexpired().count()
    }

    /// Whether the jar holds no unexpired cookie.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every cookie.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// The most cookies the jar keeps for one domain.
const MAX_PER_DOMAIN: usize = 50;
/// The most cookies the jar keeps in all.
const MAX_COOKIES: usize = 3000;

/// Removes the cookies that have expired, which the store otherwise keeps.
fn drop_expired(store: &mut CookieStore) {
    let expired: Vec<(String, String, String)> = store
        .iter_any()
        .filter(|c| c.is_expired())
        .map(|c| {
            (
                String::from(&c.domain),
                String::from(&c.path),
                c.name().to_owned(),
            )
        })
        .collect();
    for (domain, path, name) in expired {
        store.remove(&domain, &path, &name);
    }
}

/// Whether a cookie's `Domain` could be meant for a site rather than a
/// whole top-level domain. The crate checks that the domain covers the host;
/// without the public suffix list (which is not bundled), a single-label
/// domain such as `com` is refused here, so no server can set a cookie for
/// every host under a top-level domain.
fn domain_is_plausible(cookie: &RawCookie<'_>, url: &Url) -> bool {
    match cookie.domain() {
        None => true,
        Some(domain) => {
            let domain = domain.trim_start_matches('.');
            domain.contains('.')
                || url
                    .host_str()
                    .is_some_and(|h| h.eq_ignore_ascii_case(domain))
        }
    }
}
