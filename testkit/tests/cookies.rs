//! The opt-in cookie jar under the simulation: what goes back where,
//! across redirects, between clients, and never into `Debug`
//! (docs/spec/cookies.md).

use std::sync::Arc;

use breakwater::cookies::CookieJar;
use breakwater::Client;
use breakwater_testkit::{Reply, Sim};
use http::Method;

fn keeping(sim: &Sim, base: &str) -> Client {
    Client::builder(sim.runtime(), base)
        .cookie_store(true)
        .build()
        .unwrap()
}

#[test]
fn a_session_cookie_goes_back_to_its_host_only_and_only_when_asked_for() {
    let mut sim = Sim::new(1);
    let api = sim.mock("https://api.example.test");
    let other = sim.mock("https://other.test");
    api.route(Method::POST, "/login").respond(
        Reply::new(204, "")
            .header("set-cookie", "session=s3cr3t; Path=/; HttpOnly; Secure")
            .set_cookie("theme=dark"),
    );
    let me = api.route(Method::GET, "/me");
    let elsewhere = other.route(Method::GET, "/");
    let client = keeping(&sim, "https://api.example.test/");
    let forgetful = Client::builder(sim.runtime(), "https://api.example.test/")
        .build()
        .unwrap();
    let shown = sim.run(async move {
        let login = client.post("login").send().await.unwrap();
        let shown = format!("{login:?}");
        client.get("me").send().await.unwrap();
        client.get("https://other.test/").send().await.unwrap();
        forgetful.post("login").send().await.unwrap();
        forgetful.get("me").send().await.unwrap();
        (shown, format!("{:?}", client.cookie_jar().unwrap()))
    });
    let sent = me.requests();
    assert_eq!(sent[0].header("cookie"), Some("session=s3cr3t; theme=dark"));
    assert_eq!(
        sent[1].header("cookie"),
        None,
        "a client without a jar keeps nothing"
    );
    assert_eq!(elsewhere.requests()[0].header("cookie"), None);
    assert!(!shown.0.contains("s3cr3t"), "{}", shown.0);
    assert!(
        !shown.1.contains("s3cr3t") && shown.1.contains("cookies: 2"),
        "{}",
        shown.1
    );
}

#[test]
fn domain_path_secure_and_expiry_rules_hold() {
    let mut sim = Sim::new(2);
    let api = sim.mock("https://api.example.test");
    let www = sim.mock("https://www.example.test");
    let plain = sim.mock("http://www.example.test");
    api.route(Method::GET, "/set").respond(
        Reply::new(200, "")
            .header("set-cookie", "wide=1; Domain=example.test; Path=/")
            .header("set-cookie", "tld=1; Domain=test; Path=/")
            .header("set-cookie", "admin=1; Path=/admin")
            .header("set-cookie", "secure=1; Domain=example.test; Secure")
            .header("set-cookie", "gone=1"),
    );
    api.route(Method::GET, "/expire")
        .respond(Reply::new(200, "").header("set-cookie", "gone=; Max-Age=0"));
    let admin = api.route(Method::GET, "/admin/users");
    let public = api.route(Method::GET, "/public");
    let www_route = www.route(Method::GET, "/");
    let plain_route = plain.route(Method::GET, "/");
    let client = keeping(&sim, "https://api.example.test/");
    sim.run(async move {
        client.get("set").send().await.unwrap();
        client.get("admin/users").send().await.unwrap();
        client.get("expire").send().await.unwrap();
        client.get("public").send().await.unwrap();
        client
            .get("https://www.example.test/")
            .send()
            .await
            .unwrap();
        client.get("http://www.example.test/").send().await.unwrap();
    });
    let cookies = |route: &breakwater_testkit::RouteHandle| {
        let mut names: Vec<String> = route.requests()[0]
            .header("cookie")
            .unwrap_or("")
            .split("; ")
            .filter(|s| !s.is_empty())
            .map(|pair| pair.split('=').next().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(cookies(&admin), ["admin", "gone", "secure", "wide"]);
    assert_eq!(
        cookies(&public),
        ["secure", "wide"],
        "Path and Max-Age=0 hold"
    );
    assert_eq!(
        cookies(&www_route),
        ["secure", "wide"],
        "Domain covers subdomains"
    );
    assert_eq!(
        cookies(&plain_route),
        ["wide"],
        "Secure stays off plain http"
    );
}

#[test]
fn redirects_carry_what_each_hop_may_have() {
    let mut sim = Sim::new(3);
    let api = sim.mock("https://api.test");
    let other = sim.mock("https://other.test");
    api.route(Method::GET, "/cookies/set")
        .respond(Reply::redirect(302, "/cookies").header("set-cookie", "a=1; Path=/"));
    let landing = api.route(Method::GET, "/cookies");
    api.route(Method::GET, "/away")
        .respond(Reply::redirect(302, "https://other.test/in"));
    let away = other.route(Method::GET, "/in");
    let client = keeping(&sim, "https://api.test/");
    sim.run(async move {
        client.get("cookies/set").send().await.unwrap();
        client
            .get("away")
            .header("cookie", "mine=1")
            .send()
            .await
            .unwrap();
    });
    assert_eq!(
        landing.requests()[0].header("cookie"),
        Some("a=1"),
        "the redirect's own Set-Cookie goes with its next hop"
    );
    assert_eq!(
        away.requests()[0].header("cookie"),
        None,
        "neither the jar's nor the caller's cookie crosses to another origin"
    );
}

#[test]
fn a_jar_is_shared_only_on_purpose_and_a_callers_cookie_wins() {
    let mut sim = Sim::new(4);
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/login")
        .respond(Reply::new(200, "").header("set-cookie", "session=1"));
    let me = api.route(Method::GET, "/me");
    let jar = Arc::new(CookieJar::new());
    let first = Client::builder(sim.runtime(), "https://api.test/")
        .cookie_jar(jar.clone())
        .build()
        .unwrap();
    let second = Client::builder(sim.runtime(), "https://api.test/")
        .cookie_jar(jar.clone())
        .build()
        .unwrap();
    let separate = keeping(&sim, "https://api.test/");
    sim.run(async move {
        first.get("login").send().await.unwrap();
        second.get("me").send().await.unwrap();
        separate.get("me").send().await.unwrap();
        second
            .get("me")
            .header("cookie", "session=override")
            .send()
            .await
            .unwrap();
    });
    let sent: Vec<Option<String>> = me
        .requests()
        .iter()
        .map(|r| r.header("cookie").map(str::to_owned))
        .collect();
    assert_eq!(
        sent,
        [
            Some("session=1".to_owned()),
            None,
            Some("session=override".to_owned())
        ]
    );
    assert_eq!(jar.len(), 1);
}

#[test]
fn a_server_cannot_grow_the_jar_without_bound() {
    let mut sim = Sim::new(5);
    let api = sim.mock("https://api.test");
    let mut flood = Reply::new(200, "");
    for i in 0..80 {
        flood = flood.set_cookie(&format!("c{i}=v; Path=/"));
    }
    api.route(Method::GET, "/flood").respond(flood);
    let me = api.route(Method::GET, "/me");
    let client = keeping(&sim, "https://api.test/");
    sim.run(async move {
        client.get("flood").send().await.unwrap();
        client.get("me").send().await.unwrap();
    });
    let sent = me.requests()[0].header("cookie").unwrap().to_owned();
    assert_eq!(
        sent.split("; ").count(),
        50,
        "at most 50 cookies per domain"
    );
}

#[test]
fn a_redirect_back_to_the_same_url_after_a_cookie_is_not_a_loop() {
    let mut sim = Sim::new(6);
    let api = sim.mock("https://api.test");
    api.route(Method::GET, "/consent").respond_seq([
        Reply::redirect(302, "/consent").set_cookie("consent=yes"),
        Reply::json("{}"),
    ]);
    let with_jar = keeping(&sim, "https://api.test/");
    let status = sim.run(async move { with_jar.get("consent").send().await.unwrap().status() });
    assert_eq!(status, 200);
}
