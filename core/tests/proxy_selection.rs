//! Proxy selection as a table: curl's documented rules for `*_proxy` and
//! `no_proxy` (docs/spec/proxy.md), one row per rule, each run through
//! `ProxySettings::route`.

use breakwater_core::proxy::{NoProxy, ProxyEnv, ProxyKind, ProxySettings, ProxyUrl, Route};
use breakwater_core::Scheme;

/// `no_proxy` list, host, port: direct?
const NO_PROXY: &[(&str, &str, u16, bool)] = &[
    // A name matches itself and its subdomains, not other names ending alike.
    ("ample.com", "ample.com", 443, true),
    ("ample.com", "www.ample.com", 443, true),
    ("ample.com", "a.b.ample.com", 443, true),
    ("ample.com", "www.example.com", 443, false),
    ("ample.com", "example.com", 443, false),
    ("ample.com", "ample.com.org", 443, false),
    // Any port of a matching name (curl: "ample.com:80" is matched).
    ("ample.com", "ample.com", 80, true),
    ("ample.com", "ample.com", 8443, true),
    // A leading dot changes nothing.
    (".ample.com", "www.ample.com", 443, true),
    (".ample.com", "ample.com", 443, true),
    // Case and trailing dots do not matter.
    ("Example.COM", "www.example.com", 443, true),
    ("example.com", "WWW.EXAMPLE.COM", 443, true),
    ("example.com.", "www.example.com", 443, true),
    ("example.com", "www.example.com.", 443, true),
    // `*` alone matches everything; inside a name it is not a wildcard.
    ("*", "anything.test", 443, true),
    ("*", "10.0.0.1", 80, true),
    ("*.example.com", "www.example.com", 443, false),
    ("localhost, *", "example.org", 443, true),
    // Lists: commas, whitespace around entries, empty entries.
    ("localhost,example.com", "example.com", 443, true),
    ("localhost , example.com", "www.example.com", 443, true),
    ("localhost,,example.com", "localhost", 80, true),
    ("", "example.com", 443, false),
    ("  ", "example.com", 443, false),
    // IP addresses match the same address written as an address.
    ("127.0.0.1", "127.0.0.1", 80, true),
    ("127.0.0.1", "127.0.0.2", 80, false),
    ("127.0.0.1", "localhost", 80, false),
    ("::1", "::1", 80, true),
    ("::1", "[::1]", 80, true),
    ("[::1]", "::1", 80, true),
    // CIDR networks (curl 7.86).
    ("192.168.0.0/16", "192.168.4.20", 443, true),
    ("192.168.0.0/16", "192.169.0.1", 443, false),
    ("10.0.0.0/8", "10.255.255.255", 443, true),
    ("10.0.0.0/8", "11.0.0.0", 443, false),
    ("0.0.0.0/0", "203.0.113.9", 443, true),
    ("2001:db8::/32", "2001:db8:1::5", 443, true),
    ("2001:db8::/32", "2001:db9::5", 443, false),
    ("10.0.0.0/8", "::ffff:10.0.0.1", 443, false),
    ("192.168.0.0/16", "192.168.example.com", 443, false),
    // An address entry does not match names, and a name entry not addresses
    // that merely end like it.
    ("0.1", "10.0.0.1", 80, false),
    // Our addition: host:port matches that port only.
    ("example.com:8080", "example.com", 8080, true),
    ("example.com:8080", "example.com", 443, false),
    ("[::1]:8080", "::1", 8080, true),
];

#[test]
fn no_proxy_follows_curl() {
    assert!(NO_PROXY.len() >= 40);
    for &(list, host, port, direct) in NO_PROXY {
        assert_eq!(
            NoProxy::parse(list).matches(host, port),
            direct,
            "no_proxy={list:?} for {host}:{port}"
        );
    }
}

fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ProxyEnv::from_lookup(move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

/// Which proxy host a request to `scheme://host` would use, or `None` for direct.
fn via(settings: &ProxySettings, scheme: Scheme, host: &str) -> Option<String> {
    match settings.route(scheme, host, 443) {
        Route::Direct => None,
        Route::Proxy(proxy) => Some(proxy.host().to_owned()),
    }
}

#[test]
fn variables_follow_curl() {
    let s = |pairs: &[(&str, &str)]| ProxySettings::from_env(&env(pairs)).unwrap();
    // http_proxy is lowercase only: HTTP_PROXY can be set by a CGI request (httpoxy).
    assert_eq!(via(&s(&[("HTTP_PROXY", "p")]), Scheme::Http, "h"), None);
    assert_eq!(
        via(&s(&[("http_proxy", "p")]), Scheme::Http, "h").as_deref(),
        Some("p")
    );
    // https_proxy: lowercase first, then uppercase.
    assert_eq!(
        via(&s(&[("HTTPS_PROXY", "up")]), Scheme::Https, "h").as_deref(),
        Some("up")
    );
    assert_eq!(
        via(
            &s(&[("HTTPS_PROXY", "up"), ("https_proxy", "low")]),
            Scheme::Https,
            "h"
        )
        .as_deref(),
        Some("low")
    );
    // Each scheme its own; ALL_PROXY when the scheme has none.
    assert_eq!(via(&s(&[("http_proxy", "p")]), Scheme::Https, "h"), None);
    assert_eq!(
        via(&s(&[("ALL_PROXY", "all")]), Scheme::Https, "h").as_deref(),
        Some("all")
    );
    assert_eq!(
        via(
            &s(&[("all_proxy", "all"), ("https_proxy", "tls")]),
            Scheme::Https,
            "h"
        )
        .as_deref(),
        Some("tls")
    );
    // no_proxy, either case, lowercase first; an empty variable is unset.
    assert_eq!(
        via(
            &s(&[("ALL_PROXY", "p"), ("NO_PROXY", "h")]),
            Scheme::Http,
            "h"
        ),
        None
    );
    assert_eq!(
        via(
            &s(&[("ALL_PROXY", "p"), ("NO_PROXY", "h"), ("no_proxy", "other")]),
            Scheme::Http,
            "h"
        )
        .as_deref(),
        Some("p")
    );
    assert_eq!(via(&s(&[("https_proxy", "")]), Scheme::Https, "h"), None);
}

#[test]
fn proxy_urls_parse_as_curl_reads_them() {
    let url = ProxyUrl::parse("proxy.corp").unwrap();
    assert_eq!(
        (url.kind(), url.host(), url.port()),
        (ProxyKind::Http, "proxy.corp", 1080)
    );
    let url = ProxyUrl::parse("socks5h://[2001:db8::1]:9050").unwrap();
    assert_eq!(
        (url.kind(), url.host(), url.port()),
        (ProxyKind::Socks5h, "2001:db8::1", 9050)
    );
    let url = ProxyUrl::parse("http://us%40er:p%3Ass@Proxy.Corp:3128/").unwrap();
    let (name, password) = url.credentials().unwrap();
    assert_eq!((name, password.expose()), ("us@er", "p:ss"));
    assert_eq!(url.host(), "proxy.corp");
    assert!(!format!("{url:?}").contains("p:ss"), "{url:?}");
    for bad in ["ftp://p:21", "http://p:port", "http://", "http://u:%zz@p"] {
        assert!(ProxyUrl::parse(bad).is_err(), "{bad} parsed");
    }
    let error = ProxySettings::from_env(&env(&[("HTTPS_PROXY", "gopher://p")])).unwrap_err();
    assert_eq!(error.variable, "HTTPS_PROXY");
    assert!(error.to_string().contains("HTTPS_PROXY"), "{error}");
}
