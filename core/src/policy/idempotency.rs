//! Idempotency: which requests may be resent, and the idempotency key of a logical call.
//!
//! A request may be resent after its bytes may have reached the server only if resending is
//! harmless: its method is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT,
//! DELETE, plus QUERY) or it carries an idempotency key that the server honours
//! (docs/spec/idempotency.md). Everything else is resent only on proof that it was not sent or
//! not processed (the safety rule, enforced in `crate::policy::retry::decide`;
//! docs/spec/idempotency.md#never-left-the-client).
//!
//! Keys (docs/spec/idempotency.md#keys):
//! - one key per logical call, decided once by [`key_for_call`] and sent unchanged on every
//!   attempt (ordinary, transparent, one-shot and auth-replay retries alike);
//! - a caller's own key (for example an order id) is always used, after validation
//!   ([`IdempotencyKey::new`]: 1–255 visible ASCII characters, Stripe's limit). Supplying a key
//!   is the caller's declaration that the upstream honours it, so the request counts as keyed;
//! - automatic keys are generated only for POST and PATCH, and only when the user declared that
//!   the upstream honours them ([`IdempotencyConfig::with_auto_keys`], **off** by default): a key
//!   sent to a server that ignores it would make retries look safe while they are not;
//! - generated keys are version-4 UUIDs (RFC 9562) drawn from the caller-seeded RNG, so a
//!   simulation replays them;
//! - the header is `Idempotency-Key` by default, configurable (`PayPal-Request-Id`, ...); the
//!   wire format is the raw key by default (what Stripe, Adyen and PayPal accept) or an RFC 8941
//!   sf-string (quoted, as the IETF draft requires);
//! - responses (docs/spec/idempotency.md#responses-to-a-keyed-request, read by the outcome
//!   table through [`keyed_status`]): 409 on a keyed request means the duplicate is still in
//!   flight → retry with backoff, counted, charged to the budget, breaker-neutral; 422 on a
//!   keyed request means the key was reused with another payload → terminal
//!   `IdempotencyKeyMismatch`.

use std::fmt;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// Whether `method` is idempotent per RFC 9110 §9.2.2 (GET, HEAD, OPTIONS, TRACE, PUT,
/// DELETE) or the QUERY method draft.
///
/// ```
/// use breakwater_core::policy::idempotency::is_idempotent;
/// use http::Method;
///
/// assert!(is_idempotent(&Method::PUT));
/// assert!(!is_idempotent(&Method::POST));
/// assert!(is_idempotent(&"QUERY".parse().unwrap()));
/// ```
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || method.as_str() == "QUERY"
}

/// The caller's explicit statement about a request's idempotency
/// (docs/spec/idempotency.md#idempotent-requests).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
#[non_exhaustive]
pub enum Idempotence {
    /// Decided by the method ([`is_idempotent`]). The default.
    #[default]
    ByMethod,
    /// The caller asserts the request is idempotent (say, a POST that is a search).
    Idempotent,
    /// The caller marks the request non-idempotent (say, a PUT that appends).
    NonIdempotent,
}

impl Idempotence {
    /// Whether a request with `method` is idempotent under this statement.
    pub fn resolve(self, method: &Method) -> bool {
        match self {
            Idempotence::ByMethod => is_idempotent(method),
            Idempotence::Idempotent => true,
            Idempotence::NonIdempotent => false,
        }
    }
}

/// How a key is written in its header.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
#[non_exhaustive]
pub enum KeyWireFormat {
    /// The key as is: `Idempotency-Key: 8e03978e-...`. The default.
    #[default]
    Raw,
    /// An RFC 8941 string item: `Idempotency-Key: "8e03978e-..."`.
    SfString,
}

/// Idempotency-key settings for an upstream (or a route of it).
///
/// Defaults: header `Idempotency-Key`, no automatic keys, raw wire format.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IdempotencyConfig {
    header: HeaderName,
    auto_keys: bool,
    wire_format: KeyWireFormat,
}

impl Default for IdempotencyConfig {
    fn default() -> IdempotencyConfig {
        IdempotencyConfig {
            header: HeaderName::from_static("idempotency-key"),
            auto_keys: false,
            wire_format: KeyWireFormat::Raw,
        }
    }
}

impl IdempotencyConfig {
    /// The header that carries the key (for example `PayPal-Request-Id`).
    pub fn with_header(mut self, header: HeaderName) -> IdempotencyConfig {
        self.header = header;
        self
    }

    /// Declares that the upstream honours keys, so that POST and PATCH get one automatically.
    pub fn with_auto_keys(mut self, upstream_honours_keys: bool) -> IdempotencyConfig {
        self.auto_keys = upstream_honours_keys;
        self
    }

    /// How the key is written in its header.
    pub fn with_wire_format(mut self, format: KeyWireFormat) -> IdempotencyConfig {
        self.wire_format = format;
        self
    }

    /// The header that carries the key.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Whether POST and PATCH get an automatic key.
    pub fn auto_keys(&self) -> bool {
        self.auto_keys
    }

    /// How the key is written.
    pub fn wire_format(&self) -> KeyWireFormat {
        self.wire_format
    }
}

/// A validated idempotency key: 1–255 visible ASCII characters (`!` to `~`).
///
/// Keys are not secrets, but a guessable key lets others read cached responses on some
/// servers: prefer [`IdempotencyKey::generate`] or a value with enough entropy.
///
/// ```
/// use breakwater_core::policy::idempotency::IdempotencyKey;
///
/// let key = IdempotencyKey::new("order-1234").unwrap();
/// assert_eq!(key.as_str(), "order-1234");
/// assert!(IdempotencyKey::new("has space").is_err());
///
/// let mut rng = fastrand::Rng::with_seed(7);
/// let generated = IdempotencyKey::generate(&mut rng);
/// assert_eq!(generated.as_str().len(), 36);
/// assert_eq!(&generated.as_str()[14..15], "4");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Box<str>);

/// The longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;

/// Why a caller's key was rejected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum InvalidIdempotencyKey {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// A byte is not visible ASCII (space, control, or non-ASCII).
    InvalidByte {
        /// Byte offset of the first offending byte.
        position: usize,
    },
}

impl fmt::Display for InvalidIdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidIdempotencyKey::Empty => f.write_str("idempotency key is empty"),
            InvalidIdempotencyKey::TooLong { len } => {
                write!(f, "idempotency key is {len} bytes, more than {MAX_KEY_LEN}")
            }
            InvalidIdempotencyKey::InvalidByte { position } => {
                write!(f, "idempotency key byte {position} is not visible ASCII")
            }
        }
    }
}

impl std::error::Error for InvalidIdempotencyKey {}

impl IdempotencyKey {
    /// Validates a caller's own key.
    pub fn new(key: &str) -> Result<IdempotencyKey, InvalidIdempotencyKey> {
        if key.is_empty() {
            return Err(InvalidIdempotencyKey::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(InvalidIdempotencyKey::TooLong { len: key.len() });
        }
        if let Some(position) = key.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey::InvalidByte { position });
        }
        Ok(IdempotencyKey(key.into()))
    }

    /// A version-4 UUID (RFC 9562 §5.4), lowercase and hyphenated, from `rng`.
    pub fn generate(rng: &mut fastrand::Rng) -> IdempotencyKey {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes);
        // Version 4 in the high nibble of octet 6, variant 0b10 in the top bits of octet 8.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(36);
        for (i, byte) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                text.push('-');
            }
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        IdempotencyKey(text.into_boxed_str())
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The header value in `format`. Build it once per call and clone it per attempt.
    pub fn header_value(&self, format: KeyWireFormat) -> HeaderValue {
        let value = match format {
            KeyWireFormat::Raw => HeaderValue::from_str(&self.0),
            KeyWireFormat::SfString => {
                let mut quoted = String::with_capacity(self.0.len() + 2);
                quoted.push('"');
                for c in self.0.chars() {
                    if c == '"' || c == '\\' {
                        quoted.push('\\');
                    }
                    quoted.push(c);
                }
                quoted.push('"');
                HeaderValue::from_str(&quoted)
            }
        };
        // Validation admits only visible ASCII, which every header value accepts; the
        // fallback is unreachable and exists only so that no input can panic.
        value.unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of one logical call, decided once at submission.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum CallKey {
    /// The call carries no key.
    None,
    /// The caller supplied the key.
    Caller(IdempotencyKey),
    /// The key was generated because the upstream was declared to honour keys.
    Generated(IdempotencyKey),
}

impl CallKey {
    /// The key, if any.
    pub fn key(&self) -> Option<&IdempotencyKey> {
        match self {
            CallKey::None => None,
            CallKey::Caller(key) | CallKey::Generated(key) => Some(key),
        }
    }

    /// Whether the call is keyed (docs/spec/idempotency.md#idempotent-requests).
    pub fn is_keyed(&self) -> bool {
        self.key().is_some()
    }
}

/// Decides the key of a logical call, once: the caller's key if given; else a generated
/// UUIDv4 for POST and PATCH when the config declares that the upstream honours keys; else
/// none. Draws from `rng` only when it generates.
pub fn key_for_call(
    config: &IdempotencyConfig,
    method: &Method,
    caller_key: Option<IdempotencyKey>,
    rng: &mut fastrand::Rng,
) -> CallKey {
    match caller_key {
        Some(key) => CallKey::Caller(key),
        None if config.auto_keys && (*method == Method::POST || *method == Method::PATCH) => {
            CallKey::Generated(IdempotencyKey::generate(rng))
        }
        None => CallKey::None,
    }
}

/// What a status means for the key of a keyed request
/// (docs/spec/idempotency.md#responses-to-a-keyed-request).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum KeyedStatus {
    /// The status says nothing about the key, or the request is not keyed.
    Unrelated,
    /// 409 on a keyed request: a duplicate is still in flight; retry with backoff.
    DuplicateInFlight,
    /// 422 on a keyed request: the key was reused with another payload; terminal.
    PayloadMismatch,
}

/// The meaning of `status` for the key, if the request is `keyed`.
pub fn keyed_status(status: StatusCode, keyed: bool) -> KeyedStatus {
    match (keyed, status) {
        (true, StatusCode::CONFLICT) => KeyedStatus::DuplicateInFlight,
        (true, StatusCode::UNPROCESSABLE_ENTITY) => KeyedStatus::PayloadMismatch,
        _ => KeyedStatus::Unrelated,
    }
}

/// Whether the server says it replayed a stored response (`Idempotent-Replayed: true`), to
/// surface to the caller.
pub fn is_replayed(headers: &HeaderMap) -> bool {
    headers
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_follow_rfc_9110() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "QUERY"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE", "get"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
        assert!(Idempotence::Idempotent.resolve(&Method::POST));
        assert!(!Idempotence::NonIdempotent.resolve(&Method::GET));
    }

    #[test]
    fn caller_keys_are_validated() {
        assert_eq!(IdempotencyKey::new(""), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(
            IdempotencyKey::new(&"a".repeat(256)),
            Err(InvalidIdempotencyKey::TooLong { len: 256 })
        );
        assert!(IdempotencyKey::new(&"a".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::new("ab\u{e9}"),
            Err(InvalidIdempotencyKey::InvalidByte { position: 2 })
        );
        assert_eq!(
            IdempotencyKey::new("a\tb"),
            Err(InvalidIdempotencyKey::InvalidByte { position: 1 })
        );
    }

    #[test]
    fn wire_formats() {
        let key = IdempotencyKey::new(r#"a"b\c"#).unwrap();
        assert_eq!(key.header_value(KeyWireFormat::Raw), r#"a"b\c"#);
        assert_eq!(key.header_value(KeyWireFormat::SfString), r#""a\"b\\c""#);
    }

    #[test]
    fn automatic_keys_only_for_post_and_patch_when_declared() {
        let mut rng = fastrand::Rng::with_seed(1);
        let off = IdempotencyConfig::default();
        let on = IdempotencyConfig::default().with_auto_keys(true);
        assert_eq!(
            key_for_call(&off, &Method::POST, None, &mut rng),
            CallKey::None
        );
        assert!(matches!(
            key_for_call(&on, &Method::PATCH, None, &mut rng),
            CallKey::Generated(_)
        ));
        assert_eq!(
            key_for_call(&on, &Method::PUT, None, &mut rng),
            CallKey::None
        );
        let mine = IdempotencyKey::new("order-9").unwrap();
        assert_eq!(
            key_for_call(&off, &Method::POST, Some(mine.clone()), &mut rng),
            CallKey::Caller(mine)
        );
    }

    #[test]
    fn keyed_statuses_and_replay_indicator() {
        assert_eq!(
            keyed_status(StatusCode::CONFLICT, true),
            KeyedStatus::DuplicateInFlight
        );
        assert_eq!(
            keyed_status(StatusCode::CONFLICT, false),
            KeyedStatus::Unrelated
        );
        assert_eq!(
            keyed_status(StatusCode::UNPROCESSABLE_ENTITY, true),
            KeyedStatus::PayloadMismatch
        );
        let mut headers = HeaderMap::new();
        assert!(!is_replayed(&headers));
        headers.insert("idempotent-replayed", HeaderValue::from_static("True"));
        assert!(is_replayed(&headers));
    }
}
