//! The client's API promises, checked on the virtual clock: secrets stay out
//! of Debug output, credentials stay on their origin, close() ends waiters,
//! and timings say what happened.

mod common;

use std::time::Duration;

use breakwater::core::call::EngineConfig;
use breakwater::core::pool::PoolConfig;
use breakwater::ErrorKind;
use breakwater_testkit::{Reply, Sim};
use common::{client, fetch};
use http::header::HeaderName;
use http::Method;

#[test]
fn secrets_never_reach_debug_output() {
    let sim = Sim::new(21);
    let builder = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .api_key(HeaderName::from_static("x-api-key"), "key-5ecret")
        .bearer_token("token-5ecret");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("5ecret"), "{shown}");
    let client = builder.build().unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains("5ecret"), "{shown}");
    let request = client
        .get("x")
        .header(http::header::AUTHORIZATION, "Bearer inline-5ecret");
    // A header the caller sets is the caller's; the client's own credentials are what it guards.
    assert!(format!("{:?}", breakwater::auth::Secret::from("5ecret")).contains("redacted"));
    drop(request);
}

#[test]
fn credentials_go_to_the_base_origin_only() {
    let mut sim = Sim::new(22);
    let api = sim.mock("https://api.test");
    let home = api.route(Method::GET, "/me").respond(Reply::json("{}"));
    let other = sim.mock("https://cdn.other.test");
    let asset = other
        .route(Method::GET, "/logo.png")
        .respond(Reply::new(200, "png"));
    let client = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .bearer_token("t0ken")
        .build()
        .unwrap();
    sim.run(async move {
        fetch(&client, "me").await;
        fetch(&client, "https://cdn.other.test/logo.png").await;
    });
    assert_eq!(
        home.requests()[0].header("authorization"),
        Some("Bearer t0ken")
    );
    assert_eq!(asset.requests()[0].header("authorization"), None);
}

#[test]
fn close_fails_waiters_and_later_calls_and_closes_idle_connections() {
    let mut sim = Sim::new(23);
    let server = sim.server("https://api.test", |request, _| {
        if request.path() == "/slow" {
            Reply::json("{}").delayed(Duration::from_secs(5))
        } else {
            Reply::json("{}")
        }
    });
    let client = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .configure(|c: EngineConfig| c.with_pool(PoolConfig::default().with_max_connections(1)))
        .build()
        .unwrap();
    let (holder, waiter, closer, later) = (
        client.clone(),
        client.clone(),
        client.clone(),
        client.clone(),
    );
    let (runtime, rt) = (sim.runtime(), sim.runtime());
    let (held, waited, after) = sim.run(async move {
        // Warm one idle connection, then occupy it with a slow call.
        holder
            .get("fast")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let slow = async move { holder.get("slow").send().await.map(|r| r.status()) };
        let queued = async move {
            runtime
                .sleep_until(runtime.now() + Duration::from_millis(10))
                .await;
            waiter.get("fast").send().await.map(|r| r.status())
        };
        let close = async move {
            rt.sleep_until(rt.now() + Duration::from_millis(100)).await;
            closer.close().await;
        };
        let ((held, waited), ()) =
            futures_lite::future::zip(futures_lite::future::zip(slow, queued), close).await;
        let after = later.get("fast").send().await.map(|r| r.status());
        (held, waited, after)
    });
    assert_eq!(held.unwrap(), 200, "a call already in flight finishes");
    assert_eq!(
        waited.unwrap_err().kind(),
        ErrorKind::Closed,
        "a waiter is failed by close"
    );
    assert_eq!(
        after.unwrap_err().kind(),
        ErrorKind::Closed,
        "a call after close says so"
    );
    let runtime = sim.runtime();
    sim.run(async move {
        runtime
            .sleep_until(runtime.now() + Duration::from_secs(1))
            .await
    });
    assert_eq!(server.open_connections(), 0, "no connection survives close");
    assert_eq!(client.stats().pool.idle, 0);
}

#[test]
fn timings_tell_a_new_connection_from_a_reused_one() {
    let mut sim = Sim::new(24);
    sim.set_default_link(breakwater_testkit::Link::rtt(Duration::from_millis(40)));
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/ping").respond(Reply::json("{}"));
    let client = client(&sim, "https://api.test/");
    let (first, second) = sim.run(async move {
        let first = client.get("ping").send().await.unwrap();
        let t1 = *first.timings();
        first.bytes().await.unwrap();
        let second = client.get("ping").send().await.unwrap();
        (t1, *second.timings())
    });
    assert!(!first.reused && second.reused);
    assert_eq!(
        first.connect,
        Some(Duration::from_millis(80)),
        "TCP and TLS: two round trips"
    );
    assert_eq!(first.tls_handshake, Some(Duration::from_millis(40)));
    assert_eq!(first.first_byte, Some(Duration::from_millis(40)));
    assert_eq!(second.connect, None);
    assert_eq!(second.total, Duration::from_millis(40));
}

#[test]
fn a_profile_gives_a_slow_partner_its_own_timeout() {
    use breakwater::core::call::OriginProfile;
    let mut sim = Sim::new(25);
    for origin in ["https://partner.test", "https://internal.test"] {
        let mock = sim.mock(origin);
        mock.route(Method::GET, "/report")
            .respond(Reply::json("{}").delayed(Duration::from_secs(3)));
        std::mem::forget(mock);
    }
    let client = breakwater::Client::builder(sim.runtime(), "https://internal.test/")
        .profile(
            "https://partner.test",
            OriginProfile::default().with_total_timeout(Duration::from_secs(2)),
        )
        .build()
        .unwrap();
    let (partner, internal) = sim.run(async move {
        let partner = client
            .get("https://partner.test/report")
            .send()
            .await
            .map(|r| r.status());
        let internal = client.get("report").send().await.map(|r| r.status());
        (partner, internal)
    });
    // The partner's 2 s deadline ended the call while it waited for the response.
    let partner = partner.unwrap_err();
    assert!(partner.deadline_exceeded(), "{partner}");
    assert_eq!(
        partner.kind(),
        ErrorKind::Timeout(breakwater::TimeoutPhase::Response)
    );
    assert_eq!(
        internal.unwrap(),
        200,
        "the default 30 s deadline still applies elsewhere"
    );

    let bad = breakwater::Client::builder(sim.runtime(), "https://internal.test/")
        .profile("ftp://nope", OriginProfile::default())
        .build();
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::Builder);
}

#[test]
fn stats_count_calls_attempts_retries_and_hooks_see_response_headers() {
    let mut sim = Sim::new(26);
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/flaky").respond_seq([
        Reply::new(429, "slow down").header("retry-after", "2"),
        Reply::new(503, "busy"),
        Reply::json("{}"),
    ]);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let client = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .on_response(move |info| {
            let retry_after = info
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            log.lock()
                .unwrap()
                .push((info.attempt, info.status.as_u16(), retry_after));
        })
        .build()
        .unwrap();
    let probe = client.clone();
    let status = sim.run(async move { probe.get("flaky").send().await.unwrap().status() });
    assert_eq!(status, 200);
    let stats = client.stats();
    assert_eq!(
        (stats.calls, stats.attempts, stats.retries, stats.failures),
        (1, 3, 2, 0)
    );
    let origin = &stats.origins[0];
    assert_eq!(origin.latency_samples, 3, "{origin:?}");
    // The default budget holds 100 retries' worth; these two spent one each.
    assert_eq!(origin.retry_budget, 98, "{origin:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (1, 429, Some("2".to_owned())),
            (2, 503, None),
            (3, 200, None)
        ]
    );
}

#[test]
fn oauth2_client_credentials_fetch_once_and_fail_terminally_on_invalid_client() {
    use breakwater::oauth2::ClientCredentials;
    let mut sim = Sim::new(27);
    let idp = sim.mock("https://idp.test");
    let token = idp
        .route(Method::POST, "/oauth/token")
        .handler(|request, _| {
            let form = String::from_utf8_lossy(&request.body).into_owned();
            if form.contains("client_secret=right") {
                Reply::json(r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":300}"#)
            } else {
                Reply::new(401, r#"{"error":"invalid_client"}"#)
            }
        });
    let api = sim.mock("https://api.test");
    let me = api.route(Method::GET, "/me").respond(Reply::json("{}"));

    let build = |secret: &str| {
        let idp_client = client(&sim, "https://idp.test/");
        let grant = ClientCredentials::new(idp_client, "oauth/token", "app", secret.to_owned())
            .with_scope("read");
        breakwater::Client::builder(sim.runtime(), "https://api.test/")
            .token_source(grant)
            .build()
            .unwrap()
    };
    let good = build("right");
    let bad = build("wrong");
    assert!(
        !format!("{good:?}").contains("right"),
        "the client secret stays out of Debug"
    );
    let (statuses, err) = sim.run(async move {
        let calls = (0..10).map(|_| {
            let good = good.clone();
            async move { good.get("me").send().await.map(|r| r.status().as_u16()) }
        });
        let mut statuses = Vec::new();
        for call in calls {
            statuses.push(call.await.unwrap());
        }
        (statuses, bad.get("me").send().await.unwrap_err())
    });
    assert_eq!(statuses, vec![200; 10]);
    assert!(me
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer tok-1")));
    assert_eq!(
        token.calls(),
        2,
        "one fetch for the good client, one refused fetch for the bad one"
    );
    assert!(token.requests()[0]
        .header("content-type")
        .unwrap()
        .contains("x-www-form-urlencoded"));
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert_eq!(
        me.calls(),
        10,
        "a call without credentials never reaches the API"
    );
}

#[test]
fn lines_split_across_pieces_and_refuse_an_endless_line() {
    use futures_lite::StreamExt;
    let mut sim = Sim::new(28);
    let api = sim.mock("https://api.test");
    let pieces: Vec<bytes::Bytes> = vec!["one\r\ntw".into(), "o\nthr".into(), "ee".into()];
    api.route(Method::GET, "/lines")
        .respond(Reply::new(200, "").chunks(pieces));
    let endless: Vec<bytes::Bytes> = (0..40)
        .map(|_| bytes::Bytes::from(vec![b'x'; 64 * 1024]))
        .collect();
    api.route(Method::GET, "/endless")
        .respond(Reply::new(200, "").chunks(endless));
    let client = client(&sim, "https://api.test/");
    let (lines, endless) = sim.run(async move {
        let lines: Vec<String> = client
            .get("lines")
            .send()
            .await
            .unwrap()
            .lines()
            .map(|l| l.unwrap())
            .collect()
            .await;
        let endless: Vec<_> = client
            .get("endless")
            .send()
            .await
            .unwrap()
            .lines()
            .collect()
            .await;
        (lines, endless)
    });
    assert_eq!(lines, ["one", "two", "three"]);
    assert_eq!(endless.len(), 1, "one error, then the stream ends");
    assert_eq!(endless[0].as_ref().unwrap_err().kind(), ErrorKind::Decode);
}

#[test]
fn urls_with_passwords_are_refused_before_they_can_leak() {
    let sim = Sim::new(29);
    let err = breakwater::Client::builder(sim.runtime(), "https://user:pa55@api.test/")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Builder);
    assert!(!err.to_string().contains("pa55"), "{err}");
    let client = client(&sim, "https://api.test/");
    let mut sim = sim;
    let err = sim
        .run(async move {
            client
                .get("https://user:pa55@other.test/x")
                .send()
                .await
                .map(|_| ())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Request);
    assert!(!err.to_string().contains("pa55"), "{err}");
}

#[test]
fn a_url_longer_than_http_allows_is_refused_before_it_is_sent() {
    let mut sim = Sim::new(30);
    let api = sim.mock("https://api.test");
    let long_path = format!("/{}", "a".repeat(70_000));
    let route = api
        .route(Method::GET, &long_path)
        .respond(Reply::new(200, "unused"));
    let client = client(&sim, "https://api.test/");
    let err = sim
        .run(async move { client.get(&long_path).send().await.map(|_| ()) })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Request);
    assert!(err.to_string().contains("70017 bytes"), "{err}");
    assert_eq!(route.calls(), 0, "nothing was sent");
}

#[test]
fn the_oauth2_grant_keeps_its_client_secret_out_of_debug_output() {
    use breakwater::oauth2::ClientCredentials;
    let sim = Sim::new(36);
    let idp_client = client(&sim, "https://idp.test/");
    let grant = ClientCredentials::new(idp_client, "oauth/token", "app", "5ecret-5auce");
    let shown = format!("{grant:?}");
    assert!(!shown.contains("5ecret"), "{shown}");
    assert!(shown.contains("app"), "the rest is still shown: {shown}");
}

#[test]
fn a_head_response_ends_with_its_head_and_leaves_the_connection_reusable() {
    let mut sim = Sim::new(37);
    let api = sim.mock("https://api.test");
    // The server announces the length the GET would have; a HEAD gets no body.
    api.route(Method::HEAD, "/report")
        .respond(Reply::new(200, vec![b'x'; 4096]));
    api.route(Method::GET, "/report")
        .respond(Reply::new(200, vec![b'x'; 4096]));
    let client = client(&sim, "https://api.test/");
    let (head_length, head_body, get_body) = sim.run(async move {
        let head = client.request(Method::HEAD, "report").send().await.unwrap();
        let length = head.headers().get("content-length").cloned();
        let head_body = head.bytes().await.unwrap();
        let get_body = client.get("report").send().await.unwrap().bytes().await;
        (length, head_body, get_body.unwrap())
    });
    assert_eq!(head_length.unwrap(), "4096");
    assert!(head_body.is_empty());
    assert_eq!(get_body.len(), 4096);
    assert_eq!(sim.connects(), 1, "the HEAD's connection carried the GET");
}

/// The keep-alive race, lost to a reset rather than a close: a reused
/// connection reset before any response byte is the same evidence as an EOF,
/// so a GET is replaced on a fresh connection without counting as a retry.
#[test]
fn a_reset_before_any_response_byte_on_a_reused_connection_is_replaced_for_free() {
    use breakwater_testkit::Fault;
    let mut sim = Sim::new(31);
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/item").respond_seq([
        Reply::json("{}"),
        Reply::json("{}").fault(Fault::ResetBeforeResponse),
        Reply::json("{}"),
    ]);
    let client = client(&sim, "https://api.test/");
    let (attempts, budget_before, budget_after) = sim.run(async move {
        let first = client.get("item").send().await.unwrap();
        first.bytes().await.unwrap();
        let before = client.stats().origins[0].retry_budget;
        let response = client.get("item").send().await.unwrap();
        (
            response.attempts(),
            before,
            client.stats().origins[0].retry_budget,
        )
    });
    assert_eq!(attempts, 1, "the replacement counted as an attempt");
    assert!(
        budget_after >= budget_before,
        "the replacement was paid from the retry budget: {budget_before} -> {budget_after}"
    );
    assert_eq!(sim.connects(), 2);
}

/// A response that says `Connection: close` ends its connection's use, even
/// when the server leaves the socket open.
#[test]
fn a_connection_close_response_is_not_reused() {
    let mut sim = Sim::new(32);
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/item").respond_seq([
        Reply::json("{}").header("connection", "close"),
        Reply::json("{}"),
        Reply::json("{}"),
    ]);
    let client = client(&sim, "https://api.test/");
    sim.run(async move {
        for _ in 0..3 {
            fetch(&client, "item").await;
        }
    });
    assert_eq!(
        sim.connects(),
        2,
        "closed after the first response, then kept"
    );
}

/// A body that breaks off is the upstream failing: five in a row open the
/// origin's breaker like five failed attempts would.
#[test]
fn truncated_bodies_count_against_the_breaker() {
    use breakwater_testkit::Fault;
    let mut sim = Sim::new(33);
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/report")
        .respond(Reply::new(200, vec![b'x'; 4096]).fault(Fault::ResetAfterBytes(200)));
    let client = client(&sim, "https://api.test/");
    let stats = client.clone();
    let (body_errors, next) = sim.run(async move {
        let mut body_errors = Vec::new();
        for _ in 0..5 {
            let response = client.get("report").send().await.unwrap();
            body_errors.push(response.bytes().await.unwrap_err().kind());
        }
        let next = client.get("report").send().await.map(|r| r.status());
        (body_errors, next)
    });
    assert_eq!(body_errors, vec![ErrorKind::Body; 5]);
    assert_eq!(next.unwrap_err().kind(), ErrorKind::CircuitOpen);
    let stats = stats.stats();
    // The five delivered a response; only the refused sixth failed as a call.
    assert_eq!((stats.calls, stats.failures), (6, 1));
}

/// A connect that outlasts the connect timeout is reported as such, not as
/// a refused connection.
#[test]
fn a_slow_connect_is_a_connect_timeout() {
    use breakwater_testkit::Link;
    let mut sim = Sim::new(34);
    let api = sim.mock("https://far.test");
    api.route(Method::GET, "/x").respond(Reply::json("{}"));
    // Each connect takes at least a round trip: 20 s here.
    sim.set_link("https://far.test", Link::rtt(Duration::from_secs(20)));
    let client = breakwater::Client::builder(sim.runtime(), "https://far.test/")
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = sim.run(async move { client.get("x").send().await.unwrap_err() });
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(breakwater::TimeoutPhase::Connect),
        "{err}"
    );
}

/// The tutorial's breaker let a half-open probe hold its slot forever. Here
/// the probe's caller gives up while the probe hangs: its slot must come
/// back at once, so the next call is admitted as the new probe (and closes
/// the breaker) instead of being refused until a probe timeout.
#[test]
fn a_half_open_probe_whose_caller_gives_up_hands_its_slot_back() {
    use breakwater::core::policy::breaker::BreakerConfig;
    use breakwater::core::policy::breaker::BreakerStateKind;
    const SECOND: Duration = Duration::from_secs(1);
    let mut sim = Sim::new(35);
    let api = sim.mock("https://api.test");
    let mut replies = vec![Reply::new(503, "down"); 5];
    replies.push(Reply::json("{}").delayed(3600 * SECOND));
    replies.push(Reply::json("{}"));
    let route = api.route(Method::GET, "/svc").respond_seq(replies);
    let client = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .configure(|c| {
            c.with_breaker(
                BreakerConfig::default()
                    .with_consecutive_failures(Some(5))
                    .with_open_interval(SECOND)
                    .with_open_jitter(false)
                    .with_half_open_probes(1),
            )
        })
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let observer = client.clone();
    let (while_probing, after_cancel) = sim.run(async move {
        for _ in 0..5 {
            let response = client.get("svc").attempts(1).send().await.unwrap();
            assert_eq!(response.status(), 503);
        }
        runtime.sleep_until(runtime.now() + 2 * SECOND).await;
        // The probe hangs at the server; its caller gives up after 2 s.
        let probe = async {
            let _ = client.get("svc").attempts(1).send().await;
        };
        let meanwhile = async {
            runtime.sleep_until(runtime.now() + SECOND).await;
            let refused = client
                .get("svc")
                .attempts(1)
                .send()
                .await
                .map(|r| r.status());
            runtime.sleep_until(runtime.now() + SECOND).await;
            refused
        };
        let while_probing = futures_lite::future::or(
            async {
                probe.await;
                None
            },
            async { Some(meanwhile.await) },
        )
        .await
        .expect("the probe hung");
        let after_cancel = client
            .get("svc")
            .attempts(1)
            .send()
            .await
            .map(|r| r.status());
        (while_probing, after_cancel)
    });
    assert_eq!(while_probing.unwrap_err().kind(), ErrorKind::CircuitOpen);
    assert_eq!(
        after_cancel.unwrap(),
        200,
        "the cancelled probe kept its slot"
    );
    assert_eq!(route.calls(), 7);
    assert_eq!(
        observer.stats().origins[0].breaker,
        BreakerStateKind::Closed
    );
}

#[test]
fn tls_settings_that_cannot_be_used_fail_the_build() {
    let sim = Sim::new(39);
    // A PEM block that decodes, but to no certificate.
    let bad_ca = breakwater::tls::TlsOptions::default()
        .with_extra_ca_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        .expect("the PEM framing is fine");
    // The base URL is plain http, but the settings are the caller's: they are
    // checked by build, not at the first https call.
    let err = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .tls(bad_ca)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Builder, "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
}
