//! Credentials: API keys, bearer tokens, and sources of expiring tokens.
//!
//! Static credentials are headers the client adds to requests for its base
//! origin, and only there: an absolute URL to another origin never carries
//! them. Expiring credentials come from a [`TokenSource`]; the core's token
//! cache decides when to fetch (single flight, early refresh, one replay
//! after a 401), and the client runs the fetch.
//!
//! Secret values are kept in [`Secret`], whose `Debug` prints
//! `Secret(<redacted>)`, and the headers built from them are marked
//! sensitive so that `http`'s own `Debug` hides them too.

use std::fmt;
use std::sync::Arc;

pub use breakwater_core::policy::auth::{Secret, TokenFetchError, TokenResponse};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::runtime::BoxFuture;

/// Fetches a fresh access token. Implemented for closures returning a future,
/// and by [`ClientCredentials`](crate::oauth2::ClientCredentials).
pub trait TokenSource: Send + Sync + 'static {
    /// Requests a new token.
    fn fetch(&self) -> BoxFuture<'static, Result<TokenResponse, TokenFetchError>>;
}

impl<F, Fut> TokenSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<TokenResponse, TokenFetchError>> + Send + 'static,
{
    fn fetch(&self) -> BoxFuture<'static, Result<TokenResponse, TokenFetchError>> {
        Box::pin(self())
    }
}

/// How requests to the base origin are authenticated.
///
/// Static credentials are headers (API keys, a bearer token, and every
/// default header that carries a credential), sent only to the base origin
/// and marked sensitive; they coexist when their names differ. Expiring
/// tokens come from a source and go in `Authorization` per attempt.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    /// Static credential headers, values marked sensitive.
    pub(crate) headers: HeaderMap,
    /// Tokens from a source, cached and refreshed by the core.
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
}

impl Credentials {
    /// Adds a static credential header, replacing one of the same name.
    pub(crate) fn set(&mut self, name: HeaderName, mut value: HeaderValue) {
        value.set_sensitive(true);
        self.headers.insert(name, value);
    }

    /// Adds a value to a static credential header (a repeated default `Cookie`).
    pub(crate) fn add(&mut self, name: HeaderName, mut value: HeaderValue) {
        value.set_sensitive(true);
        self.headers.append(name, value);
    }

    pub(crate) fn bearer_value(
        token: &Secret,
    ) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        HeaderValue::from_str(&format!("Bearer {}", token.expose()))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for name in self.headers.keys() {
            list.entry(&format_args!("{name}: <redacted>"));
        }
        if self.tokens.is_some() {
            list.entry(&format_args!("tokens from a source"));
        }
        list.finish()
    }
}
