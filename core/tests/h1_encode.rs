//! Requests we encode, read back by an independent parser (httparse's request
//! parser), must say exactly what we were asked to send.

use breakwater_core::h1::{
    encode_chunk_prefix, encode_request_head, encode_request_head_for_target, BodyLength,
    EncodeError, LAST_CHUNK,
};
use breakwater_core::Origin;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Body {
    None,
    Known(Vec<u8>),
    Streamed(Vec<Vec<u8>>),
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::DELETE,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::from_bytes(b"QUERY").unwrap(),
    ])
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::None),
        prop::collection::vec(any::<u8>(), 0..500).prop_map(Body::Known),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 0..5)
            .prop_map(Body::Streamed),
    ]
}

/// A minimal chunked-body reader, independent of the crate under test.
fn dechunk(mut wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = wire
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&wire[..line_end]).unwrap(), 16).unwrap();
        wire = &wire[line_end + 2..];
        if size == 0 {
            assert_eq!(wire, b"\r\n", "last chunk and empty trailer");
            return out;
        }
        out.extend_from_slice(&wire[..size]);
        assert_eq!(&wire[size..size + 2], b"\r\n");
        wire = &wire[size + 2..];
    }
}

proptest! {
    #[test]
    fn encoded_requests_parse_back_to_what_was_asked(
        method in method(),
        host in "[a-z]{1,10}\\.example",
        port in prop::option::of(1u16..65535),
        https in any::<bool>(),
        path in "(/[a-zA-Z0-9._~%-]{0,10}){0,4}",
        query in prop::option::of("[a-z0-9=&]{0,20}"),
        headers in prop::collection::vec(("x-[a-z0-9-]{1,10}", "[!-~]([ -~\t]{0,20}[!-~])?"), 0..10),
        body in body(),
    ) {
        let scheme = if https { "https" } else { "http" };
        let authority = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
        let target = format!("{}{}", if path.is_empty() { "/" } else { &path },
            query.as_ref().map(|q| format!("?{q}")).unwrap_or_default());
        let uri: Uri = format!("{scheme}://{authority}{target}").parse().unwrap();
        let origin = Origin::from_uri(&uri).unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            map.append(HeaderName::try_from(name.as_str()).unwrap(), HeaderValue::try_from(value.as_str()).unwrap());
        }
        let length = match &body {
            Body::None => BodyLength::None,
            Body::Known(bytes) => BodyLength::Known(bytes.len() as u64),
            Body::Streamed(_) => BodyLength::Streamed,
        };

        let mut wire = b"leftover from the previous request".to_vec();
        wire.clear(); // the buffer is reused, as a driver would
        encode_request_head(&mut wire, &method, &uri, &origin, &map, length).unwrap();
        match &body {
            Body::None => {}
            Body::Known(bytes) => wire.extend_from_slice(bytes),
            Body::Streamed(chunks) => {
                for chunk in chunks {
                    encode_chunk_prefix(&mut wire, chunk.len());
                    wire.extend_from_slice(chunk);
                    wire.extend_from_slice(b"\r\n");
                }
                wire.extend_from_slice(LAST_CHUNK);
            }
        }

        // The same head from the target as text, as the client sends it.
        let mut from_text = Vec::new();
        encode_request_head_for_target(&mut from_text, &method, &target, &origin, &map, length).unwrap();
        prop_assert_eq!(&from_text[..], &wire[..from_text.len()]);

        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut slots);
        let head_len = match parsed.parse(&wire).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete head"),
        };
        prop_assert_eq!(parsed.method, Some(method.as_str()));
        prop_assert_eq!(parsed.path, Some(target.as_str()));
        prop_assert_eq!(parsed.version, Some(1));

        let expected_host = if port.is_some_and(|p| p != if https { 443 } else { 80 }) {
            authority.clone()
        } else {
            host.clone()
        };
        let got: Vec<(String, Vec<u8>)> = parsed.headers.iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
        prop_assert_eq!(&got[0], &("host".to_owned(), expected_host.into_bytes()));
        for (name, value) in &headers {
            prop_assert!(got.contains(&(name.clone(), value.as_bytes().to_vec())), "{} missing", name);
        }

        let find = |n: &str| got.iter().find(|(name, _)| name == n).map(|(_, v)| v.clone());
        let body_wire = &wire[head_len..];
        match &body {
            Body::None => {
                prop_assert_eq!(find("content-length"), None);
                prop_assert_eq!(find("transfer-encoding"), None);
                prop_assert!(body_wire.is_empty());
            }
            Body::Known(bytes) => {
                let expects_body = [Method::POST, Method::PUT, Method::PATCH].contains(&method);
                if bytes.is_empty() && !expects_body {
                    prop_assert_eq!(find("content-length"), None);
                } else {
                    prop_assert_eq!(find("content-length"), Some(bytes.len().to_string().into_bytes()));
                }
                prop_assert_eq!(body_wire, &bytes[..]);
            }
            Body::Streamed(chunks) => {
                prop_assert_eq!(find("transfer-encoding"), Some(b"chunked".to_vec()));
                prop_assert_eq!(find("content-length"), None);
                prop_assert_eq!(dechunk(body_wire), chunks.concat());
            }
        }
    }
}

#[test]
fn a_text_target_must_be_origin_form_without_spaces_or_controls() {
    let origin = Origin::new(breakwater_core::Scheme::Http, "h.example", 80);
    let headers = HeaderMap::new();
    let mut out = b"kept".to_vec();
    for bad in [
        "users",
        "http://h.example/",
        "/a b",
        "/a\r\nx: y",
        "/\x7f",
        "/tab\there",
    ] {
        let result = encode_request_head_for_target(
            &mut out,
            &Method::GET,
            bad,
            &origin,
            &headers,
            BodyLength::None,
        );
        assert_eq!(result, Err(EncodeError::InvalidTarget), "{bad:?}");
        assert_eq!(out, b"kept", "a refused head leaves the buffer as it was");
    }
    out.clear();
    encode_request_head_for_target(
        &mut out,
        &Method::GET,
        "",
        &origin,
        &headers,
        BodyLength::None,
    )
    .unwrap();
    assert!(out.starts_with(b"GET / HTTP/1.1\r\n"));
}

#[test]
fn the_asterisk_form_and_a_bare_query_are_sent_as_http_expects() {
    let headers = HeaderMap::new();
    let cases = [
        (Method::OPTIONS, "*", "OPTIONS * HTTP/1.1\r\n"),
        (
            Method::GET,
            "http://h.example?x=1",
            "GET /?x=1 HTTP/1.1\r\n",
        ),
        (Method::GET, "http://h.example", "GET / HTTP/1.1\r\n"),
    ];
    for (method, uri, start) in cases {
        let uri: Uri = uri.parse().unwrap();
        let origin = Origin::new(breakwater_core::Scheme::Http, "h.example", 80);
        let mut out = Vec::new();
        encode_request_head(&mut out, &method, &uri, &origin, &headers, BodyLength::None).unwrap();
        assert!(
            out.starts_with(start.as_bytes()),
            "{uri}: {}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[test]
fn a_proxy_is_sent_the_absolute_form_of_the_connections_own_origin() {
    use breakwater_core::h1::encode_proxy_request_head_with;
    let origin = Origin::new(breakwater_core::Scheme::Http, "api.test", 8080);
    let mut out = Vec::new();
    encode_proxy_request_head_with(
        &mut out,
        &Method::GET,
        "/v1/items?page=2",
        &origin,
        &HeaderMap::new(),
        &[],
        BodyLength::None,
    )
    .unwrap();
    assert_eq!(
        out,
        b"GET http://api.test:8080/v1/items?page=2 HTTP/1.1\r\nhost: api.test:8080\r\n\r\n"
    );
    // Only plain http goes to a proxy in absolute form; https is tunnelled.
    let secure = Origin::new(breakwater_core::Scheme::Https, "api.test", 443);
    let refused = encode_proxy_request_head_with(
        &mut out,
        &Method::GET,
        "/",
        &secure,
        &HeaderMap::new(),
        &[],
        BodyLength::None,
    );
    assert_eq!(refused, Err(EncodeError::InvalidTarget));
}
