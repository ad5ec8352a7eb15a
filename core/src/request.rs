//! What a request carries: which headers win, which credentials go where,
//! and where a relative URL lands. The rules, with examples, are in
//! `docs/spec/request.md`.
//!
//! The client hands [`plan_headers`] the layers a request's headers come
//! from, lowest first, and gets back the one header map to send:
//!
//! 1. the client's **defaults** (`User-Agent`, `Accept`, ...);
//! 2. its **credentials** (API keys, a bearer token, and any default header
//!    that carries a credential), sent only to the base origin and always
//!    redacted;
//! 3. the `Content-Type` of a **body helper** (`json`, `form`);
//! 4. the headers the request **set**: each name replaces every value the
//!    layers below gave it;
//! 5. the headers the request **appended**: added to whatever is there, for
//!    a deliberate repeat.
//!
//! Framing (`Content-Length`, `Transfer-Encoding`) is the client's alone, and
//! a body helper's `Content-Type` that the request contradicts is a mistake,
//! not a preference: both are refused with a [`HeaderError`] before the
//! request takes a permit or a connection.
//!
//! ```
//! use breakwater_core::request::{plan_headers, HeaderLayers};
//! use http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
//!
//! let mut defaults = HeaderMap::new();
//! defaults.insert(ACCEPT, HeaderValue::from_static("application/json"));
//! defaults.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
//! let mut credentials = HeaderMap::new();
//! credentials.insert(AUTHORIZATION, HeaderValue::from_static("Bearer service"));
//! let mut set = HeaderMap::new();
//! set.insert(ACCEPT, HeaderValue::from_static("text/plain"));
//! set.insert(AUTHORIZATION, HeaderValue::from_static("Bearer user"));
//! let form = HeaderValue::from_static("application/x-www-form-urlencoded");
//!
//! let planned = plan_headers(HeaderLayers {
//!     defaults: &defaults,
//!     credentials: &credentials,
//!     body_type: Some(&form),
//!     set: &set,
//!     appended: &HeaderMap::new(),
//!     to_base_origin: true,
//! })?;
//! assert_eq!(planned.headers.get_all(ACCEPT).iter().count(), 1);
//! assert_eq!(planned.headers[ACCEPT], "text/plain");
//! assert_eq!(planned.headers[CONTENT_TYPE], "application/x-www-form-urlencoded");
//! assert_eq!(planned.headers[AUTHORIZATION], "Bearer user");
//! assert!(planned.caller_authorized);
//! # Ok::<(), breakwater_core::request::HeaderError>(())
//! ```

use std::fmt;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE,
    PROXY_AUTHORIZATION, SET_COOKIE, TRANSFER_ENCODING,
};

/// The headers that carry credentials whatever the client is told: they are
/// sent only to the base origin when they come from the client, and their
/// values are marked sensitive wherever they come from.
pub const CREDENTIAL_HEADERS: [HeaderName; 3] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE];

/// Whether `name` carries a credential or a session whatever the client is
/// told (see [`CREDENTIAL_HEADERS`]; `Set-Cookie` too, in responses).
pub fn is_credential(name: &HeaderName) -> bool {
    CREDENTIAL_HEADERS.contains(name) || name == SET_COOKIE
}

/// Where a request's headers come from, lowest layer first.
#[derive(Clone, Copy, Debug)]
pub struct HeaderLayers<'a> {
    /// The client's default headers, credentials excluded.
    pub defaults: &'a HeaderMap,
    /// The client's credentials (API keys, a bearer token, default headers
    /// that carry one): sent only to the base origin.
    pub credentials: &'a HeaderMap,
    /// The `Content-Type` a body helper chose, if one was used.
    pub body_type: Option<&'a HeaderValue>,
    /// The headers the request set: each name replaces the layers below.
    pub set: &'a HeaderMap,
    /// The headers the request appended: added to the rest.
    pub appended: &'a HeaderMap,
    /// Whether the request goes to the client's base origin.
    pub to_base_origin: bool,
}

/// The headers to send, and what they say about authentication.
#[derive(Clone, Debug)]
pub struct PlannedHeaders {
    /// Every header to send, credential values marked sensitive.
    pub headers: HeaderMap,
    /// The request brought its own `Authorization`: the client's tokens must
    /// not replace it, and a 401 is not answered by replaying the request
    /// with the client's token (it would act as the client, not as the
    /// caller).
    pub caller_authorized: bool,
}

/// A request whose headers cannot be sent as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The caller set `Content-Length` or `Transfer-Encoding`, which the
    /// client writes itself from the body.
    FramingHeader(HeaderName),
    /// A body helper chose one `Content-Type` and the request set another.
    ConflictingContentType {
        /// What the body helper chose.
        helper: HeaderValue,
        /// What the request set.
        set: HeaderValue,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::FramingHeader(name) => write!(
                f,
                "the request sets {name}, but the client frames the body itself; remove the header"
            ),
            HeaderError::ConflictingContentType { helper, set } => write!(
                f,
                "the body helper sends Content-Type {:?} but the request sets {:?}; \
                 send the bytes with .body() and your Content-Type, or drop the header",
                String::from_utf8_lossy(helper.as_bytes()),
                String::from_utf8_lossy(set.as_bytes()),
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// The one header map to send, from `layers` (see the module documentation).
pub fn plan_headers(layers: HeaderLayers<'_>) -> Result<PlannedHeaders, HeaderError> {
    // Most requests set no header of their own: every loop below is over
    // the request's layers, which are then empty, so the common case costs
    // the defaults' clone and little else.
    for source in [layers.defaults, layers.set, layers.appended] {
        if source.is_empty() {
            continue;
        }
        for name in [CONTENT_LENGTH, TRANSFER_ENCODING] {
            if source.contains_key(&name) {
                return Err(HeaderError::FramingHeader(name));
            }
        }
    }
    if let (Some(helper), Some(set)) = (layers.body_type, layers.set.get(CONTENT_TYPE)) {
        if helper != set {
            return Err(HeaderError::ConflictingContentType {
                helper: helper.clone(),
                set: set.clone(),
            });
        }
    }
    let mut headers = layers.defaults.clone();
    if layers.to_base_origin && !layers.credentials.is_empty() {
        replace_names(&mut headers, layers.credentials);
    }
    if let Some(body_type) = layers.body_type {
        headers.insert(CONTENT_TYPE, body_type.clone());
    }
    if !layers.set.is_empty() {
        replace_names(&mut headers, layers.set);
    }
    for (name, value) in layers.appended {
        headers.append(name.clone(), value.clone());
    }
    // The request's own credential values are as secret as the client's
    // (the lower layers' already are: credentials are marked when they are
    // set, and defaults carry none).
    for name in layers.set.keys().chain(layers.appended.keys()) {
        let credential =
            is_credential(name) || (layers.to_base_origin && layers.credentials.contains_key(name));
        if credential {
            mark_sensitive(&mut headers, name);
        }
    }
    for name in layers.credentials.keys() {
        mark_sensitive(&mut headers, name);
    }
    let caller_authorized =
        layers.set.contains_key(AUTHORIZATION) || layers.appended.contains_key(AUTHORIZATION);
    Ok(PlannedHeaders {
        headers,
        caller_authorized,
    })
}

/// Marks every value of `name` in `headers` sensitive.
fn mark_sensitive(headers: &mut HeaderMap, name: &HeaderName) {
    // `entry` may grow the map; look first.
    if headers.contains_key(name) {
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            entry.iter_mut().for_each(|value| value.set_sensitive(true));
        }
    }
}

/// Every name in `upper` replaces all of that name's values in `headers`.
fn replace_names(headers: &mut HeaderMap, upper: &HeaderMap) {
    for name in upper.keys() {
        headers.remove(name);
    }
    for (name, value) in upper {
        headers.append(name.clone(), value.clone());
    }
}

/// Where a relative reference lands under a base path, as httpx's
/// `base_url` puts it: the reference, with or without a leading slash, is
/// appended to the base path, which is taken to end in a slash.
///
/// `base_path` is the path of the client's base URL; `reference` is a
/// relative reference (a path, a query, or both). The result is the path
/// and query to resolve against the base origin; dot segments are left for
/// the URL parser to remove.
///
/// ```
/// use breakwater_core::request::join_path;
///
/// assert_eq!(join_path("/v1/", "users/1"), "/v1/users/1");
/// assert_eq!(join_path("/v1/", "/users/1"), "/v1/users/1");
/// assert_eq!(join_path("/v1", "users/1"), "/v1/users/1");
/// assert_eq!(join_path("/", "/users?page=2"), "/users?page=2");
/// assert_eq!(join_path("/v1/", ""), "/v1/");
/// assert_eq!(join_path("/v1", "?page=2"), "/v1/?page=2");
/// assert_eq!(join_path("/", ""), "/");
/// ```
pub fn join_path(base_path: &str, reference: &str) -> String {
    let base = base_path.trim_end_matches('/');
    let rest = reference.trim_start_matches('/');
    let mut joined = String::with_capacity(base.len() + rest.len() + 2);
    if !base.starts_with('/') {
        joined.push('/');
    }
    joined.push_str(base);
    if !joined.ends_with('/') {
        joined.push('/');
    }
    joined.push_str(rest);
    joined
}
