//! Proxies under the simulation: the environment read at build, routes,
//! credentials that stay with the proxy, and the proxy's faults as typed
//! errors that leave the origin's breaker alone (docs/spec/proxy.md).

use std::time::Duration;

use breakwater::core::policy::breaker::BreakerStateKind;
use breakwater::{Client, ErrorKind};
use breakwater_testkit::proxy::ProxyFault;
use breakwater_testkit::{Reply, Sim};
use http::Method;

#[test]
fn the_environment_is_read_once_at_build_and_routes_each_origin() {
    let mut sim = Sim::new(1);
    let proxy = sim.proxy("http://proxy.corp:3128");
    proxy.require_credentials("ada", "s3cret");
    let api = sim.mock("https://api.example.com");
    let internal = sim.mock("https://db.internal.corp");
    api.route(Method::GET, "/v1").respond(Reply::json("{}"));
    internal.route(Method::GET, "/q").respond(Reply::json("{}"));
    sim.set_env("HTTPS_PROXY", "http://ada:s3cret@proxy.corp:3128");
    sim.set_env("NO_PROXY", ".internal.corp");
    let client = Client::builder(sim.runtime(), "https://api.example.com/")
        .build()
        .unwrap();
    // Changing the environment after build changes nothing.
    sim.set_env("HTTPS_PROXY", "http://elsewhere.invalid:1");
    let shown = format!("{client:?}");
    sim.run(async move {
        client.get("v1").send().await.unwrap();
        client
            .get("https://db.internal.corp/q")
            .send()
            .await
            .unwrap();
    });
    assert_eq!(
        proxy.tunnels(),
        1,
        "only api.example.com went through the proxy"
    );
    assert!(shown.contains("proxy.corp:3128"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn a_bad_proxy_variable_is_a_builder_error_naming_it() {
    let mut sim = Sim::new(2);
    sim.set_env("ALL_PROXY", "ftp://proxy.corp:21");
    let error = Client::builder(sim.runtime(), "https://api.example.com/")
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Builder);
    assert!(error.to_string().contains("ALL_PROXY"), "{error}");
    let explicit = Client::builder(sim.runtime(), "https://api.example.com/")
        .proxy("gopher://x", "")
        .build()
        .unwrap_err();
    assert!(explicit.to_string().contains("proxy"), "{explicit}");
    // `no_proxy()` ignores the environment altogether.
    assert!(Client::builder(sim.runtime(), "https://api.example.com/")
        .no_proxy()
        .build()
        .is_ok());
}

#[test]
fn plain_http_through_a_proxy_reaches_the_origin_without_the_proxys_credentials() {
    let mut sim = Sim::new(3);
    let proxy = sim.proxy("http://proxy.corp:3128");
    proxy.require_credentials("ada", "s3cret");
    let api = sim.mock("http://api.example.com");
    let route = api.route(Method::GET, "/items").respond(Reply::json("[]"));
    let client = Client::builder(sim.runtime(), "http://api.example.com/")
        .proxy("http://ada:s3cret@proxy.corp:3128", "")
        .build()
        .unwrap();
    sim.run(async move {
        client.get("items?page=2").send().await.unwrap();
    });
    let seen = &route.requests()[0];
    assert_eq!(seen.target, "/items?page=2");
    assert_eq!(seen.header("proxy-authorization"), None);
    assert_eq!(seen.header("host"), Some("api.example.com"));
    assert_eq!(proxy.tunnels(), 1);
}

/// A client with retries squeezed to a few milliseconds of backoff.
fn client_through(sim: &Sim, proxy: &str) -> Client {
    Client::builder(sim.runtime(), "https://api.example.com/")
        .proxy(proxy, "")
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[test]
fn the_proxys_faults_are_its_own() {
    let mut sim = Sim::new(4);
    let proxy = sim.proxy("http://proxy.corp:3128");
    let api = sim.mock("https://api.example.com");
    api.route(Method::GET, "/v1").respond(Reply::json("{}"));
    api.route(Method::GET, "/big")
        .respond(Reply::new(200, vec![b'x'; 64 * 1024]));
    let server = api.server();
    let client = client_through(&sim, "http://proxy.corp:3128");
    let stats_client = client.clone();
    let handle = proxy.clone();
    let outcomes = sim.run(async move {
        let mut out = Vec::new();
        for fault in [
            ProxyFault::Refuse,
            ProxyFault::AuthenticationRequired,
            ProxyFault::BadGateway,
        ] {
            handle.set_fault(Some(fault));
            let error = client.get("v1").send().await.unwrap_err();
            out.push((fault, error.kind(), error.attempts(), error.to_string()));
        }
        handle.set_fault(Some(ProxyFault::DropTunnelAfter(10_000)));
        let response = client.get("big").send().await.unwrap();
        let body_error = response.bytes().await.unwrap_err();
        out.push((
            ProxyFault::DropTunnelAfter(10_000),
            body_error.kind(),
            0,
            body_error.to_string(),
        ));
        out
    });
    for (fault, kind, attempts, shown) in &outcomes {
        println!("{fault:?}: {kind:?} after {attempts} attempts: {shown}");
    }
    let (_, kind, attempts, shown) = &outcomes[0];
    assert_eq!(*kind, ErrorKind::Proxy);
    assert!(
        *attempts > 1,
        "a proxy that is down is retried: nothing reached the origin"
    );
    assert!(shown.contains("proxy.corp:3128"), "{shown}");
    let (_, kind, attempts, _) = &outcomes[1];
    assert_eq!(
        (*kind, *attempts),
        (ErrorKind::Proxy, 1),
        "a refusal is final"
    );
    let (_, kind, _, _) = &outcomes[2];
    assert_eq!(
        *kind,
        ErrorKind::Connect,
        "the proxy could not reach the origin"
    );
    let (_, kind, _, _) = &outcomes[3];
    assert_eq!(*kind, ErrorKind::Body, "the tunnel dropped mid-body");
    let stats = stats_client.stats();
    let pool = stats.pool;
    assert_eq!((pool.active, pool.connecting), (0, 0), "{pool:?}");
    assert_eq!(pool.opened, pool.closed + pool.idle as u64, "{pool:?}");
    assert_eq!(
        server.accepted(),
        1,
        "the origin saw only the tunnel that opened"
    );
}

#[test]
fn a_proxy_that_is_down_does_not_open_the_origins_breaker() {
    let mut sim = Sim::new(5);
    let proxy = sim.proxy("http://proxy.corp:3128");
    proxy.set_fault(Some(ProxyFault::Refuse));
    let api = sim.mock("https://api.example.com");
    api.route(Method::GET, "/v1").respond(Reply::json("{}"));
    let client = client_through(&sim, "http://proxy.corp:3128");
    let stats_client = client.clone();
    sim.run(async move {
        for _ in 0..30 {
            let _ = client.get("v1").attempts(1).send().await;
        }
    });
    let stats = stats_client.stats();
    for origin in &stats.origins {
        assert_eq!(
            origin.breaker,
            BreakerStateKind::Closed,
            "{:?}",
            origin.origin
        );
    }
    assert_eq!(proxy.refused(), 30);
}

#[test]
fn an_origin_profile_chooses_its_own_route() {
    use breakwater::core::call::OriginProfile;
    use breakwater::core::proxy::{ProxyChoice, ProxyUrl};
    let mut sim = Sim::new(6);
    let corporate = sim.proxy("http://proxy.corp:3128");
    let partner_proxy = sim.proxy("socks5h://partner-gw.corp:1080");
    for origin in [
        "https://api.example.com",
        "https://partner.test",
        "https://direct.test",
    ] {
        sim.mock(origin)
            .route(Method::GET, "/")
            .respond(Reply::json("{}"));
    }
    sim.set_env("HTTPS_PROXY", "http://proxy.corp:3128");
    let client = Client::builder(sim.runtime(), "https://api.example.com/")
        .profile(
            "https://partner.test",
            OriginProfile::default().with_proxy(ProxyChoice::Through(
                ProxyUrl::parse("socks5h://partner-gw.corp:1080").unwrap(),
            )),
        )
        .profile(
            "https://direct.test",
            OriginProfile::default().with_proxy(ProxyChoice::Direct),
        )
        .build()
        .unwrap();
    sim.run(async move {
        for url in [
            "https://api.example.com/",
            "https://partner.test/",
            "https://direct.test/",
        ] {
            client.get(url).send().await.unwrap();
        }
    });
    assert_eq!(
        corporate.tunnels(),
        1,
        "only api.example.com used the environment's proxy"
    );
    assert_eq!(
        partner_proxy.tunnels(),
        1,
        "partner.test used its profile's"
    );
}
