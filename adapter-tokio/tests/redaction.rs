//! Secrets stay secret: a call's credentials and query values never reach a
//! `Debug`, a `Display`, a hook or a log line. One test in its own binary, so
//! that its log capture sees only its own calls.

use std::sync::Arc;

use breakwater_testkit::conformance::sockets::server::{respond, TestServer};

/// A call carrying a bearer token, an API key in a header, a cookie and an
/// `?api_key=` query leaves none of them in any `Debug`, `Display`, hook or
/// log line, even when the server echoes the token in a 401's body.
#[tokio::test]
async fn no_secret_reaches_debug_display_hooks_or_logs() {
    use std::sync::Mutex;

    use breakwater_testkit::conformance::sockets::server::respond_with;
    use breakwater_testkit::conformance::sockets::transport::closed_port;

    const SECRETS: [&str; 4] = [
        "t0ken-5ecret",
        "k3y-5ecret",
        "c00kie-5ecret",
        "qu3ry-5ecret",
    ];
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || SharedLog(sink.clone()))
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start(|seen| match seen.uri.path() {
        "/denied" => respond(401, "token Bearer t0ken-5ecret is not welcome here"),
        _ => respond_with(200, &[("set-cookie", "session=c00kie-5ecret")], "ok"),
    });
    let hooks = Arc::new(Mutex::new(Vec::<String>::new()));
    let (on_request, on_response) = (hooks.clone(), hooks.clone());
    let client = breakwater_tokio::client(server.url("/"))
        .bearer_token("t0ken-5ecret")
        .api_key("x-api-key", "k3y-5ecret")
        .default_header("cookie", "session=c00kie-5ecret")
        .on_request(move |info| on_request.lock().unwrap().push(format!("{info:?}")))
        .on_response(move |info| on_response.lock().unwrap().push(format!("{info:?}")))
        .build()
        .unwrap();
    let mut shown = vec![format!("{client:?}")];

    let request = client.get("data?api_key=qu3ry-5ecret&page=2");
    shown.push(format!("{request:?}"));
    let response = request.send().await.unwrap();
    shown.push(format!("{response:?}"));
    assert_eq!(response.text().await.unwrap(), "ok");

    let denied = client
        .get("denied?api_key=qu3ry-5ecret")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .await
        .unwrap_err();
    shown.push(format!("{denied}"));
    shown.push(format!("{denied:?}"));
    assert_eq!(denied.method(), Some(&breakwater::http::Method::GET));
    assert_eq!(
        denied.url(),
        Some(server.url("/denied?api_key=…").as_str()),
        "the error does not name its call"
    );
    assert!(
        denied.body_snippet().unwrap().contains("not welcome"),
        "the body is kept for the caller"
    );

    let refused = client
        .get(&format!("http://{}/x?api_key=qu3ry-5ecret", closed_port()))
        .attempts(1)
        .send()
        .await
        .unwrap_err();
    shown.push(format!("{refused}"));
    shown.push(format!("{refused:?}"));
    assert!(refused.to_string().contains("GET http://"), "{refused}");

    // Everything a person or a log collector could see.
    shown.extend(hooks.lock().unwrap().iter().cloned());
    shown.push(String::from_utf8(logs.lock().unwrap().clone()).unwrap());
    assert!(
        shown.last().unwrap().contains("sending"),
        "no log line was captured"
    );
    for text in &shown {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} leaked into: {text}");
        }
    }
    // The server did get them: redaction is of what is shown, not what is sent.
    let seen = server.seen();
    assert!(seen[0].uri.query().unwrap().contains("qu3ry-5ecret"));
    assert_eq!(seen[0].header("x-api-key").as_deref(), Some("k3y-5ecret"));
}

/// A log sink the test can read back.
struct SharedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
