//! OAuth 2.0 client credentials: a [`TokenSource`] that asks a token endpoint.
//!
//! ```no_run
//! # fn main() -> Result<(), breakwater::Error> {
//! # let runtime: std::sync::Arc<dyn breakwater::runtime::Runtime> = unimplemented!();
//! let idp = breakwater::Client::builder(runtime.clone(), "https://login.example.com/").build()?;
//! let grant = breakwater::oauth2::ClientCredentials::new(idp, "oauth/token", "my-app", "s3cr3t")
//!     .with_scope("orders:read");
//! let api = breakwater::Client::builder(runtime, "https://api.example.com/v1/")
//!     .token_source(grant)
//!     .build()?;
//! # let _ = api;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use crate::auth::{Secret, TokenFetchError, TokenResponse, TokenSource};
use crate::client::Client;
use crate::error::ErrorKind;
use crate::runtime::BoxFuture;

/// The OAuth 2.0 client-credentials grant (RFC 6749 §4.4) as a [`TokenSource`].
///
/// It posts `grant_type=client_credentials` with the client id and secret
/// (HTTP Basic is not used; the form fields work with every provider we know)
/// to the token endpoint through its own [`Client`], so the
/// token endpoint gets its own pool, retries and breaker, separate from the
/// API it unlocks.
#[derive(Clone)]
pub struct ClientCredentials {
    client: Client,
    token_url: String,
    client_id: String,
    client_secret: Secret,
    scope: Option<String>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scope", &self.scope)
            .finish()
    }
}

impl ClientCredentials {
    /// A grant against `token_url` (absolute, or relative to `client`'s base URL).
    pub fn new(
        client: Client,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> Self {
        ClientCredentials {
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

impl TokenSource for ClientCredentials {
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
            // Asking for a token changes nothing on the server but the token
            // it hands out, so the request is retried like an idempotent one.
            let response = this
                .client
                .post(&this.token_url)
                .idempotent(true)
                .form(&form)
                .send()
                .await
                .map_err(|e| match e.kind() {
                    ErrorKind::Timeout(_) => TokenFetchError::Timeout,
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
