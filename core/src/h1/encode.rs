//! Request encoding.
//!
//! The encoder owns the framing headers: it writes `Host`, `Content-Length`
//! and `Transfer-Encoding` itself from what it is told about the body, so a
//! request can never carry two framings. A caller's `Host` replaces the
//! computed one (virtual hosting); a caller's framing header is refused.
//!
//! Every byte that reaches the buffer is checked: a CR, LF or NUL (or any
//! other control character) in a header value or the request target would
//! let a caller split one request into two, so it is an [`EncodeError`] and
//! nothing of the request is written.

use std::fmt;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

use crate::Origin;

/// What the encoder is told about the request body; it decides the framing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BodyLength {
    /// The request has no body at all (a plain GET, HEAD or DELETE).
    None,
    /// A body of exactly this many bytes follows; sent with `Content-Length`.
    ///
    /// For POST, PUT and PATCH a length of zero is still announced
    /// (`Content-Length: 0`), because servers and proxies may otherwise wait
    /// for a body or answer 411; for other methods an empty body is sent as
    /// no body.
    Known(u64),
    /// A streamed body of unknown length; sent with
    /// `Transfer-Encoding: chunked`, framed with [`encode_chunk_prefix`] and
    /// ended with [`LAST_CHUNK`].
    Streamed,
}

/// Why a request head could not be encoded. Nothing was written.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EncodeError {
    /// A header value holds a control character (CR, LF, NUL, ...) that could split the request.
    InvalidHeaderValue {
        /// The header whose value was refused.
        name: HeaderName,
    },
    /// The request target (path and query) holds a space or control character.
    InvalidTarget,
    /// The caller set a framing header (`Content-Length` or `Transfer-Encoding`);
    /// framing is derived from [`BodyLength`] so that it can never be ambiguous.
    FramingHeaderNotAllowed {
        /// The refused header.
        name: HeaderName,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::InvalidHeaderValue { name } => {
                write!(f, "value of header `{name}` contains a control character")
            }
            EncodeError::InvalidTarget => {
                f.write_str("request target contains a space or control character")
            }
            EncodeError::FramingHeaderNotAllowed { name } => write!(
                f,
                "header `{name}` is set by the encoder from the body length and may not be given"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// The terminating zero-length chunk of a chunked body, with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the size line of one chunk of `len` bytes (`len` must not be 0;
/// use [`LAST_CHUNK`] to end the body).
///
/// The chunk's data and then `\r\n` must follow. Writing the prefix
/// separately lets a driver send the data from the caller's own buffer
/// without copying it.
///
/// ```
/// let mut out = Vec::new();
/// breakwater_core::h1::encode_chunk_prefix(&mut out, 300);
/// assert_eq!(out, b"12c\r\n");
/// ```
pub fn encode_chunk_prefix(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len as u64;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends an HTTP/1.1 request head for `uri` to `out`.
///
/// The target is the origin form of `uri` (path and query; `/` when the
/// path is empty); `Host` names `origin`, with the port when it is not the
/// scheme's default, unless `headers` carries its own `Host`. The caller's
/// headers follow in their map's order, and the framing header derived from
/// `body` comes last. Nothing is allocated beyond growing `out`, which the
/// caller keeps from one request to the next.
///
/// On error `out` is left as it was.
///
/// ```
/// use breakwater_core::h1::{encode_request_head, BodyLength};
/// use breakwater_core::Origin;
/// use http::{HeaderMap, Method, Uri};
///
/// let uri: Uri = "http://api.example.com:8080/v1/users?page=2".parse().unwrap();
/// let origin = Origin::from_uri(&uri).unwrap();
/// let mut headers = HeaderMap::new();
/// headers.insert("accept", "application/json".parse().unwrap());
///
/// let mut out = Vec::new();
/// encode_request_head(&mut out, &Method::POST, &uri, &origin, &headers, BodyLength::Known(0))?;
/// assert_eq!(
///     out,
///     b"POST /v1/users?page=2 HTTP/1.1\r\nhost: api.example.com:8080\r\n\
///       accept: application/json\r\ncontent-length: 0\r\n\r\n"
/// );
/// # Ok::<(), breakwater_core::h1::EncodeError>(())
/// ```
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    origin: &Origin,
    headers: &HeaderMap,
    body: BodyLength,
) -> Result<(), EncodeError> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    encode_request_head_for_target(out, method, target, origin, headers, body)
}

/// [`encode_request_head`] with the request target given as text in origin
/// form (`/path?query`), as a URL library holds it, so that no [`Uri`] has
/// to be built for each request. An empty target is `/` and a bare query
/// `?x` is sent as `/?x`; `*` (the asterisk form, for `OPTIONS`) is sent as
/// it is. Any other target that does not start with `/`, or one that holds a
/// space or a control byte, is refused.
///
/// ```
/// use breakwater_core::h1::{encode_request_head_for_target, BodyLength, EncodeError};
/// use breakwater_core::{Origin, Scheme};
/// use http::{HeaderMap, Method};
///
/// let origin = Origin::new(Scheme::Https, "api.example.com", 443);
/// let (mut out, headers) = (Vec::new(), HeaderMap::new());
/// encode_request_head_for_target(&mut out, &Method::GET, "/v1/users?page=2", &origin, &headers, BodyLength::None)?;
/// assert_eq!(out, b"GET /v1/users?page=2 HTTP/1.1\r\nhost: api.example.com\r\n\r\n");
///
/// let refused = encode_request_head_for_target(&mut out, &Method::GET, "/a b", &origin, &headers, BodyLength::None);
/// assert_eq!(refused, Err(EncodeError::InvalidTarget));
/// # Ok::<(), EncodeError>(())
/// ```
pub fn encode_request_head_for_target(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    origin: &Origin,
    headers: &HeaderMap,
    body: BodyLength,
) -> Result<(), EncodeError> {
    encode_request_head_with(out, method, target, origin, headers, &[], body)
}

/// [`encode_request_head_for_target`] with per-attempt headers that replace
/// any of the same name in `headers` (an attempt's idempotency key or
/// token), so that a request's shared header map is never copied to add them.
pub fn encode_request_head_with(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    origin: &Origin,
    headers: &HeaderMap,
    overrides: &[(&HeaderName, &HeaderValue)],
    body: BodyLength,
) -> Result<(), EncodeError> {
    encode_head(out, method, target, origin, headers, overrides, body, false)
}

/// [`encode_request_head_with`] for an HTTP proxy: the request names its
/// origin in absolute form (`GET http://host:port/path HTTP/1.1`), built
/// here from `origin` and the origin-form `target`, so that it cannot name
/// another origin than the connection's (docs/spec/proxy.md).
pub fn encode_proxy_request_head_with(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    origin: &Origin,
    headers: &HeaderMap,
    overrides: &[(&HeaderName, &HeaderValue)],
    body: BodyLength,
) -> Result<(), EncodeError> {
    if origin.scheme() != crate::Scheme::Http {
        return Err(EncodeError::InvalidTarget);
    }
    let path = if target.starts_with('/') { "" } else { "/" };
    let absolute = format!(
        "http://{}{path}{target}",
        crate::proxy::tunnel::authority(origin)
    );
    encode_head(
        out, method, &absolute, origin, headers, overrides, body, true,
    )
}

#[allow(clippy::too_many_arguments)]
fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    origin: &Origin,
    headers: &HeaderMap,
    overrides: &[(&HeaderName, &HeaderValue)],
    body: BodyLength,
    absolute: bool,
) -> Result<(), EncodeError> {
    // A query without a path (`?x`, as `http::Uri` gives for `http://h?x`)
    // is sent under the root path; `*` is the asterisk form of OPTIONS; an
    // `http://` URL is the absolute form an HTTP proxy is sent, and only by
    // `encode_proxy_request_head_with`.
    let root = match target.as_bytes().first() {
        None | Some(b'?') => "/",
        Some(b'/') => "",
        Some(b'*') if target.len() == 1 => "",
        Some(b'h') if absolute && target.starts_with("http://") => "",
        Some(_) => return Err(EncodeError::InvalidTarget),
    };
    // Targets from `http::Uri` or `url::Url` are already free of spaces and
    // controls, but the check is what makes the guarantee local to this function.
    if !target.bytes().all(is_target_byte) {
        return Err(EncodeError::InvalidTarget);
    }
    let all = headers
        .iter()
        .chain(overrides.iter().map(|&(name, value)| (name, value)));
    for (name, value) in all {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            return Err(EncodeError::FramingHeaderNotAllowed { name: name.clone() });
        }
        if !value.as_bytes().iter().copied().all(is_field_value_byte) {
            return Err(EncodeError::InvalidHeaderValue { name: name.clone() });
        }
    }

    out.reserve(64 + target.len() + headers.len() * 32);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(root.as_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(origin.host().as_bytes());
        if !origin.has_default_port() {
            out.push(b':');
            push_decimal(out, u64::from(origin.port()));
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if overrides.iter().any(|(replaced, _)| *replaced == name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in overrides {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        BodyLength::None => {}
        BodyLength::Known(0) if !method_expects_body(method) => {}
        BodyLength::Known(len) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, len);
            out.extend_from_slice(b"\r\n");
        }
        BodyLength::Streamed => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Methods whose requests carry a body by definition, so an empty one is announced.
fn method_expects_body(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

/// Visible ASCII and obs-text: anything but a space or a control character.
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

/// RFC 9110 §5.5 field-value bytes: visible characters, SP, HTAB and obs-text.
fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn encode(method: Method, uri: &str, headers: &HeaderMap, body: BodyLength) -> String {
        let uri: Uri = uri.parse().unwrap();
        let origin = Origin::from_uri(&uri).unwrap();
        let mut out = Vec::new();
        encode_request_head(&mut out, &method, &uri, &origin, headers, body).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bodiless_methods_get_no_framing_and_default_ports_are_left_out() {
        let head = encode(
            Method::GET,
            "https://example.com",
            &HeaderMap::new(),
            BodyLength::None,
        );
        assert_eq!(head, "GET / HTTP/1.1\r\nhost: example.com\r\n\r\n");
        let head = encode(
            Method::DELETE,
            "http://example.com/x",
            &HeaderMap::new(),
            BodyLength::Known(0),
        );
        assert_eq!(head, "DELETE /x HTTP/1.1\r\nhost: example.com\r\n\r\n");
    }

    #[test]
    fn empty_bodies_of_post_put_patch_announce_zero_length() {
        for method in [Method::POST, Method::PUT, Method::PATCH] {
            let head = encode(method, "http://h/", &HeaderMap::new(), BodyLength::Known(0));
            assert!(head.ends_with("content-length: 0\r\n\r\n"), "{head}");
        }
    }

    #[test]
    fn streamed_bodies_are_chunked() {
        let head = encode(
            Method::POST,
            "http://h/",
            &HeaderMap::new(),
            BodyLength::Streamed,
        );
        assert!(
            head.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{head}"
        );
    }

    #[test]
    fn a_callers_host_replaces_the_computed_one() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("virtual.example"));
        let head = encode(
            Method::GET,
            "http://10.0.0.1:8080/",
            &headers,
            BodyLength::None,
        );
        assert_eq!(head, "GET / HTTP/1.1\r\nhost: virtual.example\r\n\r\n");
    }

    #[test]
    fn values_that_could_split_the_request_cannot_reach_the_wire() {
        for bad in [&b"a\r\nx-injected: 1"[..], b"a\nb", b"a\0b", b"a\rb"] {
            // `http`'s checked constructors refuse them already...
            assert!(HeaderValue::from_bytes(bad).is_err());
            // ...and the encoder's own check, which also covers values built
            // with http's `unsafe` unchecked constructor, refuses them again.
            assert!(!bad.iter().copied().all(is_field_value_byte));
        }
        // Tabs and obs-text are legal field content and pass.
        assert!(b"a\tb \x80\xff".iter().copied().all(is_field_value_byte));
        for bad_target in ["/a b", "/a\r\n", "/\x7f"] {
            assert!(!bad_target.bytes().all(is_target_byte));
        }
    }

    #[test]
    fn framing_headers_from_the_caller_are_refused() {
        for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING] {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), HeaderValue::from_static("5"));
            let uri: Uri = "http://h/".parse().unwrap();
            let err = encode_request_head(
                &mut Vec::new(),
                &Method::POST,
                &uri,
                &Origin::from_uri(&uri).unwrap(),
                &headers,
                BodyLength::Known(5),
            )
            .unwrap_err();
            assert_eq!(err, EncodeError::FramingHeaderNotAllowed { name });
        }
    }

    #[test]
    fn chunk_prefixes_are_lowercase_hex() {
        for (len, expected) in [
            (1usize, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (1 << 20, "100000\r\n"),
        ] {
            let mut out = Vec::new();
            encode_chunk_prefix(&mut out, len);
            assert_eq!(out, expected.as_bytes());
        }
    }
}
