//! Origins: the unit of isolation.
//!
//! Connection pools, breakers, latency windows, retry budgets and Retry-After
//! gates are all kept per origin (RFC 6454: scheme, host, port), so that one
//! slow or failing upstream never takes the capacity or the health record of
//! another.

use std::fmt;
use std::sync::Arc;

use http::uri::{Scheme as UriScheme, Uri};

/// The scheme of an origin. Only the two that an HTTP/1.1 client speaks.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Scheme {
    /// Plain-text `http`.
    Http,
    /// `https`: HTTP over TLS.
    Https,
}

impl Scheme {
    /// The port used when a URI names none.
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// The scheme as written in a URI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Scheme, host and port: the key of every per-upstream record.
///
/// Hosts are stored lower-cased so that `API.example.com` and
/// `api.example.com` share one pool. IPv6 literals keep their brackets.
///
/// ```
/// use breakwater_core::{Origin, Scheme};
///
/// let uri: http::Uri = "https://API.example.com/v1/users?page=2".parse().unwrap();
/// let origin = Origin::from_uri(&uri).unwrap();
/// assert_eq!(origin.scheme(), Scheme::Https);
/// assert_eq!(origin.host(), "api.example.com");
/// assert_eq!(origin.port(), 443);
/// assert_eq!(origin.to_string(), "https://api.example.com");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    scheme: Scheme,
    /// Shared, so that cloning an origin (once per call) allocates nothing.
    host: Arc<str>,
    port: u16,
}

/// Why a URI cannot name an origin.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum OriginError {
    /// The URI has no scheme (a relative reference).
    MissingScheme,
    /// The scheme is neither `http` nor `https`.
    UnsupportedScheme,
    /// The URI has no host.
    MissingHost,
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OriginError::MissingScheme => "URI has no scheme",
            OriginError::UnsupportedScheme => "URI scheme is neither http nor https",
            OriginError::MissingHost => "URI has no host",
        })
    }
}

impl std::error::Error for OriginError {}

impl Origin {
    /// An origin from its parts. The host is lower-cased.
    pub fn new(scheme: Scheme, host: &str, port: u16) -> Origin {
        Origin {
            scheme,
            host: Arc::from(host.to_ascii_lowercase()),
            port,
        }
    }

    /// The origin of an absolute URI.
    pub fn from_uri(uri: &Uri) -> Result<Origin, OriginError> {
        let scheme = match uri.scheme() {
            None => return Err(OriginError::MissingScheme),
            Some(s) if *s == UriScheme::HTTP => Scheme::Http,
            Some(s) if *s == UriScheme::HTTPS => Scheme::Https,
            Some(_) => return Err(OriginError::UnsupportedScheme),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or(OriginError::MissingHost)?;
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        Ok(Origin::new(scheme, host, port))
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host, lower-cased; IPv6 literals keep their brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the port is the scheme's default (and so is left out of `Host`).
    pub fn has_default_port(&self) -> bool {
        self.port == self.scheme.default_port()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if !self.has_default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Result<Origin, OriginError> {
        Origin::from_uri(&s.parse().unwrap())
    }

    #[test]
    fn default_ports_are_filled_in_and_hidden_in_display() {
        let o = origin("http://Example.COM/x").unwrap();
        assert_eq!(
            (o.scheme(), o.host(), o.port()),
            (Scheme::Http, "example.com", 80)
        );
        assert_eq!(o.to_string(), "http://example.com");
        assert_eq!(origin("http://example.com:80").unwrap(), o);
        assert_eq!(
            origin("https://example.com:8443").unwrap().to_string(),
            "https://example.com:8443"
        );
    }

    #[test]
    fn ipv6_literals_keep_brackets() {
        let o = origin("http://[::1]:8080/").unwrap();
        assert_eq!(o.host(), "[::1]");
        assert_eq!(o.to_string(), "http://[::1]:8080");
    }

    #[test]
    fn relative_and_foreign_uris_are_rejected() {
        assert_eq!(origin("/just/a/path"), Err(OriginError::MissingScheme));
        assert_eq!(
            origin("ftp://example.com/"),
            Err(OriginError::UnsupportedScheme)
        );
    }
}
