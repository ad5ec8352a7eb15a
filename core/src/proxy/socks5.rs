//! The SOCKS5 handshake (RFC 1928, with RFC 1929's user name and password),
//! as bytes to send and bytes to read (docs/spec/proxy.md#socks5). The
//! driver writes each message and reads each answer; every decision about
//! the answers is here.
//!
//! ```
//! use breakwater_core::proxy::socks5::{greeting, read_choice, Choice};
//!
//! assert_eq!(greeting(false), [5, 1, 0]);
//! assert_eq!(greeting(true), [5, 2, 0, 2]);
//! assert_eq!(read_choice([5, 0]), Ok(Choice::NoAuthentication));
//! assert!(read_choice([5, 0xff]).is_err());
//! ```

use core::net::IpAddr;
use std::fmt;

use crate::policy::auth::Secret;

/// The first message: the authentication methods offered (none, and user
/// name and password when there are credentials).
pub fn greeting(with_credentials: bool) -> Vec<u8> {
    if with_credentials {
        vec![5, 2, 0, 2]
    } else {
        vec![5, 1, 0]
    }
}

/// The method the proxy chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// No authentication.
    NoAuthentication,
    /// User name and password (RFC 1929).
    UserPassword,
}

/// Reads the proxy's two-byte choice of method.
pub fn read_choice(reply: [u8; 2]) -> Result<Choice, Socks5Error> {
    match reply {
        [5, 0] => Ok(Choice::NoAuthentication),
        [5, 2] => Ok(Choice::UserPassword),
        // 0xff is "no acceptable method"; any other is one we did not offer.
        [5, _] => Err(Socks5Error::NoAcceptableMethod),
        _ => Err(Socks5Error::Malformed),
    }
}

/// The user name and password message; each is at most 255 bytes.
pub fn authentication(user: &str, password: &Secret) -> Result<Vec<u8>, Socks5Error> {
    let (user, password) = (user.as_bytes(), password.expose().as_bytes());
    let (Ok(user_len), Ok(password_len)) = (u8::try_from(user.len()), u8::try_from(password.len()))
    else {
        return Err(Socks5Error::CredentialsTooLong);
    };
    let mut out = Vec::with_capacity(3 + user.len() + password.len());
    out.extend_from_slice(&[1, user_len]);
    out.extend_from_slice(user);
    out.push(password_len);
    out.extend_from_slice(password);
    Ok(out)
}

/// Reads the proxy's two-byte answer to the credentials.
pub fn read_authentication(reply: [u8; 2]) -> Result<(), Socks5Error> {
    match reply {
        [1, 0] => Ok(()),
        [1, _] => Err(Socks5Error::AuthenticationFailed),
        _ => Err(Socks5Error::Malformed),
    }
}

/// Where the proxy is to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// An address the client resolved (`socks5://`, or a literal).
    Address(IpAddr, u16),
    /// A name for the proxy to resolve (`socks5h://`), at most 255 bytes.
    Name(&'a str, u16),
}

/// The `CONNECT` command for `target`.
pub fn connect(target: &Target<'_>) -> Result<Vec<u8>, Socks5Error> {
    let mut out = vec![5, 1, 0];
    let port = match target {
        Target::Address(IpAddr::V4(v4), port) => {
            out.push(1);
            out.extend_from_slice(&v4.octets());
            port
        }
        Target::Address(IpAddr::V6(v6), port) => {
            out.push(4);
            out.extend_from_slice(&v6.octets());
            port
        }
        Target::Name(name, port) => {
            let len = u8::try_from(name.len()).map_err(|_| Socks5Error::NameTooLong)?;
            out.extend_from_slice(&[3, len]);
            out.extend_from_slice(name.as_bytes());
            port
        }
    };
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// The length of the proxy's answer to `CONNECT`, once its first five
/// bytes are known (it depends on the bound address's type), or the
/// refusal those bytes carry.
pub fn reply_len(first: [u8; 5]) -> Result<usize, Socks5Error> {
    let [version, code, _, kind, fifth] = first;
    if version != 5 {
        return Err(Socks5Error::Malformed);
    }
    if code != 0 {
        return Err(Socks5Error::Refused(code));
    }
    // VER REP RSV ATYP, then the address, then the port.
    match kind {
        1 => Ok(4 + 4 + 2),
        4 => Ok(4 + 16 + 2),
        3 => Ok(4 + 1 + usize::from(fifth) + 2),
        _ => Err(Socks5Error::Malformed),
    }
}

/// Why a SOCKS5 handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socks5Error {
    /// The proxy accepts none of the methods offered (it wants
    /// credentials the client does not have, or another method).
    NoAcceptableMethod,
    /// The proxy refused the user name and password.
    AuthenticationFailed,
    /// The user name or password is over 255 bytes.
    CredentialsTooLong,
    /// The host name is over 255 bytes.
    NameTooLong,
    /// The proxy refused the connection with this reply code.
    Refused(u8),
    /// The proxy's answer is not SOCKS5.
    Malformed,
}

impl Socks5Error {
    /// Whether the proxy answered that it could not reach the origin
    /// (network or host unreachable, connection refused, TTL expired), as
    /// opposed to refusing the client.
    pub fn origin_unreachable(self) -> bool {
        matches!(self, Socks5Error::Refused(3..=6))
    }
}

impl fmt::Display for Socks5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socks5Error::NoAcceptableMethod => {
                f.write_str("the SOCKS5 proxy accepts none of the offered authentication methods")
            }
            Socks5Error::AuthenticationFailed => {
                f.write_str("the SOCKS5 proxy refused the user name and password")
            }
            Socks5Error::CredentialsTooLong => {
                f.write_str("the SOCKS5 user name or password is over 255 bytes")
            }
            Socks5Error::NameTooLong => f.write_str("the host name is over 255 bytes"),
            Socks5Error::Refused(code) => {
                let reason = match code {
                    1 => "general failure",
                    2 => "not allowed by its rules",
                    3 => "network unreachable",
                    4 => "host unreachable",
                    5 => "connection refused",
                    6 => "TTL expired",
                    7 => "command not supported",
                    8 => "address type not supported",
                    _ => "unknown reason",
                };
                write!(
                    f,
                    "the SOCKS5 proxy refused the connection: {reason} ({code})"
                )
            }
            Socks5Error::Malformed => f.write_str("the proxy's answer is not SOCKS5"),
        }
    }
}

impl std::error::Error for Socks5Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn the_greeting_and_the_choice() {
        assert_eq!(greeting(false), [5, 1, 0]);
        assert_eq!(greeting(true), [5, 2, 0, 2]);
        assert_eq!(read_choice([5, 0]), Ok(Choice::NoAuthentication));
        assert_eq!(read_choice([5, 0xff]), Err(Socks5Error::NoAcceptableMethod));
        assert_eq!(
            read_choice([5, 1]),
            Err(Socks5Error::NoAcceptableMethod),
            "GSSAPI"
        );
    }

    #[test]
    fn every_refusal_says_why() {
        let reasons = [
            (1, "general failure"),
            (2, "not allowed"),
            (3, "network unreachable"),
            (4, "host unreachable"),
            (5, "connection refused"),
            (6, "TTL expired"),
            (7, "command not supported"),
            (8, "address type not supported"),
            (9, "unknown reason"),
        ];
        for (code, reason) in reasons {
            let shown = Socks5Error::Refused(code).to_string();
            assert!(
                shown.contains(reason) && shown.contains(&format!("({code})")),
                "{shown}"
            );
        }
    }

    #[test]
    fn messages_have_rfc_1928_layouts() {
        assert_eq!(
            connect(&Target::Address(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                8080
            ))
            .unwrap(),
            [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]
        );
        let v6 = connect(&Target::Address(IpAddr::V6(Ipv6Addr::LOCALHOST), 443)).unwrap();
        assert_eq!(&v6[..4], &[5, 1, 0, 4]);
        assert_eq!(v6.len(), 4 + 16 + 2);
        assert_eq!(
            connect(&Target::Name("a.io", 80)).unwrap(),
            [5, 1, 0, 3, 4, b'a', b'.', b'i', b'o', 0, 80]
        );
        assert_eq!(
            connect(&Target::Name(&"x".repeat(256), 80)),
            Err(Socks5Error::NameTooLong)
        );
        assert_eq!(
            authentication("ab", &Secret::new("c")).unwrap(),
            [1, 2, b'a', b'b', 1, b'c']
        );
        assert_eq!(
            authentication(&"u".repeat(256), &Secret::new("p")),
            Err(Socks5Error::CredentialsTooLong)
        );
    }

    #[test]
    fn answers_are_read_to_their_meaning() {
        assert_eq!(read_choice([5, 2]), Ok(Choice::UserPassword));
        assert_eq!(read_choice([4, 0]), Err(Socks5Error::Malformed));
        assert_eq!(read_authentication([1, 0]), Ok(()));
        assert_eq!(
            read_authentication([1, 1]),
            Err(Socks5Error::AuthenticationFailed)
        );
        assert_eq!(reply_len([5, 0, 0, 1, 9]), Ok(10));
        assert_eq!(reply_len([5, 0, 0, 4, 9]), Ok(22));
        assert_eq!(reply_len([5, 0, 0, 3, 9]), Ok(16));
        assert_eq!(reply_len([5, 5, 0, 1, 0]), Err(Socks5Error::Refused(5)));
        assert!(Socks5Error::Refused(5).origin_unreachable());
        assert!(!Socks5Error::Refused(2).origin_unreachable());
        assert_eq!(reply_len([5, 0, 0, 9, 0]), Err(Socks5Error::Malformed));
        assert!(Socks5Error::Refused(2).to_string().contains("not allowed"));
    }
}
