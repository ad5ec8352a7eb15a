//! Opening a tunnel through an HTTP proxy (docs/spec/proxy.md#tunnels):
//! the `CONNECT` request, and what the proxy's answer means. Bytes in and
//! out only; the driver writes and reads them.
//!
//! ```
//! use breakwater_core::proxy::tunnel::{connect_request, read_reply, Reply};
//! use breakwater_core::{Origin, Scheme};
//!
//! let origin = Origin::new(Scheme::Https, "api.example.com", 443);
//! let request = connect_request(&origin, None);
//! assert!(request.starts_with(b"CONNECT api.example.com:443 HTTP/1.1\r\n"));
//! assert_eq!(read_reply(b"HTTP/1.1 200 Connection established\r\n\r\n"), Reply::Established);
//! assert_eq!(read_reply(b"HTTP/1.1 200 OK\r\n"), Reply::Incomplete);
//! ```

use std::fmt;

use crate::policy::auth::Secret;
use crate::Origin;

/// The most bytes a proxy's answer to `CONNECT` may take before its end.
pub const MAX_REPLY: usize = 16 * 1024;

/// The `CONNECT` request for a tunnel to `origin`, with basic credentials
/// for the proxy when it asks for them. It carries nothing of the request
/// that will go through the tunnel: the proxy sees the origin's name and
/// port, never its path, headers or body.
pub fn connect_request(origin: &Origin, credentials: Option<(&str, &Secret)>) -> Vec<u8> {
    let authority = authority(origin);
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some((user, password)) = credentials {
        out.extend_from_slice(b"Proxy-Authorization: ");
        out.extend_from_slice(basic_credentials(user, password).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `host:port`, with an IPv6 literal in brackets.
pub fn authority(origin: &Origin) -> String {
    if origin.host().contains(':') {
        format!("[{}]:{}", origin.host(), origin.port())
    } else {
        format!("{}:{}", origin.host(), origin.port())
    }
}

/// `Basic base64(user:password)`, the value of `Proxy-Authorization`.
pub fn basic_credentials(user: &str, password: &Secret) -> String {
    let mut plain = Vec::with_capacity(user.len() + 1 + password.expose().len());
    plain.extend_from_slice(user.as_bytes());
    plain.push(b':');
    plain.extend_from_slice(password.expose().as_bytes());
    format!("Basic {}", base64(&plain))
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What the proxy's answer, so far, says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// More bytes are needed.
    Incomplete,
    /// A 2xx: the tunnel is open, and the bytes after the answer's head
    /// belong to the origin (there are none before the client speaks).
    Established,
    /// The proxy did not open the tunnel.
    Refused(TunnelError),
}

/// Why a proxy did not open a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelError {
    /// 407: the proxy wants credentials, or refused the ones sent.
    AuthenticationRequired {
        /// Whether credentials were sent.
        sent: bool,
    },
    /// The proxy could not reach the origin (502, 503 or 504).
    OriginUnreachable {
        /// The proxy's status.
        status: u16,
    },
    /// Any other status: the proxy's policy refused the tunnel.
    Status {
        /// The proxy's status.
        status: u16,
    },
    /// The answer is not HTTP, or its head is over [`MAX_REPLY`] bytes.
    Malformed,
    /// The proxy sent bytes after its answer, before the client spoke: a
    /// tunnel that does not start clean is not used.
    UnexpectedData,
}

impl TunnelError {
    /// Whether the proxy reported that it could not reach the origin: the
    /// origin's failure (docs/spec/outcomes.md#proxy-unreachable), where
    /// every other refusal is the proxy's.
    pub fn origin_unreachable(&self) -> bool {
        matches!(self, TunnelError::OriginUnreachable { .. })
    }
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::AuthenticationRequired { sent: true } => {
                f.write_str("the proxy refused the credentials (407)")
            }
            TunnelError::AuthenticationRequired { sent: false } => {
                f.write_str("the proxy asks for credentials (407), and none were given")
            }
            TunnelError::OriginUnreachable { status } => {
                write!(f, "the proxy could not reach the origin ({status})")
            }
            TunnelError::Status { status } => {
                write!(f, "the proxy refused to open a tunnel ({status})")
            }
            TunnelError::Malformed => f.write_str("the proxy's answer to CONNECT is not HTTP"),
            TunnelError::UnexpectedData => {
                f.write_str("the proxy sent data into the tunnel before it was used")
            }
        }
    }
}

impl std::error::Error for TunnelError {}

/// Whether the answer to a request sent to an HTTP proxy in absolute form
/// is the proxy's own refusal rather than the origin's response: a 407 is
/// (the proxy wants credentials); any other status may be the origin's.
pub fn absolute_form_refusal(status: u16, credentials_sent: bool) -> Option<TunnelError> {
    (status == 407).then_some(TunnelError::AuthenticationRequired {
        sent: credentials_sent,
    })
}

/// Reads the proxy's answer to `CONNECT` from the bytes received so far.
pub fn read_reply(received: &[u8]) -> Reply {
    read_reply_with(received, false)
}

/// [`read_reply`], knowing whether credentials were sent (for the 407's error).
pub fn read_reply_with(received: &[u8], credentials_sent: bool) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(received) {
        Ok(httparse::Status::Partial) if received.len() > MAX_REPLY => {
            Reply::Refused(TunnelError::Malformed)
        }
        Ok(httparse::Status::Partial) => Reply::Incomplete,
        Err(_) => Reply::Refused(TunnelError::Malformed),
        Ok(httparse::Status::Complete(head_len)) => {
            let status = response.code.unwrap_or(0);
            match status {
                200..=299 if head_len < received.len() => {
                    Reply::Refused(TunnelError::UnexpectedData)
                }
                200..=299 => Reply::Established,
                407 => Reply::Refused(TunnelError::AuthenticationRequired {
                    sent: credentials_sent,
                }),
                502..=504 => Reply::Refused(TunnelError::OriginUnreachable { status }),
                _ => Reply::Refused(TunnelError::Status { status }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scheme;

    #[test]
    fn an_answer_may_grow_to_the_cap_and_no_further() {
        let partial = |len: usize| {
            let mut bytes = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
            bytes.resize(len, b'a');
            bytes
        };
        assert_eq!(read_reply(&partial(2000)), Reply::Incomplete);
        assert_eq!(read_reply(&partial(MAX_REPLY)), Reply::Incomplete);
        assert_eq!(
            read_reply(&partial(MAX_REPLY + 1)),
            Reply::Refused(TunnelError::Malformed)
        );
    }

    #[test]
    fn only_a_407_to_the_absolute_form_is_the_proxys() {
        assert_eq!(
            absolute_form_refusal(407, true),
            Some(TunnelError::AuthenticationRequired { sent: true })
        );
        for status in [200, 401, 403, 502] {
            assert_eq!(absolute_form_refusal(status, true), None, "{status}");
        }
    }

    #[test]
    fn every_refusal_says_why() {
        let cases = [
            (
                TunnelError::AuthenticationRequired { sent: true },
                "refused the credentials (407)",
            ),
            (
                TunnelError::AuthenticationRequired { sent: false },
                "none were given",
            ),
            (
                TunnelError::OriginUnreachable { status: 502 },
                "could not reach the origin (502)",
            ),
            (
                TunnelError::Status { status: 403 },
                "refused to open a tunnel (403)",
            ),
            (TunnelError::Malformed, "not HTTP"),
            (TunnelError::UnexpectedData, "before it was used"),
        ];
        for (error, words) in cases {
            assert!(error.to_string().contains(words), "{error}");
        }
    }

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        assert_eq!(
            basic_credentials("Aladdin", &Secret::new("open sesame")),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn the_request_names_only_the_origin() {
        let origin = Origin::new(Scheme::Https, "::1", 8443);
        let request = connect_request(&origin, Some(("u", &Secret::new("p"))));
        assert_eq!(
            request,
            b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
    }

    #[test]
    fn replies_are_read_to_their_meaning() {
        let cases: &[(&[u8], Reply)] = &[
            (
                b"HTTP/1.1 200 Connection established\r\n\r\n",
                Reply::Established,
            ),
            (
                b"HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\n",
                Reply::Established,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n\x16\x03",
                Reply::Refused(TunnelError::UnexpectedData),
            ),
            (b"HTTP/1.1 200", Reply::Incomplete),
            (b"", Reply::Incomplete),
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
                Reply::Refused(TunnelError::AuthenticationRequired { sent: false }),
            ),
            (
                b"HTTP/1.1 502 Bad Gateway\r\n\r\n",
                Reply::Refused(TunnelError::OriginUnreachable { status: 502 }),
            ),
            (
                b"HTTP/1.1 403 Forbidden\r\n\r\n",
                Reply::Refused(TunnelError::Status { status: 403 }),
            ),
            (
                b"SSH-2.0-OpenSSH\r\n",
                Reply::Refused(TunnelError::Malformed),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                &read_reply(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let endless = [
            b"HTTP/1.1 200 OK\r\n".as_slice(),
            &b"X-Pad: aaaa\r\n".repeat(2000),
        ]
        .concat();
        assert_eq!(read_reply(&endless), Reply::Refused(TunnelError::Malformed));
    }
}
