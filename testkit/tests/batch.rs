//! Batch calls on the virtual clock: partial results in input order,
//! all-or-nothing with cancellation, and the concurrency cap respected.

use std::time::Duration;

use breakwater_testkit::{Reply, Sim};

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Item {
    id: u32,
}

fn sim_with_items() -> (Sim, breakwater_testkit::ServerHandle) {
    let mut sim = Sim::new(11);
    let server = sim.server("https://api.test", |request, _| {
        let id: u32 = request
            .path()
            .trim_start_matches("/items/")
            .parse()
            .unwrap_or(0);
        if id % 7 == 0 {
            Reply::new(404, "missing")
        } else {
            // A slow upstream, so that calls overlap and the cap matters.
            Reply::json(format!("{{\"id\":{id}}}")).delayed(Duration::from_millis(500))
        }
    });
    (sim, server)
}

#[test]
fn get_many_returns_every_result_in_input_order_within_the_cap() {
    let (mut sim, server) = sim_with_items();
    let client = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .max_concurrency(5)
        .build()
        .unwrap();
    let urls: Vec<String> = (1..=20).map(|i| format!("items/{i}")).collect();
    // Sample the client while the batch runs: at most 5 in flight, and the
    // batch never starts more than that (nobody queues for a permit).
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (monitor, runtime, seen) = (client.clone(), sim.runtime(), samples.clone());
    sim.spawn(async move {
        for _ in 0..100 {
            let stats = monitor.stats();
            seen.lock()
                .unwrap()
                .push((stats.in_flight, stats.waiting_for_permit));
            runtime
                .sleep_until(runtime.now() + Duration::from_millis(50))
                .await;
        }
    });
    let probe = client.clone();
    let results = sim.run(async move { probe.get_many::<Item, _>(urls).await });
    assert_eq!(results.len(), 20);
    for (i, result) in results.iter().enumerate() {
        let id = i as u32 + 1;
        match result {
            Ok(item) => assert_eq!(item.id, id),
            Err(err) => {
                assert_eq!(id % 7, 0, "only multiples of 7 fail");
                assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND));
            }
        }
    }
    let samples = samples.lock().unwrap();
    assert!(
        samples.iter().any(|&(in_flight, _)| in_flight == 5),
        "the cap was used: {samples:?}"
    );
    assert!(
        samples
            .iter()
            .all(|&(in_flight, waiting)| in_flight <= 5 && waiting == 0),
        "{samples:?}"
    );
    assert_eq!(server.hits(), 20);
    assert_eq!(client.stats().pool.active, 0);
}

#[test]
fn try_get_many_returns_the_first_error_and_cancels_the_rest() {
    let (mut sim, server) = sim_with_items();
    let client = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .max_concurrency(4)
        .build()
        .unwrap();
    let urls: Vec<String> = (1..=40).map(|i| format!("items/{i}")).collect();
    let probe = client.clone();
    let err = sim
        .run(async move { probe.try_get_many::<Item, _>(urls).await })
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND));
    assert!(
        server.hits() < 40,
        "the calls after the failure were cancelled, not sent"
    );
    let stats = client.stats();
    assert_eq!(
        (stats.pool.active, stats.in_flight),
        (0, 0),
        "cancelled calls gave everything back"
    );

    let ok: Vec<Item> = sim
        .run(async move {
            client
                .try_get_many::<Item, _>(["items/1", "items/2", "items/3"])
                .await
        })
        .unwrap();
    assert_eq!(ok, vec![Item { id: 1 }, Item { id: 2 }, Item { id: 3 }]);
}

/// Any method, any body, any handling: a batch of PUTs whose responses are
/// decoded by the caller's closure. The item whose handling fails says which
/// request it was (method and URL, query values redacted); the rest succeed.
#[test]
fn send_many_takes_any_request_and_names_each_failure() {
    let mut sim = Sim::new(12);
    let server = sim.server("https://api.test", |request, _| {
        if request.path() == "/orders/3" {
            Reply::new(200, "not json")
        } else {
            let id = String::from_utf8_lossy(&request.body).into_owned();
            Reply::json(format!("{{\"id\":{id}}}")).delayed(Duration::from_millis(100))
        }
    });
    let client = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .max_concurrency(2)
        .build()
        .unwrap();
    let (partial, all_or_nothing) = sim.run(async move {
        let requests = |client: &breakwater::Client| -> Vec<breakwater::RequestBuilder> {
            (1..=4u32)
                .map(|i| client.put(&format!("orders/{i}?token=s3cret")).json(&i))
                .collect()
        };
        let decode = |response: breakwater::Response| async move { response.json::<Item>().await };
        let partial = client.send_many(requests(&client), decode).await;
        let all_or_nothing = client.try_send_many(requests(&client), decode).await;
        (partial, all_or_nothing)
    });
    assert_eq!(partial.len(), 4);
    for (i, result) in partial.iter().enumerate() {
        let id = i as u32 + 1;
        match (id, result) {
            (3, Err(error)) => {
                assert_eq!(error.kind(), breakwater::ErrorKind::Decode, "{error}");
                assert_eq!(error.method(), Some(&http::Method::PUT));
                assert_eq!(error.url(), Some("https://api.test/orders/3?token=…"));
                assert!(!error.to_string().contains("s3cret"), "{error}");
            }
            (_, Ok(item)) => assert_eq!(item.id, id),
            (_, other) => panic!("item {id}: {other:?}"),
        }
    }
    let error = all_or_nothing.unwrap_err();
    assert_eq!(error.url(), Some("https://api.test/orders/3?token=…"));
    let puts = server
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::PUT)
        .count();
    assert!(puts >= 4 + 3, "{puts} PUTs");
}
