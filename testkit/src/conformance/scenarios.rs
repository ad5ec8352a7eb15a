//! The scenarios of the conformance kit, each a function of a [`Harness`].
//!
//! Each builds its own client on the harness's runtime, starts its own
//! peers, and panics on the first broken promise, saying which.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use breakwater::auth::{TokenFetchError, TokenResponse};
use breakwater::core::call::EngineConfig;
use breakwater::core::policy::backoff::BackoffPolicy;
use breakwater::core::pool::PoolConfig;
use breakwater::runtime::Runtime;
use breakwater::{Client, ClientBuilder, ErrorKind};
use bytes::Bytes;
use http::Method;

use super::{run, Harness};
use crate::server::{Fault, Reply, ServerConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A client builder for `url`, with backoff of a few milliseconds so that
/// retries cost no real time on a real clock.
fn builder(runtime: &Arc<dyn Runtime>, url: &str) -> ClientBuilder {
    Client::builder(runtime.clone(), url).configure(|c: EngineConfig| {
        c.with_backoff(
            BackoffPolicy::default()
                .with_adaptive_floor(false)
                .with_base_floor(ms(2))
                .with_floor_bounds(ms(1), ms(5)),
        )
    })
}

/// Sleeps on the runtime's own clock.
async fn sleep(runtime: &Arc<dyn Runtime>, by: Duration) {
    runtime.sleep_until(runtime.now() + by).await;
}

/// Polls every future on the calling task until all are done, in order.
async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx: &mut TaskContext<'_>| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match Pin::new(future).poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(outputs.iter_mut().map(|o| o.take().unwrap()).collect())
        }
    })
    .await
}

/// The client holds nothing: no call in flight, no connection checked out.
fn assert_at_rest(client: &Client, scenario: &str) {
    let stats = client.stats();
    assert_eq!(
        stats.in_flight, 0,
        "{scenario}: a call still holds a permit"
    );
    assert_eq!(
        stats.pool.active, 0,
        "{scenario}: a connection is still checked out"
    );
    assert_eq!(
        stats.pool.connecting, 0,
        "{scenario}: a connect is still counted"
    );
}

/// Five GETs in a row travel on one kept-alive connection.
pub fn sequential_calls_reuse_one_connection(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|request, _| {
        Reply::new(200, request.path().to_owned())
    }));
    let client = builder(&h.runtime(), &peer.url).build().unwrap();
    let bodies = run(h, async move {
        let mut bodies = Vec::new();
        for i in 0..5 {
            let response = client.get(&format!("item/{i}")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            bodies.push(response.text().await.unwrap());
        }
        assert_at_rest(&client, "sequential calls");
        bodies
    });
    assert_eq!(
        bodies,
        ["/item/0", "/item/1", "/item/2", "/item/3", "/item/4"]
    );
    assert_eq!(
        peer.server.accepted(),
        1,
        "the calls did not share a connection"
    );
}

/// Twenty calls at once each get the answer to their own request.
pub fn concurrent_calls_each_get_their_own_answer(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|request, _| {
        Reply::new(200, request.path().to_owned()).delayed(ms(2))
    }));
    let client = builder(&h.runtime(), &peer.url).build().unwrap();
    let bodies = run(h, async move {
        let calls = (0..20)
            .map(|i| {
                let client = client.clone();
                Box::pin(async move {
                    let response = client.get(&format!("n/{i}")).send().await.unwrap();
                    response.text().await.unwrap()
                })
            })
            .collect();
        let bodies = join_all(calls).await;
        assert_at_rest(&client, "concurrent calls");
        bodies
    });
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(body, &format!("/n/{i}"), "a call got another call's answer");
    }
    assert!(peer.server.accepted() <= 20);
}

/// A GET answered 503, 503, 200 is retried until the 200.
pub fn a_503_is_retried_until_a_200(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|_, ctx| match ctx.hits {
        0 | 1 => Reply::new(503, "busy"),
        _ => Reply::new(200, "ok"),
    }));
    let client = builder(&h.runtime(), &peer.url).build().unwrap();
    let body = run(h, async move {
        let response = client.get("flaky").send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    });
    assert_eq!(body, "ok");
    assert_eq!(peer.server.hits(), 3);
}

/// A POST with an idempotency key is retried after a 503, with the same key.
pub fn a_keyed_post_is_retried_with_the_same_key(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|_, ctx| match ctx.hits {
        0 => Reply::new(503, "busy"),
        _ => Reply::new(201, "made"),
    }));
    let client = builder(&h.runtime(), &peer.url).build().unwrap();
    let status = run(h, async move {
        let response = client
            .post("orders")
            .idempotency_key("order-42")
            .body("{}")
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    });
    assert_eq!(status, 201);
    let keys: Vec<_> = peer
        .server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        [Some("order-42".to_owned()), Some("order-42".to_owned())]
    );
}

/// A POST without a key whose connection is reset after the server read it
/// may have been applied: it is not sent again.
pub fn an_unkeyed_post_is_not_resent_after_a_reset(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|_, _| {
        Reply::new(200, "charged").fault(Fault::ResetBeforeResponse)
    }));
    let client = builder(&h.runtime(), &peer.url).build().unwrap();
    let failed = run(h, async move {
        let result = client.post("charge").body("{}").send().await;
        assert_at_rest(&client, "a reset POST");
        result.is_err()
    });
    assert!(failed, "a reset POST was reported as a success");
    assert_eq!(peer.server.hits(), 1, "an unkeyed POST was sent twice");
}

/// A body streamed in pieces arrives whole, in order.
pub fn a_streamed_upload_arrives_whole(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|request, _| {
        Reply::new(200, request.body.len().to_string())
    }));
    let client = builder(&h.runtime(), &peer.url).build().unwrap();
    let pieces: Vec<Bytes> = (0..64u8).map(|i| Bytes::from(vec![i; 1000])).collect();
    let expected: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
    let stream_pieces = pieces.clone();
    let body = run(h, async move {
        let stream = futures_lite::stream::iter(stream_pieces.into_iter().map(Ok));
        let response = client
            .put("upload")
            .body_stream(stream)
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    });
    assert_eq!(body, expected.len().to_string());
    assert_eq!(&peer.server.requests()[0].body[..], &expected[..]);
}

/// A 2 MiB body in 64 KiB chunks arrives byte for byte.
pub fn a_large_chunked_body_arrives_byte_exact(h: &mut dyn Harness) {
    let chunks: Vec<Bytes> = (0..32u32)
        .map(|i| {
            Bytes::from(
                (0..65_536u32)
                    .map(|j| (i * 7 + j) as u8)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let served = chunks.clone();
    let peer = h.serve(Box::new(move |_, _| {
        Reply::new(200, "").chunks(served.clone())
    }));
    let client = builder(&h.runtime(), &peer.url).build().unwrap();
    let body = run(h, async move {
        let response = client.get("big").send().await.unwrap();
        let body = response.bytes().await.unwrap();
        assert_at_rest(&client, "a large body");
        body
    });
    assert_eq!(body.len(), expected.len());
    assert!(body[..] == expected[..], "the body's bytes differ");
}

/// Nothing listening: a connect error, on the first and only attempt of a POST.
pub fn a_refused_connect_is_a_connect_error(h: &mut dyn Harness) {
    let url = h.unreachable();
    let client = builder(&h.runtime(), &url).build().unwrap();
    let kind = run(h, async move {
        let error = client.post("x").body("{}").send().await.unwrap_err();
        assert_at_rest(&client, "a refused connect");
        error.kind()
    });
    assert_eq!(kind, ErrorKind::Connect);
}

/// The server closes an idle kept-alive connection; the next call notices
/// before it writes, and goes out on a new connection, even a POST.
pub fn a_connection_the_server_closed_while_idle_is_replaced(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|_, _| Reply::new(200, "ok")));
    peer.server.set_config(ServerConfig {
        idle_timeout: Some(ms(20)),
        ..ServerConfig::default()
    });
    let runtime = h.runtime();
    let client = builder(&runtime, &peer.url).build().unwrap();
    let server = peer.server.clone();
    let status = run(h, async move {
        client.get("a").send().await.unwrap().bytes().await.unwrap();
        // Until the server has closed it (on a real clock, its thread may lag).
        for _ in 0..200 {
            sleep(&runtime, ms(10)).await;
            if server.open_connections() == 0 {
                break;
            }
        }
        assert_eq!(
            server.open_connections(),
            0,
            "the server did not close the idle connection"
        );
        let response = client.post("b").body("{}").send().await.unwrap();
        response.status().as_u16()
    });
    assert_eq!(status, 200);
    assert_eq!(peer.server.accepted(), 2);
    assert_eq!(
        peer.server.hits(),
        2,
        "the POST was sent on the closed connection"
    );
}

/// A call dropped while it waits for a response that never comes gives back
/// its permit and its connection, and the client goes on working.
pub fn a_dropped_call_gives_everything_back(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|request, _| match request.path() {
        "/stall" => Reply::new(200, vec![b'x'; 4096]).fault(Fault::StallMidBody),
        "/slow" => Reply::new(200, "late").delayed(Duration::from_secs(30)),
        _ => Reply::new(200, "ok"),
    }));
    let runtime = h.runtime();
    let client = builder(&runtime, &peer.url).build().unwrap();
    run(h, async move {
        // Dropped while reading the body.
        let response = client.get("stall").send().await.unwrap();
        let gave_up = futures_lite::future::or(
            async {
                let _ = response.bytes().await;
                false
            },
            async {
                sleep(&runtime, ms(20)).await;
                true
            },
        )
        .await;
        assert!(gave_up, "a stalled body completed");
        // Dropped while waiting for the head.
        let gave_up = futures_lite::future::or(
            async {
                let _ = client.get("slow").send().await;
                false
            },
            async {
                sleep(&runtime, ms(20)).await;
                true
            },
        )
        .await;
        assert!(gave_up);
        assert_at_rest(&client, "dropped calls");
        let response = client.get("ok").send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "ok");
        assert_at_rest(&client, "a call after dropped ones");
    });
}

/// `sleep_until` ends at or after its instant on `now`'s clock, and sleeps
/// end in the order of their instants.
pub fn the_clock_and_the_timers_agree(h: &mut dyn Harness) {
    let runtime = h.runtime();
    run(h, async move {
        let start = runtime.now();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sleeps = [30u64, 10, 20]
            .into_iter()
            .map(|after| {
                let (runtime, order) = (runtime.clone(), order.clone());
                Box::pin(async move {
                    let deadline = start + ms(after);
                    runtime.sleep_until(deadline).await;
                    let woke = runtime.now();
                    assert!(woke >= deadline, "a sleep ended before its instant");
                    order.lock().unwrap().push(after);
                })
            })
            .collect();
        join_all(sleeps).await;
        // Each ended at or after its own instant (asserted in each); on a
        // loaded machine all three may be polled only after the last one's.
        assert_eq!(order.lock().unwrap().len(), 3);
        // An instant already past completes at once.
        runtime.sleep_until(start).await;
        assert!(runtime.now() >= start + ms(30), "the clock went backwards");
    });
}

/// A quiet client closes an idle connection when it expires: the runtime
/// runs the client's background task and its timer with no call under way.
pub fn idle_connections_expire_without_a_call(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|_, _| Reply::new(200, "ok")));
    let runtime = h.runtime();
    let client = builder(&runtime, &peer.url)
        .configure(|c| c.with_pool(PoolConfig::default().with_idle_expiry(ms(200))))
        .build()
        .unwrap();
    let server = peer.server.clone();
    let (idle_before, idle_after) = run(h, async move {
        client.get("a").send().await.unwrap().bytes().await.unwrap();
        let idle_before = client.stats().pool.idle;
        // Watched from the server's side only: reading the client's stats
        // applies due timers, and would do the housekeeper's work for it.
        for _ in 0..200 {
            sleep(&runtime, ms(10)).await;
            if server.open_connections() == 0 {
                break;
            }
        }
        (idle_before, client.stats().pool.idle)
    });
    assert_eq!(idle_before, 1);
    assert_eq!(idle_after, 0, "the idle connection was never expired");
    assert_eq!(
        peer.server.open_connections(),
        0,
        "the expired socket stayed open"
    );
}

/// Ten calls at once on a client with no token yet: one fetch serves all.
pub fn one_token_fetch_serves_many_calls(h: &mut dyn Harness) {
    let peer = h.serve(Box::new(|request, _| {
        Reply::new(
            200,
            request.header("authorization").unwrap_or("none").to_owned(),
        )
    }));
    let runtime = h.runtime();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let source_runtime = runtime.clone();
    let client = builder(&runtime, &peer.url)
        .token_source(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let runtime = source_runtime.clone();
            async move {
                sleep(&runtime, ms(10)).await;
                Ok::<_, TokenFetchError>(TokenResponse::new(
                    format!("token-{n}").into(),
                    Some(Duration::from_secs(3600)),
                ))
            }
        })
        .build()
        .unwrap();
    let bodies = run(h, async move {
        let calls = (0..10)
            .map(|_| {
                let client = client.clone();
                Box::pin(async move {
                    let response = client.request(Method::GET, "me").send().await.unwrap();
                    response.text().await.unwrap()
                })
            })
            .collect();
        join_all(calls).await
    });
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the token was fetched more than once"
    );
    assert!(bodies.iter().all(|b| b == "Bearer token-1"), "{bodies:?}");
}
