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
use std::time::Duration;

pub use breakwater_core::policy::auth::{Secret, TokenFetchError, TokenResponse};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};

use crate::runtime::BoxFuture;

/// Fetches a fresh access token. Implemented for closures returning a future,
/// and by [`OAuth2ClientCredentials`].
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

/// The OAuth 2.0 client-credentials grant (RFC 6749 §4.4) as a [`TokenSource`].
///
/// It posts `grant_type=client_credentials` with the client id and secret
/// (HTTP Basic is not used; the form fields work with every provider we know)
/// to the token endpoint through its own [`Client`](crate::Client), so the
/// token endpoint gets its own pool, retries and breaker, separate from the
/// API it unlocks.
#[derive(Clone)]
pub struct OAuth2ClientCredentials {
    client: crate::Client,
    token_url: String,
    client_id: String,
    client_secret: Secret,
    scope: Option<String>,
}

impl fmt::Debug for OAuth2ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scope", &self.scope)
            .finish()
    }
}

impl OAuth2ClientCredentials {
    /// A grant against `token_url` (absolute, or relative to `client`'s base URL).
    pub fn new(
        client: crate::Client,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> Self {
        OAuth2ClientCredentials {
            client,
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: None,
        }
    }

    /// Asks for this scope (space-separated scopes, as the provider expects them).
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
}

#[derive(serde::Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    expires_in: Option<Seconds>,
    error: Option<String>,
}

/// `expires_in` as providers send it: a number, or a number in a string.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(f64),
    Text(String),
}

impl Seconds {
    /// A positive lifetime, or `None` for anything else (zero, negative,
    /// unparsable, or too large for a `Duration`, which must not panic).
    fn lifetime(&self) -> Option<Duration> {
        let secs = match self {
            Seconds::Number(n) => *n,
            Seconds::Text(t) => t.trim().parse().ok()?,
        };
        (secs > 0.0)
            .then(|| Duration::try_from_secs_f64(secs).ok())
            .flatten()
    }
}

impl TokenSource for OAuth2ClientCredentials {
    fn fetch(&self) -> BoxFuture<'static, Result<TokenResponse, TokenFetchError>> {
        let this = self.clone();
        Box::pin(async move {
            let mut form = vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", this.client_id.clone()),
                ("client_secret", this.client_secret.expose().to_owned()),
            ];
            if let Some(scope) = &this.scope {
                form.push(("scope", scope.clone()));
            }
            let response = this
                .client
                .post(&this.token_url)
                .form(&form)
                .send()
                .await
                .map_err(|e| match e.kind() {
                    crate::ErrorKind::Timeout(_) => TokenFetchError::Timeout,
                    _ => TokenFetchError::Transport,
                })?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|_| TokenFetchError::Transport)?;
            let parsed: Option<TokenBody> = serde_json::from_slice(&body).ok();
            if !status.is_success() {
                return Err(match parsed.and_then(|b| b.error) {
                    Some(code) => TokenFetchError::from_oauth_error(&code, Some(status)),
                    None => TokenFetchError::from_status(status),
                });
            }
            let body = parsed.ok_or(TokenFetchError::MalformedResponse)?;
            let token = body
                .access_token
                .ok_or(TokenFetchError::MalformedResponse)?;
            let expires_in = body.expires_in.as_ref().and_then(Seconds::lifetime);
            Ok(TokenResponse::new(token.into(), expires_in))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_read_leniently_and_never_panics() {
        let parse = |json: &str| {
            serde_json::from_str::<TokenBody>(json)
                .unwrap()
                .expires_in
                .and_then(|s| s.lifetime())
        };
        assert_eq!(
            parse(r#"{"expires_in":3600}"#),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse(r#"{"expires_in":"3599"}"#),
            Some(Duration::from_secs(3599))
        );
        assert_eq!(
            parse(r#"{"expires_in":1e20}"#),
            None,
            "too large: ignored, not a panic"
        );
        assert_eq!(parse(r#"{"expires_in":-5}"#), None);
        assert_eq!(parse(r#"{"expires_in":"soon"}"#), None);
        assert_eq!(parse(r#"{}"#), None);
    }
}
