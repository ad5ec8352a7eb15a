//! A first end-to-end check of the client on tokio against a hyper server.

use std::time::Duration;

use breakwater::core::policy::backoff::BackoffPolicy;
use breakwater_testkit::conformance::sockets::server::{respond, TestServer};

fn fast_backoff(
    config: breakwater::core::call::EngineConfig,
) -> breakwater::core::call::EngineConfig {
    config.with_backoff(
        BackoffPolicy::default()
            .with_adaptive_floor(false)
            .with_base_floor(Duration::from_millis(2))
            .with_floor_bounds(Duration::from_millis(1), Duration::from_millis(5)),
    )
}

#[tokio::test]
async fn get_json_then_retry_503s() {
    let server = TestServer::start(|seen| match (seen.uri.path(), seen.hit) {
        ("/users/1", _) => respond(200, r#"{"id":1,"name":"Leanne Graham"}"#),
        ("/flaky", 2) | ("/flaky", 3) => respond(503, "busy"),
        ("/flaky", _) => respond(200, "ok"),
        _ => respond(404, "no"),
    });
    let client = breakwater_tokio::client(server.url("/"))
        .configure(fast_backoff)
        .build()
        .unwrap();

    #[derive(serde::Deserialize)]
    struct User {
        name: String,
    }
    let user: User = client.get_json("users/1").await.unwrap();
    assert_eq!(user.name, "Leanne Graham");

    let response = client.get("flaky").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(server.hits(), 4);

    let err = client
        .get("missing")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), breakwater::ErrorKind::Status);
    assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND));
    println!("{err}");
    let stats = client.stats();
    assert_eq!(stats.pool.active, 0, "{stats:?}");
    println!("{stats:#?}\naccepted {}", server.accepted());
}
