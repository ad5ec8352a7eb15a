//! The simulated network behaves like TCP where a client can tell: segments
//! share a link's bandwidth, and a window caps what is in flight, so a
//! window's worth of bytes goes per round trip.

use std::time::Duration;

use breakwater_testkit::{Link, Reply, RouteHandle, Sim};
use bytes::Bytes;
use http::Method;

const SECOND: Duration = Duration::from_secs(1);

/// A simulation on `link`, an upstream taking POSTs to `path`, and a client.
fn upload_over(seed: u64, link: Link, path: &str) -> (Sim, RouteHandle, breakwater::Client) {
    let mut sim = Sim::new(seed);
    sim.set_default_link(link);
    let api = sim.mock("http://api.test");
    let route = api.route(Method::POST, path).respond(Reply::new(204, ""));
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .build()
        .unwrap();
    (sim, route, client)
}

/// A body sent in ten pieces at once still takes the link's bandwidth to
/// cross: pieces queue for the wire instead of travelling side by side.
#[test]
fn pieces_written_at_once_share_the_link_s_bandwidth() {
    let link = Link::rtt(Duration::from_millis(2)).with_bandwidth(100 * 1024);
    let (mut sim, route, client) = upload_over(80, link, "/pieces");
    let started = sim.now();
    sim.run(async move {
        let pieces = (0..10).map(|_| Ok(Bytes::from(vec![b'x'; 10 * 1024])));
        let sent = client
            .post("pieces")
            .body_stream(futures_lite::stream::iter(pieces));
        sent.send().await.unwrap();
    });
    // 100 KiB at 100 KiB/s: a second on the wire, however it is cut up.
    let arrived = route.requests()[0].received_at - started;
    assert!(
        arrived >= SECOND && arrived < SECOND + Duration::from_millis(20),
        "{arrived:?}"
    );
    assert_eq!(route.requests()[0].body.len(), 100 * 1024);
}

/// With a 16 KiB window and a 100 ms round trip, a 160 KiB upload takes ten
/// round trips: each window's worth must be read, and the writer hear of
/// it, before the next goes out.
#[test]
fn a_window_lets_one_window_of_bytes_through_per_round_trip() {
    const RTT: Duration = Duration::from_millis(100);
    let (mut sim, route, client) =
        upload_over(81, Link::rtt(RTT).with_window(16 * 1024), "/upload");
    let started = sim.now();
    sim.run(async move {
        let body = vec![b'x'; 160 * 1024];
        client.post("upload").body(body).send().await.unwrap();
    });
    // One round trip to connect, ten windows, and the last one's way there.
    let arrived = route.requests()[0].received_at - started;
    assert!(
        arrived >= 10 * RTT && arrived <= 12 * RTT,
        "{arrived:?} for ten windows"
    );
}
