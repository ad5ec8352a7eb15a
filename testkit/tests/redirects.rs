//! Redirects followed by the client, under the simulation: the chain, what
//! each hop carries, the typed errors, and the deadline over the whole chain
//! (docs/spec/redirect.md).

mod common;

use std::time::Duration;

use breakwater::core::call::OriginProfile;
use breakwater::{Client, ErrorKind, RedirectPolicy};
use breakwater_testkit::{Link, Reply, Sim};
use bytes::Bytes;
use http::Method;

fn client(sim: &Sim, base: &str) -> Client {
    Client::builder(sim.runtime(), base).build().unwrap()
}

#[test]
fn a_chain_is_followed_to_its_end_and_remembered() {
    let mut sim = Sim::new(1);
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/a")
        .respond(Reply::redirect(302, "/b?token=secret"));
    api.route(Method::GET, "/b")
        .respond(Reply::redirect(301, "https://api.test/c"));
    let end = api
        .route(Method::GET, "/c")
        .respond(Reply::json(r#"{"ok":true}"#));
    let client = client(&sim, "https://api.test/");
    let (url, history, body) = sim
        .run(async move {
            let response = client.get("a").send().await?;
            let url = response.url().to_string();
            let history: Vec<(String, u16)> = response
                .history()
                .iter()
                .map(|hop| (hop.url().to_string(), hop.status().as_u16()))
                .collect();
            Ok::<_, breakwater::Error>((url, history, response.bytes().await?))
        })
        .unwrap();
    assert_eq!(url, "https://api.test/c");
    assert_eq!(
        history,
        vec![
            ("https://api.test/a".to_owned(), 302),
            ("https://api.test/b?token=secret".to_owned(), 301),
        ]
    );
    assert_eq!(body, Bytes::from_static(br#"{"ok":true}"#));
    assert_eq!(end.calls(), 1);
}

#[test]
fn a_post_answered_303_becomes_a_get_without_body_or_key() {
    let mut sim = Sim::new(2);
    let api = sim.mock("https://api.test");
    api.route(Method::POST, "/orders")
        .respond(Reply::redirect(303, "/orders/7"));
    let order = api
        .route(Method::GET, "/orders/7")
        .respond(Reply::json("{}"));
    let client = client(&sim, "https://api.test/");
    sim.run(async move {
        client
            .post("orders")
            .json(&serde_json::json!({"item": 1}))
            .idempotency_key("order-7")
            .send()
            .await
    })
    .unwrap();
    let seen = &order.requests()[0];
    assert!(seen.body.is_empty());
    assert_eq!(seen.header("content-type"), None);
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(seen.header("idempotency-key"), None);
}

#[test]
fn a_307_to_the_same_origin_resends_method_body_and_key() {
    let mut sim = Sim::new(3);
    let api = sim.mock("https://api.test");
    api.route(Method::POST, "/v1/orders")
        .respond(Reply::redirect(307, "/v2/orders"));
    let v2 = api
        .route(Method::POST, "/v2/orders")
        .respond(Reply::new(201, "made"));
    let client = client(&sim, "https://api.test/");
    let status = sim
        .run(async move {
            client
                .post("v1/orders")
                .json(&serde_json::json!({"item": 1}))
                .idempotency_key("order-8")
                .send()
                .await
        })
        .unwrap()
        .status();
    assert_eq!(status, 201);
    let seen = &v2.requests()[0];
    assert_eq!(seen.body, Bytes::from_static(br#"{"item":1}"#));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("idempotency-key"), Some("order-8"));
}

#[test]
fn credentials_never_follow_a_redirect_to_another_origin() {
    let mut sim = Sim::new(4);
    let api = sim.mock("https://api.test");
    let other = sim.mock("https://files.test");
    api.route(Method::POST, "/upload")
        .respond(Reply::redirect(307, "https://files.test/put?sig=1"));
    let landed = other
        .route(Method::POST, "/put")
        .respond(Reply::new(200, "stored"));
    let client = Client::builder(sim.runtime(), "https://api.test/")
        .bearer_token("bearer-secret")
        .api_key("x-api-key", "key-secret")
        .default_header("x-tenant-secret", "tenant")
        .sensitive_header("x-tenant-secret")
        .build()
        .unwrap();
    sim.run(async move {
        client
            .post("upload")
            .header("cookie", "session=abc")
            .header("x-trace", "kept")
            .body("data")
            .idempotency_key("upload-1")
            .send()
            .await
    })
    .unwrap();
    let seen = &landed.requests()[0];
    for name in [
        "authorization",
        "x-api-key",
        "x-tenant-secret",
        "cookie",
        "idempotency-key",
    ] {
        assert_eq!(seen.header(name), None, "{name} crossed to another origin");
    }
    assert_eq!(seen.header("x-trace"), Some("kept"));
    assert_eq!(seen.header("host"), Some("files.test"));
    assert_eq!(seen.body, Bytes::from_static(b"data"));
}

#[test]
fn https_to_http_is_a_typed_error_naming_the_chain() {
    let mut sim = Sim::new(5);
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/a")
        .respond(Reply::redirect(302, "http://api.test/b"));
    let client = client(&sim, "https://api.test/");
    let error = sim
        .run(async move { client.get("a").send().await })
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Redirect);
    let shown = error.to_string();
    assert!(shown.contains("https to plain http"), "{shown}");
    assert!(shown.contains("GET https://api.test/a (302)"), "{shown}");
}

#[test]
fn hop_limits_and_loops_are_typed_errors() {
    let mut sim = Sim::new(6);
    let api = sim.mock("https://api.test");
    for n in 0..12 {
        api.route(Method::GET, &format!("/hop/{n}"))
            .respond(Reply::redirect(302, &format!("/hop/{}", n + 1)));
    }
    api.route(Method::GET, "/ping")
        .respond(Reply::redirect(302, "/pong"));
    api.route(Method::GET, "/pong")
        .respond(Reply::redirect(302, "/ping?x=1"));
    let client = client(&sim, "https://api.test/");
    let (default_limit, small_limit, looped) = sim.run(async move {
        let default_limit = client.get("hop/0").send().await.unwrap_err();
        let small_limit = client
            .get("hop/0")
            .redirects(RedirectPolicy::limited(2))
            .send()
            .await
            .unwrap_err();
        let looped = client.get("ping").send().await.unwrap_err();
        (default_limit, small_limit, looped)
    });
    assert_eq!(default_limit.kind(), ErrorKind::Redirect);
    assert!(
        default_limit
            .to_string()
            .contains("redirected more than 10 times"),
        "{default_limit}"
    );
    assert!(
        default_limit.to_string().contains("/hop/10 (302)"),
        "the chain is named: {default_limit}"
    );
    assert!(
        small_limit.to_string().contains("more than 2 times"),
        "{small_limit}"
    );
    assert_eq!(looped.kind(), ErrorKind::Redirect);
    assert!(looped.to_string().contains("loop"), "{looped}");
}

#[test]
fn redirects_can_be_turned_off_per_request_client_and_origin() {
    let mut sim = Sim::new(7);
    let api = sim.mock("https://api.test");
    let partner = sim.mock("https://partner.test");
    api.route(Method::GET, "/old")
        .respond(Reply::redirect(302, "/new"));
    api.route(Method::GET, "/new").respond(Reply::json("{}"));
    partner
        .route(Method::GET, "/old")
        .respond(Reply::redirect(302, "/new"));
    partner
        .route(Method::GET, "/new")
        .respond(Reply::json("{}"));
    let follows = client(&sim, "https://api.test/");
    let never = Client::builder(sim.runtime(), "https://api.test/")
        .redirects(RedirectPolicy::NONE)
        .build()
        .unwrap();
    let profiled = Client::builder(sim.runtime(), "https://api.test/")
        .profile(
            "https://partner.test",
            OriginProfile::default().with_redirects(RedirectPolicy::NONE),
        )
        .build()
        .unwrap();
    let statuses = sim.run(async move {
        let per_request = follows
            .get("old")
            .redirects(RedirectPolicy::NONE)
            .send()
            .await
            .unwrap();
        let hint = follows
            .get("old")
            .redirects(RedirectPolicy::NONE)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap_err()
            .to_string();
        [
            follows.get("old").send().await.unwrap().status().as_u16(),
            per_request.status().as_u16(),
            never.get("old").send().await.unwrap().status().as_u16(),
            profiled.get("old").send().await.unwrap().status().as_u16(),
            profiled
                .get("https://partner.test/old")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        ]
        .map(|s| (s, hint.clone()))
    });
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [200, 302, 302, 200, 302]);
    let hint = &statuses[0].1;
    assert!(hint.contains("302 Found redirect to /new"), "{hint}");
}

#[test]
fn a_streamed_body_is_not_resent_and_the_response_says_why() {
    let mut sim = Sim::new(8);
    let api = sim.mock("https://api.test");
    api.route(Method::PUT, "/blob")
        .respond(Reply::redirect(307, "/blob2"));
    let second = api.route(Method::PUT, "/blob2");
    let client = client(&sim, "https://api.test/");
    let (status, note) = sim
        .run(async move {
            let pieces = futures_lite::stream::iter([Ok(Bytes::from_static(b"abc"))]);
            let response = client.put("blob").body_stream(pieces).send().await?;
            Ok::<_, breakwater::Error>((
                response.status().as_u16(),
                response.redirect_note().map(str::to_owned),
            ))
        })
        .unwrap();
    assert_eq!(status, 307);
    assert!(note.unwrap().contains("streamed"));
    assert_eq!(second.calls(), 0);
}

#[test]
fn the_deadline_covers_the_whole_chain() {
    let mut sim = Sim::new(9);
    sim.set_default_link(Link::rtt(Duration::ZERO));
    let api = sim.mock("https://api.test");
    for n in 0..6 {
        api.route(Method::GET, &format!("/slow/{n}")).respond(
            Reply::redirect(302, &format!("/slow/{}", n + 1)).delayed(Duration::from_secs(3)),
        );
    }
    let client = Client::builder(sim.runtime(), "https://api.test/")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let (error, elapsed) = sim.run(async move {
        let started = runtime.now();
        let error = client.get("slow/0").send().await.unwrap_err();
        (error, runtime.now().saturating_duration_since(started))
    });
    // Each hop alone is well within 10 s; four of them are not.
    assert!(error.is_timeout(), "{error}");
    assert!(elapsed <= Duration::from_secs(10), "{elapsed:?}");
    assert!(elapsed >= Duration::from_secs(9), "{elapsed:?}");
}

#[test]
fn each_hop_is_a_call_with_its_own_timings_and_the_total_spans_the_chain() {
    let mut sim = Sim::new(10);
    sim.set_default_link(Link::rtt(Duration::ZERO));
    let api = sim.mock("https://api.test");
    let other = sim.mock("https://other.test");
    api.route(Method::GET, "/a")
        .respond(Reply::redirect(302, "https://other.test/b").delayed(Duration::from_millis(300)));
    other
        .route(Method::GET, "/b")
        .respond(Reply::json("{}").delayed(Duration::from_millis(500)));
    let client = client(&sim, "https://api.test/");
    let (total, first_hop_total, calls) = sim.run(async move {
        let response = client.get("a").send().await.unwrap();
        let total = response.timings().total;
        let first = response.history()[0].timings().total;
        (total, first, client.stats().calls)
    });
    assert_eq!(calls, 2, "each hop is a call of its own");
    assert!(first_hop_total >= Duration::from_millis(300));
    assert!(first_hop_total < Duration::from_millis(500));
    assert!(total >= Duration::from_millis(800), "{total:?}");
}

#[test]
fn a_key_set_as_a_plain_header_follows_the_keys_rule() {
    let mut sim = Sim::new(11);
    let api = sim.mock("https://api.test");
    api.route(Method::POST, "/pay")
        .respond(Reply::redirect(303, "/receipt"));
    let receipt = api
        .route(Method::GET, "/receipt")
        .respond(Reply::json("{}"));
    let client = client(&sim, "https://api.test/");
    sim.run(async move {
        client
            .post("pay")
            .header("idempotency-key", "pay-1")
            .body("x")
            .send()
            .await
            .unwrap();
    });
    assert_eq!(receipt.requests()[0].header("idempotency-key"), None);
}
