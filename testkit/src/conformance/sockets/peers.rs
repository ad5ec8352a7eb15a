//! Against third-party servers: httpbin (PyPI, under gunicorn) and nginx
//! (Debian), whose HTTP is not ours. `peers/start.sh` installs and starts
//! them on 127.0.0.1 and writes their addresses to `peers/.run/env`;
//! [`socket_peer_tests!`](crate::socket_peer_tests) makes one ignored
//! `#[test]` each, which `.ci/run` runs with that environment.

use std::sync::Arc;

use breakwater::multipart::{Form, Part};
use breakwater::runtime::Runtime;
use breakwater::tls::TlsOptions;
use breakwater::{Client, ErrorKind};
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A peer's address from the environment `peers/start.sh` wrote.
fn peer(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} names a peer: run peers/start.sh and load peers/.run/env")
    })
}

fn httpbin(rt: &Arc<dyn Runtime>) -> Client {
    Client::builder(rt.clone(), peer("BREAKWATER_HTTPBIN") + "/")
        .build()
        .unwrap()
}

/// httpbin's relative and absolute redirect chains are followed to `/get`.
pub async fn httpbin_redirect_chains(rt: Arc<dyn Runtime>) {
    let client = httpbin(&rt);
    for (path, hops) in [("redirect/3", 3), ("absolute-redirect/2", 2)] {
        let response = client.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.url().path(), "/get", "{path}");
        assert_eq!(response.history().len(), hops, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["url"].as_str().unwrap().ends_with("/get"), "{body}");
    }
    let error = client
        .get("redirect/3")
        .redirects(breakwater::RedirectPolicy::limited(2))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Redirect, "{error}");
}

/// A 307 keeps the POST and its JSON body; httpbin echoes them.
pub async fn httpbin_307_keeps_method_and_body(rt: Arc<dyn Runtime>) {
    let client = httpbin(&rt);
    let response = client
        .post("redirect-to?url=/post&status_code=307")
        .json(&serde_json::json!({"kept": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.history()[0].status(), 307);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["json"]["kept"], true, "{body}");
}

/// httpbin's `/gzip`, `/deflate` and (with the `brotli` feature) `/brotli`
/// decode to the JSON they announce.
pub async fn httpbin_compressed_bodies(rt: Arc<dyn Runtime>) {
    let client = httpbin(&rt);
    let mut paths = vec![("gzip", "gzipped"), ("deflate", "deflated")];
    if cfg!(feature = "client-brotli") {
        paths.push(("brotli", "brotli"));
    }
    for (path, flag) in paths {
        let response = client.get(path).send().await.unwrap();
        assert!(
            !response.headers().contains_key("content-encoding"),
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body[flag], true, "{path}: {body}");
    }
}

/// `/cookies/set` sets cookies and redirects to `/cookies`, which lists
/// what the request carried: the jar's cookies, on the redirect's hop.
pub async fn httpbin_cookies_follow_the_redirect(rt: Arc<dyn Runtime>) {
    let client = Client::builder(rt, peer("BREAKWATER_HTTPBIN") + "/")
        .cookie_store(true)
        .build()
        .unwrap();
    let response = client.get("cookies/set?a=1&b=two").send().await.unwrap();
    assert_eq!(response.url().path(), "/cookies");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cookies"], serde_json::json!({"a": "1", "b": "two"}));
    let again: Value = client
        .get("cookies")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["cookies"]["b"], "two");
}

/// A multipart form with files, one streamed, as httpbin's `/post` parses it.
pub async fn httpbin_multipart_files(rt: Arc<dyn Runtime>) {
    let client = httpbin(&rt);
    for streamed in [false, true] {
        let mut form = Form::new()
            .text("name", "ada \"lovelace\"")
            .part("upload", Part::bytes("file body").file_name("notes.txt"));
        if streamed {
            let stream = futures_lite::stream::iter([
                Ok(Bytes::from_static(b"streamed ")),
                Ok(Bytes::from_static(b"file")),
            ]);
            form = form.part("log", Part::stream(stream, None).file_name("app.log"));
        }
        let body: Value = client
            .post("post")
            .multipart(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["form"]["name"], "ada \"lovelace\"", "{body}");
        assert_eq!(body["files"]["upload"], "file body", "{body}");
        if streamed {
            assert_eq!(body["files"]["log"], "streamed file", "{body}");
        }
    }
}

/// nginx compresses its 8 MiB static file on the fly; the client decodes
/// it to the bytes on disk, over plain HTTP and over TLS.
pub async fn nginx_gzip_static_file(rt: Arc<dyn Runtime>) {
    let path = peer("BREAKWATER_NGINX_BIG_PATH");
    let want_len: usize = peer("BREAKWATER_NGINX_BIG_LEN").parse().unwrap();
    let want_sha = peer("BREAKWATER_NGINX_BIG_SHA256");
    let plain = Client::builder(rt.clone(), peer("BREAKWATER_NGINX") + "/")
        .build()
        .unwrap();
    let ca = std::fs::read(peer("BREAKWATER_NGINX_TLS_CA")).unwrap();
    let tls = Client::builder(rt, peer("BREAKWATER_NGINX_TLS") + "/")
        .tls(TlsOptions::default().with_only_ca_pem(&ca).unwrap())
        .build()
        .unwrap();
    for client in [&plain, &tls] {
        let raw = client.get(&path).decompress(false).send().await.unwrap();
        assert_eq!(
            raw.headers()["content-encoding"],
            "gzip",
            "nginx compresses what the client offers"
        );
        let on_the_wire = raw.bytes().await.unwrap().len();
        let body = client
            .get(&path)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.len(), want_len);
        assert_eq!(hex(&Sha256::digest(&body)), want_sha);
        assert!(on_the_wire * 4 < want_len, "{on_the_wire} bytes compressed");
    }
}

/// nginx's 308 to its other port keeps a POST and its body.
pub async fn nginx_308_to_another_port(rt: Arc<dyn Runtime>) {
    let client = Client::builder(rt, peer("BREAKWATER_NGINX") + "/")
        .build()
        .unwrap();
    for method in [http::Method::GET, http::Method::POST] {
        let response = client
            .request(method.clone(), "moved")
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(response.history()[0].status(), 308);
        assert_eq!(
            response.url().port(),
            peer("BREAKWATER_NGINX_OTHER")
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["landed"], true);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
