//! How a token fetch can fail, how that reaches a caller, and misuse of the cache's reports.

use std::fmt;

use http::StatusCode;

use super::{FetchId, TokenState};

/// An RFC 6749 §5.2 `error` code from a token endpoint (plus the two retryable codes of
/// RFC 6749 §4.1.2.1 that some token endpoints also send).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OAuthErrorCode {
    /// `invalid_request`: malformed request.
    InvalidRequest,
    /// `invalid_client`: client authentication failed.
    InvalidClient,
    /// `invalid_grant`: the grant or refresh token is invalid, expired or revoked.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant type.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`.
    InvalidScope,
    /// `server_error`: the server failed; retryable.
    ServerError,
    /// `temporarily_unavailable`: overload or maintenance; retryable.
    TemporarilyUnavailable,
    /// Any other code (an extension); classified by the HTTP status it came with. The
    /// text is not kept, so a server cannot smuggle anything into logs through it.
    Other,
}

impl OAuthErrorCode {
    /// Parses an `error` value (ASCII case-insensitive, surrounding whitespace ignored).
    pub fn parse(code: &str) -> OAuthErrorCode {
        const CODES: [(&str, OAuthErrorCode); 8] = [
            ("invalid_request", OAuthErrorCode::InvalidRequest),
            ("invalid_client", OAuthErrorCode::InvalidClient),
            ("invalid_grant", OAuthErrorCode::InvalidGrant),
            ("unauthorized_client", OAuthErrorCode::UnauthorizedClient),
            (
                "unsupported_grant_type",
                OAuthErrorCode::UnsupportedGrantType,
            ),
            ("invalid_scope", OAuthErrorCode::InvalidScope),
            ("server_error", OAuthErrorCode::ServerError),
            (
                "temporarily_unavailable",
                OAuthErrorCode::TemporarilyUnavailable,
            ),
        ];
        let code = code.trim();
        CODES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(code))
            .map_or(OAuthErrorCode::Other, |&(_, parsed)| parsed)
    }

    /// The code as the RFC spells it (`"other"` for an unrecognised one).
    pub const fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::ServerError => "server_error",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthErrorCode::Other => "other",
        }
    }
}

/// Why a token request produced no token, as the driver reports it.
///
/// [`TokenFetchError::is_retryable`] splits these into retryable and terminal
/// (docs/spec/auth.md#fetch-failures).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFetchError {
    /// The endpoint answered with an RFC 6749 §5.2 error body.
    OAuth {
        /// The `error` code.
        code: OAuthErrorCode,
        /// The status it came with, if the driver knows it.
        status: Option<StatusCode>,
    },
    /// The endpoint answered with an error status and no recognisable error body.
    Status(StatusCode),
    /// Connecting, TLS or the exchange failed before a complete response.
    Transport,
    /// No complete response before the token request's deadline.
    Timeout,
    /// A success status whose body was not a usable token response (a proxy's error page,
    /// a truncated body, no `access_token`).
    MalformedResponse,
    /// A user-supplied token source failed; it says whether asking again may help.
    Source {
        /// Whether a later fetch may succeed.
        retryable: bool,
    },
}

impl TokenFetchError {
    /// Classifies an RFC 6749 §5.2 error body by its `error` code and the HTTP status it
    /// came with.
    ///
    /// ```
    /// use breakwater_core::policy::auth::TokenFetchError;
    /// use http::StatusCode;
    ///
    /// assert!(!TokenFetchError::from_oauth_error("invalid_client", Some(StatusCode::UNAUTHORIZED))
    ///     .is_retryable());
    /// assert!(TokenFetchError::from_oauth_error("temporarily_unavailable", None).is_retryable());
    /// ```
    pub fn from_oauth_error(code: &str, status: Option<StatusCode>) -> TokenFetchError {
        TokenFetchError::OAuth {
            code: OAuthErrorCode::parse(code),
            status,
        }
    }

    /// Classifies a failed token response by its status alone.
    pub fn from_status(status: StatusCode) -> TokenFetchError {
        TokenFetchError::Status(status)
    }

    /// Whether a later fetch may succeed: network errors, timeouts, 5xx, 429 and 408,
    /// `server_error`, `temporarily_unavailable` and malformed success bodies. Everything
    /// else (the six RFC 6749 §5.2 codes, other statuses) is terminal.
    pub fn is_retryable(&self) -> bool {
        match *self {
            TokenFetchError::OAuth { code, status } => match code {
                OAuthErrorCode::ServerError | OAuthErrorCode::TemporarilyUnavailable => true,
                OAuthErrorCode::Other => status.is_some_and(status_is_retryable),
                _ => false,
            },
            TokenFetchError::Status(status) => status_is_retryable(status),
            TokenFetchError::Transport
            | TokenFetchError::Timeout
            | TokenFetchError::MalformedResponse => true,
            TokenFetchError::Source { retryable } => retryable,
        }
    }
}

fn status_is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

impl fmt::Display for TokenFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFetchError::OAuth {
                code,
                status: Some(status),
            } => write!(
                f,
                "token endpoint answered {} (HTTP {})",
                code.as_str(),
                status
            ),
            TokenFetchError::OAuth { code, status: None } => {
                write!(f, "token endpoint answered {}", code.as_str())
            }
            TokenFetchError::Status(status) => write!(f, "token endpoint answered HTTP {status}"),
            TokenFetchError::Transport => f.write_str("token request failed in transport"),
            TokenFetchError::Timeout => f.write_str("token request timed out"),
            TokenFetchError::MalformedResponse => f.write_str("token response was malformed"),
            TokenFetchError::Source { retryable: true } => {
                f.write_str("token source failed (retryable)")
            }
            TokenFetchError::Source { retryable: false } => f.write_str("token source failed"),
        }
    }
}

impl std::error::Error for TokenFetchError {}

/// Why a request gets no token. Carries no token bytes.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Terminal: the endpoint rejected the credential. Not retried until
    /// [`TokenCache::clear_failure`](super::TokenCache::clear_failure).
    Rejected(TokenFetchError),
    /// The token request failed in a way a later one may not; see `retry_cooldown`.
    Unavailable(TokenFetchError),
    /// The endpoint issued a token that had expired by the time it arrived (the fetch took
    /// longer than the token lives). Retryable, like [`AuthError::Unavailable`].
    ExpiredOnArrival,
}

impl AuthError {
    /// Whether nothing will be fetched again until [`TokenCache::clear_failure`](super::TokenCache::clear_failure).
    pub fn is_terminal(&self) -> bool {
        matches!(self, AuthError::Rejected(_))
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Rejected(cause) => write!(f, "credential rejected: {cause}"),
            AuthError::Unavailable(cause) => write!(f, "no token available: {cause}"),
            AuthError::ExpiredOnArrival => f.write_str("token expired before it arrived"),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuthError::Rejected(cause) | AuthError::Unavailable(cause) => Some(cause),
            AuthError::ExpiredOnArrival => None,
        }
    }
}

/// Caller misuse of a [`TokenCache`](super::TokenCache).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCacheError {
    /// The ticket does not name the fetch in flight (it belongs to another cache).
    UnknownTicket {
        /// The ticket's fetch.
        ticket: FetchId,
        /// The fetch actually in flight, if any.
        in_flight: Option<FetchId>,
        /// The state the cache was in.
        state: TokenState,
    },
}

impl fmt::Display for TokenCacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenCacheError::UnknownTicket {
                ticket,
                in_flight,
                state,
            } => write!(
                f,
                "fetch ticket {} is not in flight (in flight: {:?}, state {:?})",
                ticket.get(),
                in_flight.map(FetchId::get),
                state
            ),
        }
    }
}

impl std::error::Error for TokenCacheError {}
