//! URLs as the client accepts them: no user information, a parseable origin, a bounded length.

use breakwater_core::request::join_path;
use breakwater_core::Origin;
use http::Uri;
use url::Url;

use crate::error::{Error, ErrorKind};

/// Refuses URLs that carry a user name or password: they would be printed
/// wherever the URL is (logs, errors, Debug) and are not sent as credentials.
/// Use [`ClientBuilder::api_key`] or a header instead.
pub(crate) fn without_userinfo(url: Url, kind: ErrorKind) -> Result<Url, Error> {
    if url.username().is_empty() && url.password().is_none() {
        Ok(url)
    } else {
        Err(Error::new(kind).with_message(
            "URLs with a user name or password are refused (they would leak into logs); \
             send credentials in a header",
        ))
    }
}

pub(crate) fn origin_of(url: &Url) -> Result<Origin, Error> {
    Origin::from_uri(&parse_uri(url)?).map_err(|e| {
        Error::new(ErrorKind::Request)
            .with_message(format!("{url}"))
            .with_source(e)
    })
}

/// The longest URL sent, as `http::Uri` accepts them.
pub(crate) const MAX_URL_LEN: usize = 65_534;

fn parse_uri(url: &Url) -> Result<Uri, Error> {
    url.as_str().parse().map_err(|e: http::uri::InvalidUri| {
        Error::new(ErrorKind::Request)
            .with_message(format!("bad URL {url}"))
            .with_source(e)
    })
}

/// Whether `reference` starts with a URL scheme (`https:`, `mailto:`): a
/// letter, then letters, digits, `+`, `-` or `.`, then a colon, before any
/// `/`, `?` or `#`.
fn has_scheme(reference: &str) -> bool {
    let Some(colon) = reference.find(':') else {
        return false;
    };
    let scheme = &reference[..colon];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Where `reference` lands under the client's base URL, by httpx's
/// `base_url` rule (docs/spec/request.md, "URL joining"): an absolute URL is
/// used as it is; anything else, with or without a leading slash, is
/// appended to the base path, which is taken to end in a slash.
pub(crate) fn resolve(base: &Url, reference: &str) -> Result<Url, Error> {
    let bad = |e: url::ParseError| {
        Error::new(ErrorKind::Request)
            .with_message(format!("the URL {reference:?} does not parse"))
            .with_source(e)
    };
    if reference.starts_with("//") {
        return Err(Error::new(ErrorKind::Request).with_message(format!(
            "the URL {reference:?} names a host without a scheme; write the scheme too"
        )));
    }
    if !has_scheme(reference) {
        // The common case, `users/1` under a base ending in `/`, is the
        // URL parser's own join; the rest goes through the joining rule.
        let joined = if !reference.starts_with('/') && base.path().ends_with('/') {
            base.join(reference).map_err(bad)?
        } else {
            base.join(&join_path(base.path(), reference)).map_err(bad)?
        };
        // The URL parser reads runs of slashes or backslashes, and drops
        // tabs and newlines, so a "relative" reference can name a host
        // (`\\evil.example/x`). A relative URL stays on the base origin.
        let same_origin = joined.scheme() == base.scheme()
            && joined.host_str() == base.host_str()
            && joined.port_or_known_default() == base.port_or_known_default();
        if !same_origin {
            return Err(Error::new(ErrorKind::Request).with_message(format!(
                "the URL {reference:?} names another host; write it whole, with its scheme"
            )));
        }
        return Ok(joined);
    }
    Url::parse(reference).map_err(bad)
}
