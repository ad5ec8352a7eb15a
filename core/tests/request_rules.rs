//! The request rules of docs/spec/request.md as a table, and a property:
//! the client's credentials never reach another origin, whatever else the
//! request carries.

use breakwater_core::request::{join_path, plan_headers, HeaderError, HeaderLayers};
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE};
use proptest::prelude::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn all(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A row: its name, the body helper's type, the headers set and appended,
/// whether the request goes to the base origin, and the values expected.
type Case<'a> = (
    &'a str,
    Option<&'a HeaderValue>,
    HeaderMap,
    HeaderMap,
    bool,
    &'a [(&'a str, &'a [&'a str])],
);

#[test]
fn header_layers_in_order() {
    let defaults = map(&[
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("x-trace", "client"),
    ]);
    let credentials = map(&[("authorization", "Bearer svc"), ("x-api-key", "k")]);
    let json = HeaderValue::from_static("application/json");
    let form = HeaderValue::from_static("application/x-www-form-urlencoded");
    let cases: Vec<Case<'_>> = vec![
        (
            "defaults alone, to the base origin",
            None,
            map(&[]),
            map(&[]),
            true,
            &[
                ("accept", &["application/json"]),
                ("authorization", &["Bearer svc"]),
                ("x-api-key", &["k"]),
            ],
        ),
        (
            "credentials stay home",
            None,
            map(&[]),
            map(&[]),
            false,
            &[
                ("authorization", &[]),
                ("x-api-key", &[]),
                ("x-trace", &["client"]),
            ],
        ),
        (
            "a set header replaces the default",
            None,
            map(&[("accept", "text/plain")]),
            map(&[]),
            true,
            &[("accept", &["text/plain"])],
        ),
        (
            "an appended header adds",
            None,
            map(&[]),
            map(&[("x-trace", "call")]),
            true,
            &[("x-trace", &["client", "call"])],
        ),
        (
            "a body helper's type replaces the default",
            Some(&form),
            map(&[]),
            map(&[]),
            true,
            &[("content-type", &["application/x-www-form-urlencoded"])],
        ),
        (
            "the same type set twice is no conflict",
            Some(&json),
            map(&[("content-type", "application/json")]),
            map(&[]),
            true,
            &[("content-type", &["application/json"])],
        ),
        (
            "a per-request Authorization wins",
            None,
            map(&[("authorization", "Bearer user")]),
            map(&[]),
            true,
            &[("authorization", &["Bearer user"]), ("x-api-key", &["k"])],
        ),
        (
            "a per-request Authorization goes anywhere it is sent",
            None,
            map(&[("authorization", "Bearer user")]),
            map(&[]),
            false,
            &[("authorization", &["Bearer user"]), ("x-api-key", &[])],
        ),
    ];
    for (name, body_type, set, appended, home, expect) in cases {
        let planned = plan_headers(HeaderLayers {
            defaults: &defaults,
            credentials: &credentials,
            body_type,
            set: &set,
            appended: &appended,
            to_base_origin: home,
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (header, values) in expect {
            assert_eq!(all(&planned.headers, header), *values, "{name}: {header}");
        }
        assert_eq!(
            planned.caller_authorized,
            set.contains_key(AUTHORIZATION),
            "{name}"
        );
        for value in planned.headers.get_all(AUTHORIZATION) {
            assert!(
                value.is_sensitive(),
                "{name}: Authorization not marked sensitive"
            );
        }
    }
}

#[test]
fn caller_mistakes_are_refused() {
    let none = HeaderMap::new();
    let json = HeaderValue::from_static("application/json");
    let layers = |set, body_type| HeaderLayers {
        defaults: &none,
        credentials: &none,
        body_type,
        set,
        appended: &none,
        to_base_origin: true,
    };
    let framing = map(&[("content-length", "5")]);
    assert_eq!(
        plan_headers(layers(&framing, None)).unwrap_err(),
        HeaderError::FramingHeader(http::header::CONTENT_LENGTH)
    );
    let chunked = map(&[("transfer-encoding", "chunked")]);
    assert!(matches!(
        plan_headers(layers(&chunked, None)),
        Err(HeaderError::FramingHeader(_))
    ));
    let other_type = map(&[("content-type", "text/plain")]);
    assert!(matches!(
        plan_headers(layers(&other_type, Some(&json))),
        Err(HeaderError::ConflictingContentType { .. })
    ));
}

#[test]
fn url_joining_follows_httpx() {
    let cases = [
        ("/v1/", "users/1", "/v1/users/1"),
        ("/v1/", "/users/1", "/v1/users/1"),
        ("/v1", "users/1", "/v1/users/1"),
        ("/v1", "/users/1", "/v1/users/1"),
        ("/", "users", "/users"),
        ("", "users", "/users"),
        ("/v1/", "", "/v1/"),
        ("/v1/", "users?page=2&q=a%20b", "/v1/users?page=2&q=a%20b"),
        ("/v1//", "//users", "/v1/users"),
        ("/a/b/", "../c", "/a/b/../c"),
    ];
    for (base, reference, want) in cases {
        assert_eq!(join_path(base, reference), want, "{base:?} + {reference:?}");
    }
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("authorization".to_owned()),
        Just("cookie".to_owned()),
        Just("x-api-key".to_owned()),
        Just("accept".to_owned()),
        "x-[a-z]{1,6}",
    ]
}

proptest! {
    /// Whatever the defaults, the request's own headers and the body type,
    /// a credential value of the client's reaches another origin only if the
    /// request itself carried it.
    #[test]
    fn credentials_never_cross_origins(
        defaults in prop::collection::vec((header_name(), "[a-z]{1,8}"), 0..6),
        set in prop::collection::vec((header_name(), "[a-z]{1,8}"), 0..4),
        appended in prop::collection::vec((header_name(), "[a-z]{1,8}"), 0..4),
        form in any::<bool>(),
    ) {
        let secret = "s3cret-value";
        let credentials = map(&[("authorization", secret), ("cookie", secret), ("x-api-key", secret)]);
        let to_map = |pairs: &Vec<(String, String)>| {
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .filter(|(n, _)| n != "content-type")
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            map(&pairs)
        };
        let defaults = to_map(&defaults);
        let defaults: HeaderMap = defaults
            .iter()
            .filter(|(n, _)| **n != AUTHORIZATION && **n != COOKIE)
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let (set, appended) = (to_map(&set), to_map(&appended));
        let form_type = HeaderValue::from_static("application/x-www-form-urlencoded");
        let planned = plan_headers(HeaderLayers {
            defaults: &defaults,
            credentials: &credentials,
            body_type: form.then_some(&form_type),
            set: &set,
            appended: &appended,
            to_base_origin: false,
        }).unwrap();
        for (name, value) in &planned.headers {
            prop_assert!(value != secret, "{name} carried the client's credential to another origin");
        }
        prop_assert!(planned.headers.get(CONTENT_TYPE).is_none() || form || set.contains_key(CONTENT_TYPE));
    }
}
