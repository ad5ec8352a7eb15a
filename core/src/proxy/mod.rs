//! Which proxy, if any, a request goes through: curl's rules for the
//! `*_proxy` and `no_proxy` variables, decided here so that the driver only
//! dials what it is told (docs/spec/proxy.md).
//!
//! The environment is read once, by the caller, into a [`ProxyEnv`];
//! [`ProxySettings::from_env`] turns it into settings (or says which
//! variable is wrong), and [`ProxySettings::route`] picks the route for one
//! request's scheme, host and port.
//!
//! ```
//! use breakwater_core::proxy::{ProxyEnv, ProxySettings, Route};
//! use breakwater_core::Scheme;
//!
//! let env = ProxyEnv::from_lookup(|name| match name {
//!     "https_proxy" => Some("http://user:pw@proxy.corp:3128".to_owned()),
//!     "no_proxy" => Some("localhost,.internal.corp,10.0.0.0/8".to_owned()),
//!     _ => None,
//! });
//! let settings = ProxySettings::from_env(&env)?;
//! let Route::Proxy(proxy) = settings.route(Scheme::Https, "api.example.com", 443) else { panic!() };
//! assert_eq!((proxy.host(), proxy.port()), ("proxy.corp", 3128));
//! assert_eq!(settings.route(Scheme::Https, "db.internal.corp", 443), Route::Direct);
//! assert_eq!(settings.route(Scheme::Https, "10.1.2.3", 443), Route::Direct);
//! assert_eq!(settings.route(Scheme::Http, "api.example.com", 80), Route::Direct); // no http_proxy
//! # Ok::<(), breakwater_core::proxy::ProxyConfigError>(())
//! ```

use core::net::IpAddr;
use std::fmt;

pub mod socks5;
pub mod tunnel;

use crate::policy::auth::Secret;
use crate::Scheme;

/// The proxy variables as the process had them, read once.
///
/// curl's rules: `http_proxy` is read in lowercase only (`HTTP_PROXY` can be
/// set by a CGI request's `Proxy:` header, the "httpoxy" attack); the others
/// are read in lowercase first, then in uppercase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// `http_proxy`.
    pub http: Option<String>,
    /// `https_proxy`, else `HTTPS_PROXY`.
    pub https: Option<String>,
    /// `all_proxy`, else `ALL_PROXY`.
    pub all: Option<String>,
    /// `no_proxy`, else `NO_PROXY`.
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the variables through `lookup` (for the process environment:
    /// `|name| std::env::var(name).ok()`, which the client does at `build`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let either = |lower: &str, upper: &str| lookup(lower).or_else(|| lookup(upper));
        ProxyEnv {
            http: lookup("http_proxy"),
            https: either("https_proxy", "HTTPS_PROXY"),
            all: either("all_proxy", "ALL_PROXY"),
            no_proxy: either("no_proxy", "NO_PROXY"),
        }
    }
}

/// How a proxy is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// An HTTP proxy: absolute-form requests for `http`, a `CONNECT` tunnel for `https`.
    Http,
    /// SOCKS5, with names resolved by the client (`socks5://`).
    Socks5,
    /// SOCKS5, with names resolved by the proxy (`socks5h://`).
    Socks5h,
}

/// A proxy: its kind, where it is, and the credentials it asks for.
#[derive(Clone)]
pub struct ProxyUrl {
    kind: ProxyKind,
    host: String,
    port: u16,
    user: Option<(String, Secret)>,
}

impl ProxyUrl {
    /// Parses `[scheme://][user[:password]@]host[:port]`, as curl reads a
    /// proxy: no scheme means `http`, no port means 1080; `http`, `socks5`
    /// and `socks5h` are known schemes.
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), text),
        };
        let kind = match scheme.as_str() {
            "http" => ProxyKind::Http,
            "socks5" => ProxyKind::Socks5,
            "socks5h" => ProxyKind::Socks5h,
            other => {
                return Err(format!(
                    "the proxy scheme {other:?} is not supported (http, socks5 or socks5h)"
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        let (user, authority) = match rest.rsplit_once('@') {
            Some((user, authority)) => {
                let (name, password) = user.split_once(':').unwrap_or((user, ""));
                let decode = |s: &str| {
                    percent_decode(s)
                        .ok_or("the proxy's user information is not valid percent-encoding")
                };
                (
                    Some((decode(name)?, Secret::new(decode(password)?))),
                    authority,
                )
            }
            None => (None, rest),
        };
        let (host, port) = split_host_port(authority).ok_or("the proxy's port is not a number")?;
        if host.is_empty() {
            return Err("the proxy URL names no host".to_owned());
        }
        Ok(ProxyUrl {
            kind,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(1080),
            user,
        })
    }

    /// How the proxy is spoken to.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy's host (an IPv6 literal without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name and password the proxy asks for, if the URL had them.
    pub fn credentials(&self) -> Option<(&str, &Secret)> {
        self.user
            .as_ref()
            .map(|(name, password)| (name.as_str(), password))
    }
}

impl PartialEq for ProxyUrl {
    fn eq(&self, other: &Self) -> bool {
        let user = |url: &ProxyUrl| {
            url.user
                .as_ref()
                .map(|(name, password)| (name.clone(), password.expose().to_owned()))
        };
        (self.kind, &self.host, self.port) == (other.kind, &other.host, other.port)
            && user(self) == user(other)
    }
}

impl Eq for ProxyUrl {}

impl fmt::Debug for ProxyUrl {
    /// The password is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
        };
        match &self.user {
            Some((name, _)) => write!(
                f,
                "{scheme}://{name}:<redacted>@{}:{}",
                self.host, self.port
            ),
            None => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

/// A proxy variable that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfigError {
    /// The variable (or `proxy` for an explicit setting).
    pub variable: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ProxyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the proxy in {} cannot be used: {}",
            self.variable, self.reason
        )
    }
}

impl std::error::Error for ProxyConfigError {}

/// How one origin's requests go, whatever the client's proxy settings say
/// (an origin profile's choice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyChoice {
    /// Straight to the origin.
    Direct,
    /// Through this proxy.
    Through(ProxyUrl),
}

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Straight to the origin.
    Direct,
    /// Through this proxy.
    Proxy(&'a ProxyUrl),
}

/// The proxies a client uses, and the hosts it reaches directly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxySettings {
    http: Option<ProxyUrl>,
    https: Option<ProxyUrl>,
    all: Option<ProxyUrl>,
    no_proxy: NoProxy,
}

impl ProxySettings {
    /// No proxy at all.
    pub fn none() -> Self {
        ProxySettings::default()
    }

    /// Whether no request goes through a proxy.
    pub fn is_none(&self) -> bool {
        self.http.is_none() && self.https.is_none() && self.all.is_none()
    }

    /// One proxy for every request, as `.proxy(url)` sets it; `no_proxy` still applies.
    pub fn all(proxy: ProxyUrl, no_proxy: NoProxy) -> Self {
        ProxySettings {
            all: Some(proxy),
            no_proxy,
            ..ProxySettings::default()
        }
    }

    /// Settings from the variables; an empty variable counts as unset.
    pub fn from_env(env: &ProxyEnv) -> Result<Self, ProxyConfigError> {
        let parse = |value: &Option<String>, variable: &'static str| {
            value
                .as_deref()
                .filter(|v| !v.trim().is_empty())
                .map(|v| ProxyUrl::parse(v).map_err(|reason| ProxyConfigError { variable, reason }))
                .transpose()
        };
        Ok(ProxySettings {
            http: parse(&env.http, "http_proxy")?,
            https: parse(&env.https, "HTTPS_PROXY")?,
            all: parse(&env.all, "ALL_PROXY")?,
            no_proxy: NoProxy::parse(env.no_proxy.as_deref().unwrap_or("")),
        })
    }

    /// The route for a request to `scheme://host:port`: direct when
    /// `no_proxy` matches the host, else the scheme's own proxy, else the
    /// one for all schemes, else direct.
    pub fn route(&self, scheme: Scheme, host: &str, port: u16) -> Route<'_> {
        let proxy = match scheme {
            Scheme::Http => self.http.as_ref(),
            Scheme::Https => self.https.as_ref(),
        }
        .or(self.all.as_ref());
        match proxy {
            Some(proxy) if !self.no_proxy.matches(host, port) => Route::Proxy(proxy),
            _ => Route::Direct,
        }
    }
}

/// The hosts reached directly: `no_proxy`'s list.
///
/// Comma-separated entries (whitespace around them ignored). `*` alone
/// matches every host. A name matches itself and every subdomain
/// (`example.com` matches `www.example.com`, not `myexample.com`), a
/// leading dot changes nothing, case does not matter, and a trailing dot on
/// either side is ignored. An IP address matches that address, and an
/// address with `/bits` (CIDR) a network; both match only a host written as
/// an IP address. Our one addition to curl: `host:port` matches that host
/// on that port only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    every_host: bool,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Name { name: String, port: Option<u16> },
    Network { address: IpAddr, bits: u8 },
}

impl NoProxy {
    /// Parses a `no_proxy` list. Entries that are not a name, an address or
    /// a network are ignored, as curl ignores them.
    pub fn parse(list: &str) -> Self {
        let mut no_proxy = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.every_host = true;
                continue;
            }
            if let Some(network) = parse_network(entry) {
                no_proxy.entries.push(network);
                continue;
            }
            let entry = entry.trim_start_matches('.');
            let (name, port) = match split_host_port(entry) {
                Some((name, port)) if !name.contains(':') || entry.starts_with('[') => (name, port),
                _ => (entry, None),
            };
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !name.is_empty() {
                no_proxy.entries.push(Entry::Name { name, port });
            }
        }
        no_proxy
    }

    /// Whether a request to `host:port` goes directly.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.every_host {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let address: Option<IpAddr> = host.parse().ok();
        self.entries.iter().any(|entry| match entry {
            Entry::Network {
                address: network,
                bits,
            } => address.is_some_and(|address| in_network(address, *network, *bits)),
            Entry::Name { name, port: wanted } => {
                let port_ok = wanted.is_none_or(|wanted| wanted == port);
                let name_ok = host == *name
                    || (address.is_none()
                        && host.len() > name.len()
                        && host.ends_with(name.as_str())
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.');
                port_ok && name_ok
            }
        })
    }
}

/// An IP address, or one with `/bits`.
fn parse_network(entry: &str) -> Option<Entry> {
    let (address, bits) = match entry.split_once('/') {
        Some((address, bits)) => (address, Some(bits.parse::<u8>().ok()?)),
        None => (entry, None),
    };
    let address: IpAddr = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some(Entry::Network { address, bits })
}

/// Whether `address` is in `network/bits` (same family only).
fn in_network(address: IpAddr, network: IpAddr, bits: u8) -> bool {
    let (a, n, width) = match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (n >> shift)
}

/// `host[:port]`, an IPv6 literal in brackets; `None` if the port is not a number.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        // More than one colon and no brackets: an IPv6 literal, no port.
        Some((host, _)) if host.contains(':') => Some((authority, None)),
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((authority, None)),
    }
}

/// `%XX` decoding, as user information in a proxy URL is written.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
