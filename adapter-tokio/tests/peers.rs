//! Against an independent third-party server: gunicorn (PyPI), whose HTTP/1.1
//! parser is not ours, serving `peers/echo_wsgi.py`, which answers with what
//! gunicorn parsed. `.ci/run` installs and starts it on 127.0.0.1 and sets
//! `BREAKWATER_PEER_GUNICORN`; a bare `cargo test` skips these.
//!
//! Run them by hand:
//! `(cd peers && python3 -m gunicorn -b 127.0.0.1:8081 echo_wsgi:app) &`, then
//! `BREAKWATER_PEER_GUNICORN=http://127.0.0.1:8081 cargo test -p breakwater-tokio --test peers -- --ignored`.

use breakwater::http::header::CONTENT_TYPE;

/// What the echo app says gunicorn handed it.
#[derive(serde::Deserialize, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: std::collections::BTreeMap<String, String>,
    body_length: usize,
}

fn gunicorn(path: &str) -> String {
    let base = std::env::var("BREAKWATER_PEER_GUNICORN")
        .expect("BREAKWATER_PEER_GUNICORN names the gunicorn peer (.ci/run starts it)");
    format!("{}{path}", base.trim_end_matches('/'))
}

/// gunicorn refuses a request with two `Content-Type` fields (400). A
/// client-wide JSON `Content-Type` and a form body used to send both.
#[tokio::test]
#[ignore = "needs peers: gunicorn (started by .ci/run)"]
async fn gunicorn_accepts_a_form_post_under_a_default_json_content_type() {
    let client = breakwater_tokio::client(gunicorn("/"))
        .default_header(CONTENT_TYPE, "application/json")
        .build()
        .unwrap();
    let response = client
        .post("login")
        .form(&[("user", "ada"), ("pass", "s3cret")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "gunicorn refused the request");
    let seen: Seen = response.json().await.unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(seen.body_length, "user=ada&pass=s3cret".len());
}

/// What a real server receives: the base path kept for a leading-slash URL,
/// the query, both credentials, and the default User-Agent.
#[tokio::test]
#[ignore = "needs peers: gunicorn (started by .ci/run)"]
async fn gunicorn_sees_the_joined_path_both_credentials_and_the_user_agent() {
    let client = breakwater_tokio::client(gunicorn("/v1"))
        .api_key("x-api-key", "k3y")
        .bearer_token("t0ken")
        .build()
        .unwrap();
    let seen: Seen = client.get_json("/users/1?active=true").await.unwrap();
    assert_eq!(seen.path, "/v1/users/1");
    assert_eq!(seen.query, "active=true");
    assert_eq!(seen.headers["x-api-key"], "k3y");
    assert_eq!(seen.headers["authorization"], "Bearer t0ken");
    assert_eq!(
        seen.headers["user-agent"],
        format!("breakwater/{}", env!("CARGO_PKG_VERSION"))
    );
}

/// httpbin and nginx (peers/start.sh), through the testkit's peer scenarios.
mod third_party {
    use std::sync::Arc;

    use breakwater_tokio::TokioRuntime;

    fn block_on(future: breakwater::runtime::BoxFuture<'static, ()>) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    breakwater_testkit::socket_peer_tests!(Arc::new(TokioRuntime::new()), block_on);
}
