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

use super::server::{respond, Options, TestServer};
use super::transport::{localhost_ca, tls_server_config, Pki};

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

/// An origin over plain HTTP and one over TLS with a test CA, both on
/// 127.0.0.1, the TLS one named `localhost`: what the proxies reach.
struct Origins {
    plain: TestServer,
    secure: TestServer,
    pki: Pki,
}

impl Origins {
    fn start() -> Origins {
        let pki = Pki::new();
        let tls = tls_server_config(&pki.leaf("localhost"), None);
        Origins {
            plain: TestServer::start(|_| respond(200, "plain")),
            secure: TestServer::start_with(
                Options {
                    tls: Some(Arc::new(tls)),
                },
                |_| respond(200, "secure"),
            ),
            pki,
        }
    }

    fn client(&self, rt: &Arc<dyn Runtime>, proxy: &str) -> Client {
        Client::builder(rt.clone(), self.plain.url("/"))
            .proxy(proxy, "")
            .tls(localhost_ca(&self.pki))
            .configure(super::client::fast)
            .build()
            .unwrap()
    }

    /// One plain and two TLS GETs through `client`'s proxy; the tunnel is
    /// reused for the second, and the origins never see the proxy's header.
    async fn reach_both(&self, client: &Client) {
        let plain = client.get(&self.plain.url("/a")).send().await.unwrap();
        assert_eq!(plain.text().await.unwrap(), "plain");
        for _ in 0..2 {
            let secure = client.get(&self.secure.url("/b")).send().await.unwrap();
            assert_eq!(secure.text().await.unwrap(), "secure");
        }
        assert_eq!(self.secure.accepted(), 1, "the tunnel was reused");
        for seen in self.plain.seen().iter().chain(self.secure.seen().iter()) {
            assert_eq!(seen.header("proxy-authorization"), None, "{seen:?}");
        }
    }
}

fn without_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_owned(),
    }
}

/// tinyproxy: plain `http` in absolute form and `https` through `CONNECT`,
/// open and with Basic credentials, which reach the proxy (it refuses
/// without them) and never the origin; its log shows the tunnel.
pub async fn tinyproxy_absolute_form_and_tunnels(rt: Arc<dyn Runtime>) {
    for variable in ["BREAKWATER_HTTP_PROXY", "BREAKWATER_HTTP_PROXY_AUTH"] {
        let origins = Origins::start();
        let client = origins.client(&rt, &peer(variable));
        origins.reach_both(&client).await;
    }
    // The authenticating instance, without credentials: a proxy error for
    // the tunnel (407 to CONNECT) and for the absolute form (407 response).
    let origins = Origins::start();
    let client = origins.client(&rt, &without_userinfo(&peer("BREAKWATER_HTTP_PROXY_AUTH")));
    for url in [origins.secure.url("/x"), origins.plain.url("/x")] {
        let error = client.get(&url).send().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Proxy, "{url}: {error}");
        assert!(error.to_string().contains("407"), "{error}");
    }
    assert_eq!(origins.plain.hits() + origins.secure.hits(), 0);
    let log = std::fs::read_to_string(peer("BREAKWATER_HTTP_PROXY_LOG")).unwrap_or_default();
    println!(
        "tinyproxy's log, last lines:\n{}",
        log.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
}

/// dante: SOCKS5 with the client resolving names and SOCKS5h with the proxy
/// resolving them, open and with a user name and password; a wrong password
/// is a proxy error.
pub async fn dante_socks5_and_socks5h(rt: Arc<dyn Runtime>) {
    let mut variables = vec!["BREAKWATER_SOCKS5"];
    if std::env::var("BREAKWATER_SOCKS5_AUTH").is_ok() {
        variables.push("BREAKWATER_SOCKS5_AUTH");
    }
    for variable in variables {
        for remote_names in [false, true] {
            let mut proxy = peer(variable);
            if remote_names {
                proxy = proxy.replacen("socks5://", "socks5h://", 1);
            }
            let origins = Origins::start();
            let client = origins.client(&rt, &proxy);
            origins.reach_both(&client).await;
        }
    }
    if let Ok(with_user) = std::env::var("BREAKWATER_SOCKS5_AUTH") {
        let origins = Origins::start();
        let (user, host) = with_user.rsplit_once('@').unwrap();
        let name = user
            .trim_start_matches("socks5://")
            .split(':')
            .next()
            .unwrap();
        let client = origins.client(&rt, &format!("socks5://{name}:wrong-password@{host}"));
        let error = client
            .get(&origins.plain.url("/x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Proxy, "{error}");
        assert!(
            error.to_string().contains("user name and password"),
            "{error}"
        );
        assert!(!error.to_string().contains("wrong-password"), "{error}");
    }
}
