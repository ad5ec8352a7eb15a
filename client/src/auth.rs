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
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};

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
#[derive(Clone, Default)]
pub(crate) enum Credentials {
    #[default]
    None,
    /// A static header (API key or bearer token), already marked sensitive.
    Header(HeaderName, HeaderValue),
    /// Tokens from a source, cached and refreshed by the core.
    Tokens(Arc<dyn TokenSource>),
}

impl Credentials {
    pub(crate) fn api_key(
        header: HeaderName,
        key: &Secret,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        let mut value = HeaderValue::from_str(key.expose())?;
        value.set_sensitive(true);
        Ok(Credentials::Header(header, value))
    }

    pub(crate) fn bearer(token: &Secret) -> Result<Self, http::header::InvalidHeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))?;
        value.set_sensitive(true);
        Ok(Credentials::Header(AUTHORIZATION, value))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Header(name, _) => write!(f, "Header({name}: <redacted>)"),
            Credentials::Tokens(_) => f.write_str("Tokens(<source>)"),
        }
    }
}
