//! HTTP semantics a user relies on, on real sockets against a hyper server:
//! which header wins, where credentials go, where a relative URL lands, what
//! `User-Agent` is sent, and which caller mistakes are typed errors at `send`.
//! The rules are in docs/spec/request.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater::auth::{TokenFetchError, TokenResponse};
use breakwater::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use breakwater::ErrorKind;
use breakwater_testkit::conformance::sockets::server::{respond, Seen, TestServer};

fn ok_server() -> TestServer {
    TestServer::start(|_| respond(200, "ok"))
}

/// The values of `name` on the one request `server` saw.
fn values(server: &TestServer, name: &str) -> Vec<String> {
    let seen: Vec<Seen> = server.seen();
    assert_eq!(seen.len(), 1, "one request expected");
    seen[0]
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_body_helpers_content_type_replaces_the_default_one() {
    let server = ok_server();
    let client = breakwater_tokio::client(server.url("/"))
        .default_header(CONTENT_TYPE, "application/json")
        .build()
        .unwrap();
    client
        .post("login")
        .form(&[("user", "ada")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        values(&server, "content-type"),
        ["application/x-www-form-urlencoded"],
        "two Content-Type fields, or the wrong one"
    );
}

#[tokio::test]
async fn a_request_header_replaces_the_default_of_the_same_name() {
    let server = ok_server();
    let client = breakwater_tokio::client(server.url("/"))
        .default_header(ACCEPT, "application/json")
        .build()
        .unwrap();
    client
        .get("a")
        .header(ACCEPT, "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(values(&server, "accept"), ["text/plain"]);
}

#[tokio::test]
async fn header_append_repeats_a_header_on_purpose() {
    let server = ok_server();
    let client = breakwater_tokio::client(server.url("/"))
        .default_header("x-trace", "client")
        .build()
        .unwrap();
    client
        .get("a")
        .header_append("x-trace", "call")
        .send()
        .await
        .unwrap();
    assert_eq!(values(&server, "x-trace"), ["client", "call"]);
}

#[tokio::test]
async fn a_per_request_authorization_wins_over_the_clients_bearer_token() {
    let server = ok_server();
    let client = breakwater_tokio::client(server.url("/"))
        .bearer_token("svc")
        .build()
        .unwrap();
    client
        .get("me")
        .header(AUTHORIZATION, "Bearer user")
        .send()
        .await
        .unwrap();
    assert_eq!(values(&server, "authorization"), ["Bearer user"]);
}

/// A request that carries its caller's token and gets a 401 is the caller's
/// 401: it is not replayed with the client's own token.
#[tokio::test]
async fn a_callers_401_is_not_replayed_with_the_clients_token() {
    let server = TestServer::start(|_| respond(401, "who are you"));
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let client = breakwater_tokio::client(server.url("/"))
        .token_source(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, TokenFetchError>(TokenResponse::new(
                    "client-token".into(),
                    Some(Duration::from_secs(600)),
                ))
            }
        })
        .build()
        .unwrap();
    let response = client
        .get("me")
        .header(AUTHORIZATION, "Bearer user")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(server.hits(), 1, "the 401 was replayed");
    assert_eq!(values(&server, "authorization"), ["Bearer user"]);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        0,
        "a token was fetched for a caller's request"
    );
}

#[tokio::test]
async fn an_api_key_and_a_bearer_token_go_together() {
    let server = ok_server();
    let client = breakwater_tokio::client(server.url("/"))
        .api_key("x-api-key", "k3y")
        .bearer_token("t0ken")
        .build()
        .unwrap();
    client.get("a").send().await.unwrap();
    assert_eq!(values(&server, "x-api-key"), ["k3y"]);
    assert_eq!(values(&server, "authorization"), ["Bearer t0ken"]);
}

/// A default header that carries a credential is the base origin's only.
#[tokio::test]
async fn a_default_authorization_or_cookie_stays_with_the_base_origin() {
    let base = ok_server();
    let other = ok_server();
    let client = breakwater_tokio::client(base.url("/"))
        .default_header(AUTHORIZATION, "Basic c2VjcmV0")
        .default_header("cookie", "session=s3cret")
        .sensitive_header("x-session")
        .default_header("x-session", "abc")
        .default_header("x-plain", "yes")
        .build()
        .unwrap();
    client.get("a").send().await.unwrap();
    client.get(&other.url("/b")).send().await.unwrap();
    assert_eq!(values(&base, "authorization"), ["Basic c2VjcmV0"]);
    assert_eq!(values(&base, "cookie"), ["session=s3cret"]);
    assert_eq!(values(&base, "x-session"), ["abc"]);
    assert!(
        values(&other, "authorization").is_empty(),
        "a credential crossed origins"
    );
    assert!(
        values(&other, "cookie").is_empty(),
        "a cookie crossed origins"
    );
    assert!(
        values(&other, "x-session").is_empty(),
        "a sensitive header crossed origins"
    );
    assert_eq!(values(&other, "x-plain"), ["yes"]);
    let shown = format!("{client:?}");
    for secret in ["c2VjcmV0", "s3cret", "abc"] {
        assert!(
            !shown.contains(secret),
            "{secret} in the client's Debug: {shown}"
        );
    }
}

#[tokio::test]
async fn relative_urls_join_the_base_path_as_httpx_does() {
    let server = ok_server();
    let with_slash = breakwater_tokio::client(server.url("/v1/"))
        .build()
        .unwrap();
    let without_slash = breakwater_tokio::client(server.url("/v1")).build().unwrap();
    with_slash.get("users/1").send().await.unwrap();
    with_slash.get("/users/2").send().await.unwrap();
    without_slash
        .get("users/3?active=true")
        .send()
        .await
        .unwrap();
    without_slash
        .get(&server.url("/absolute"))
        .send()
        .await
        .unwrap();
    let paths: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.uri.path_and_query().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "/v1/users/1",
            "/v1/users/2",
            "/v1/users/3?active=true",
            "/absolute"
        ]
    );
}

#[tokio::test]
async fn a_user_agent_is_sent_and_can_be_changed_or_removed() {
    let server = ok_server();
    let default = breakwater_tokio::client(server.url("/")).build().unwrap();
    let named = breakwater_tokio::client(server.url("/"))
        .user_agent(Some("billing/2.1"))
        .build()
        .unwrap();
    let none = breakwater_tokio::client(server.url("/"))
        .user_agent(None)
        .build()
        .unwrap();
    default.get("a").send().await.unwrap();
    named.get("b").send().await.unwrap();
    none.get("c").send().await.unwrap();
    let agents: Vec<Option<String>> = server
        .seen()
        .iter()
        .map(|s| {
            s.headers
                .get(USER_AGENT)
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        agents,
        [
            Some(format!("breakwater/{}", env!("CARGO_PKG_VERSION"))),
            Some("billing/2.1".to_owned()),
            None
        ]
    );
}

/// Caller mistakes are typed errors at `send`, before anything is sent.
#[tokio::test]
async fn caller_mistakes_are_typed_errors_at_send() {
    let server = ok_server();
    let client = breakwater_tokio::client(server.url("/")).build().unwrap();
    let mistakes = [
        client.get("a").header("bad header", "x"),
        client.get("a").header("x-ok", "line\nbreak"),
        client.post("a").json(&1).header(CONTENT_TYPE, "text/plain"),
        client.post("a").body("x").header("content-length", "5"),
        client.get("//elsewhere.example/x"),
        // The URL parser reads backslashes as slashes and drops tabs: a
        // "relative" URL must not reach another host that way.
        client.get("\\\\elsewhere.example/x"),
        client.get("\t//elsewhere.example/x"),
        client.get("/\\elsewhere.example/x"),
    ];
    for request in mistakes {
        let shown = format!("{request:?}");
        let error = request.send().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Request, "{shown}: {error}");
    }
    assert_eq!(server.hits(), 0, "a mistaken request was sent");
    // The JSON:API way: the bytes with the Content-Type the caller wants.
    client
        .post("a")
        .body(serde_json::to_vec(&1).unwrap())
        .header(CONTENT_TYPE, "application/vnd.api+json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        values(&server, "content-type"),
        ["application/vnd.api+json"]
    );
}

/// A GET answered with bytes that are not HTTP is reported at once, not sent
/// three times to a broken server, and counts against the breaker; a response
/// with both Content-Length and Transfer-Encoding is one of those.
#[tokio::test]
async fn a_malformed_response_is_not_retried_and_counts_against_the_breaker() {
    use breakwater::core::policy::breaker::{BreakerConfig, BreakerStateKind};
    use breakwater_testkit::conformance::sockets::server::{RawServer, Reply};

    let server = RawServer::start(|request| {
        match request.path() {
        "/garbage" => Reply::WriteThenClose(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()),
        _ => Reply::WriteThenClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
    }
    });
    let client = breakwater_tokio::client(server.url("/"))
        .configure(|c| c.with_breaker(BreakerConfig::default().with_consecutive_failures(Some(2))))
        .build()
        .unwrap();
    let garbage = client.get("garbage").send().await.unwrap_err();
    assert_eq!(garbage.kind(), ErrorKind::Protocol, "{garbage}");
    assert_eq!(garbage.attempts(), 1, "{garbage}");
    let framing = client.get("both-lengths").send().await.unwrap_err();
    assert_eq!(framing.kind(), ErrorKind::Protocol, "{framing}");
    assert!(
        framing
            .to_string()
            .contains("Content-Length and Transfer-Encoding"),
        "{framing}"
    );
    assert_eq!(
        server.requests().len(),
        2,
        "a malformed response was retried"
    );
    assert_eq!(client.stats().origins[0].breaker, BreakerStateKind::Open);
}

/// A batch of PUTs with JSON bodies on real sockets, handled by the caller's
/// closure: results in input order, and the failing item names its URL.
#[tokio::test]
async fn send_many_runs_any_requests_and_names_the_failure() {
    let server = TestServer::start(|seen| {
        if seen.uri.path() == "/items/2" {
            respond(500, "boom")
        } else {
            respond(200, std::str::from_utf8(&seen.body).unwrap())
        }
    });
    let client = breakwater_tokio::client(server.url("/"))
        .max_concurrency(2)
        .build()
        .unwrap();
    let requests: Vec<_> = (1..=4u32)
        .map(|i| client.put(&format!("items/{i}")).json(&i).attempts(1))
        .collect();
    let results = client
        .send_many(requests, |response| async move {
            response.error_for_status().await?.text().await
        })
        .await;
    let shown: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(body) => body.clone(),
            Err(e) => format!("{} {}", e.method().unwrap(), e.url().unwrap()),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "1".to_owned(),
            format!("PUT {}", server.url("/items/2")),
            "3".to_owned(),
            "4".to_owned()
        ]
    );
    assert_eq!(
        server.seen().iter().filter(|s| s.method == "PUT").count(),
        4
    );
}
