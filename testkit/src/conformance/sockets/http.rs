//! Redirects, compressed bodies, cookies and multipart uploads on real
//! sockets, against hyper peers: the same behaviour the simulation tests
//! show, here through each runtime's own sockets and timers.
//! [`socket_http_tests!`](crate::socket_http_tests) makes one `#[test]` each.

use std::io::Write;
use std::sync::Arc;

use breakwater::multipart::{Form, Part};
use breakwater::runtime::Runtime;
use breakwater::{Client, ErrorKind};
use bytes::Bytes;
use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::Compression;

use super::server::{respond, respond_with, RawServer, Reply as RawReply, TestServer};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn coded(body: Vec<u8>, coding: &'static str) -> hyper::Response<super::server::Body> {
    let mut response = super::server::respond_bytes(Bytes::from(body));
    response
        .headers_mut()
        .insert("content-encoding", http::HeaderValue::from_static(coding));
    response
}

/// A JSON document of about 1 MiB.
fn document() -> Vec<u8> {
    let records: Vec<String> = (0..16_000)
        .map(|i| {
            format!(r#"{{"id":{i},"name":"user {i}","email":"u{i}@example.com","tags":["a","b"]}}"#)
        })
        .collect();
    format!("[{}]", records.join(",")).into_bytes()
}

/// A 307 to another server: method, body and non-credential headers go on;
/// the token, the API key and the idempotency key do not.
pub async fn redirect_across_servers_strips_credentials(rt: Arc<dyn Runtime>) {
    let other = TestServer::start(|_| respond(201, r#"{"stored":true}"#));
    let target = other.url("/landing");
    let first = TestServer::start(move |_| respond_with(307, &[("location", &target)], ""));
    let client = Client::builder(rt, first.url("/"))
        .bearer_token("t0ken")
        .api_key("x-api-key", "k3y")
        .build()
        .unwrap();
    let response = client
        .post("upload")
        .json(&serde_json::json!({"n": 1}))
        .idempotency_key("up-1")
        .header("x-trace", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.url().as_str(), other.url("/landing"));
    assert_eq!(response.history().len(), 1);
    assert_eq!(response.history()[0].status(), 307);
    let seen = &other.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, Bytes::from_static(br#"{"n":1}"#));
    assert_eq!(seen.header("x-trace").as_deref(), Some("kept"));
    for name in ["authorization", "x-api-key", "idempotency-key"] {
        assert_eq!(seen.header(name), None, "{name} crossed to another server");
    }
    assert_eq!(
        first.seen()[0].header("authorization").as_deref(),
        Some("Bearer t0ken")
    );
}

/// gzip and deflate bodies decode; a corrupt one is a `Decode` error; the
/// one connection serves every call.
pub async fn compressed_bodies_decode_on_one_connection(rt: Arc<dyn Runtime>) {
    let data = document();
    let (gz, raw) = (gzip(&data), {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&data).unwrap();
        encoder.finish().unwrap()
    });
    let mut corrupt = gz.clone();
    let at = corrupt.len() - 6;
    corrupt[at] ^= 0xff;
    let server = TestServer::start(move |seen| match seen.uri.path() {
        "/gz" => coded(gz.clone(), "gzip"),
        "/deflate" => coded(raw.clone(), "deflate"),
        _ => coded(corrupt.clone(), "gzip"),
    });
    let client = Client::builder(rt, server.url("/")).build().unwrap();
    for path in ["gz", "deflate"] {
        let response = client.get(path).send().await.unwrap();
        assert!(!response.headers().contains_key("content-encoding"));
        assert_eq!(response.bytes().await.unwrap(), Bytes::from(data.clone()));
    }
    let error = client
        .get("corrupt")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode, "{error}");
    client
        .get("gz")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        server.accepted(),
        1,
        "a corrupt coding does not cost the connection"
    );
    let offer = server.seen()[0].header("accept-encoding").unwrap();
    assert!(
        offer.contains("gzip") && offer.contains("deflate"),
        "{offer}"
    );
}

/// A gzip bomb over a real socket ends with `BodyLimit`, long before its
/// 10 GiB, with the process's peak memory barely moved.
pub async fn decompression_bomb_is_stopped(rt: Arc<dyn Runtime>) {
    let bomb = Bytes::from(crate::bodies::gzip_bomb(10 * 1024));
    let wire = bomb.len();
    let server = TestServer::start(move |_| coded(bomb.to_vec(), "gzip"));
    let client = Client::builder(rt, server.url("/")).build().unwrap();
    let before = crate::bodies::peak_rss_kib();
    let mut response = client.get("bomb").send().await.unwrap();
    let mut decoded = 0u64;
    let error = loop {
        match response.chunk().await {
            Ok(Some(piece)) => decoded += piece.len() as u64,
            Ok(None) => panic!("a 10 GiB bomb was decoded whole"),
            Err(error) => break error,
        }
    };
    drop(response);
    let after = crate::bodies::peak_rss_kib();
    println!(
        "gzip bomb: {} MiB on the wire, stopped after {} MiB decoded: {error}; \
         peak RSS {before:?} KiB before, {after:?} KiB after",
        wire >> 20,
        decoded >> 20
    );
    assert_eq!(error.kind(), ErrorKind::BodyLimit, "{error}");
    assert!(decoded < 256 << 20, "{decoded}");
    if let (Some(before), Some(after)) = (before, after) {
        // The server's copies of the 10 MiB bomb count too; gigabytes would not fit.
        assert!(
            after - before < 192 * 1024,
            "peak RSS grew by {} KiB",
            after - before
        );
    }
}

/// A cookie set by one response goes back on the next request, through
/// the runtime's sockets.
pub async fn cookies_round_trip(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match seen.uri.path() {
        "/login" => respond_with(204, &[("set-cookie", "session=abc; Path=/; HttpOnly")], ""),
        _ => respond(200, "{}"),
    });
    let client = Client::builder(rt, server.url("/"))
        .cookie_store(true)
        .build()
        .unwrap();
    client.post("login").send().await.unwrap();
    client.get("me").send().await.unwrap();
    assert_eq!(
        server.seen()[1].header("cookie").as_deref(),
        Some("session=abc")
    );
}

/// A form with a text field, a file and a streamed part arrives whole.
pub async fn multipart_upload(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|_| respond(200, "{}"));
    let client = Client::builder(rt, server.url("/")).build().unwrap();
    let pieces = futures_lite::stream::iter([
        Ok(Bytes::from_static(b"line 1\n")),
        Ok(Bytes::from_static(b"line 2\n")),
    ]);
    let form = Form::new()
        .text("title", "report \"Q3\"")
        .part(
            "file",
            Part::bytes(vec![0u8, 1, 2, 255]).file_name("data.bin"),
        )
        .part(
            "log",
            Part::stream(pieces, None)
                .file_name("app.log")
                .content_type("text/plain"),
        );
    client.post("upload").multipart(form).send().await.unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.header("transfer-encoding").as_deref(), Some("chunked"));
    let content_type = seen.header("content-type").unwrap();
    let parts = crate::multipart::parse(content_type.as_str(), &seen.body).unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["title", "file", "log"]);
    assert_eq!(parts[0].body, Bytes::from_static(b"report \"Q3\""));
    assert_eq!(parts[1].file_name.as_deref(), Some("data.bin"));
    assert_eq!(parts[1].body, Bytes::from_static(&[0, 1, 2, 255]));
    assert_eq!(parts[2].content_type.as_deref(), Some("text/plain"));
    assert_eq!(parts[2].body, Bytes::from_static(b"line 1\nline 2\n"));
}

/// A plain `http` request through an HTTP proxy: the proxy (a scripted
/// server here) gets the request in absolute form with its credentials, and
/// the origin is never dialled.
pub async fn proxy_gets_absolute_form_and_its_credentials(rt: Arc<dyn Runtime>) {
    let proxy = RawServer::start(|_| {
        RawReply::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nproxied".to_vec())
    });
    let proxy_url = format!("http://ada:s3cret@{}", proxy.addr);
    let client = Client::builder(rt, "http://origin.invalid:8080/")
        .proxy(&proxy_url, "")
        .bearer_token("origin-token")
        .build()
        .unwrap();
    let shown = format!("{client:?}");
    let body = client
        .get("items?page=2")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "proxied");
    let head = proxy.requests()[0].head.to_ascii_lowercase();
    assert!(
        head.starts_with("get http://origin.invalid:8080/items?page=2 http/1.1\r\n"),
        "{head}"
    );
    // base64("ada:s3cret"). In absolute form the proxy sees the whole
    // request, as plain http through any proxy does.
    assert!(
        head.contains("proxy-authorization: basic ywrhonmzy3jlda=="),
        "{head}"
    );
    assert!(head.contains("host: origin.invalid:8080"), "{head}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

/// A proxy's refusals and failures are typed proxy errors naming the proxy,
/// and leave the origin's breaker alone; a proxy that cannot reach the
/// origin (502) is the origin's failure.
pub async fn proxy_failures_are_the_proxys(rt: Arc<dyn Runtime>) {
    let refusing = RawServer::start(|_| {
        RawReply::WriteThenClose(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n".to_vec(),
        )
    });
    let client = Client::builder(rt.clone(), "https://origin.invalid/")
        .proxy(&format!("http://{}", refusing.addr), "")
        .configure(super::client::fast)
        .build()
        .unwrap();
    let error = client.get("x").send().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Proxy, "{error}");
    let shown = error.to_string();
    assert!(
        shown.contains("407") && shown.contains(&refusing.addr.to_string()),
        "{shown}"
    );
    assert_eq!(refusing.accepted(), 1, "a refusal is not retried");

    // Nothing listens on the proxy's port: retried (nothing reached the
    // origin), then a proxy error; the origin's breaker heard nothing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let client = Client::builder(rt.clone(), "https://origin.invalid/")
        .proxy(&format!("http://user:pw@{dead_addr}"), "")
        .configure(super::client::fast)
        .build()
        .unwrap();
    let error = client.get("x").send().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Proxy, "{error}");
    assert!(
        error.attempts() > 1,
        "an unreachable proxy is retried: {error}"
    );
    assert!(!error.to_string().contains("pw@"), "{error}");
    let stats = client.stats();
    for origin in &stats.origins {
        assert_eq!(
            origin.breaker,
            breakwater::core::policy::breaker::BreakerStateKind::Closed
        );
    }
    assert_pool_exact(&client);

    // 502 to CONNECT: the proxy could not reach the origin.
    let gateway = RawServer::start(|_| {
        RawReply::WriteThenClose(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec())
    });
    let client = Client::builder(rt.clone(), "https://origin.invalid/")
        .proxy(&format!("http://{}", gateway.addr), "")
        .configure(super::client::fast)
        .build()
        .unwrap();
    let error = client.post("x").send().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    assert!(
        error.to_string().contains("could not reach the origin"),
        "{error}"
    );

    // A tunnel that the proxy closes right after opening it.
    let closing = RawServer::start(|_| {
        RawReply::WriteThenClose(b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec())
    });
    let client = Client::builder(rt, "https://origin.invalid/")
        .proxy(&format!("http://{}", closing.addr), "")
        .configure(super::client::fast)
        .build()
        .unwrap();
    let error = client.get("x").send().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Tls, "{error}");
    assert!(error.to_string().contains("through the proxy"), "{error}");
    assert_pool_exact(&client);
}

/// No connection is checked out or being opened, and every one opened is
/// idle or closed.
fn assert_pool_exact(client: &Client) {
    let pool = client.stats().pool;
    assert_eq!((pool.active, pool.connecting), (0, 0), "{pool:?}");
    assert_eq!(pool.opened, pool.closed + pool.idle as u64, "{pool:?}");
}
