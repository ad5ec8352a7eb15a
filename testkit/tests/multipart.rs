//! Multipart forms through the simulated network: what the server reads
//! back, and which forms a retry may send again.

mod common;

use std::error::Error as _;

use breakwater::multipart::{Form, InvalidContentType, Part};
use breakwater_testkit::{multipart, Reply, Request, Sim};
use bytes::Bytes;
use common::client;
use http::Method;

/// The parts a recorded request carried, read with its own content type.
fn parts_of(request: &Request) -> Vec<multipart::ReceivedPart> {
    let content_type = request.headers.get("content-type").expect("a content type");
    multipart::parse(content_type, &request.body).unwrap()
}

/// A text field, a file held in memory and a file streamed in pieces
/// arrive as three parts, with their names, file names, types and bytes.
#[test]
fn a_form_with_a_file_and_a_stream_arrives_part_by_part() {
    let mut sim = Sim::new(61);
    let api = sim.mock("https://api.example.com");
    let route = api
        .route(Method::POST, "/reports")
        .respond(Reply::new(201, "stored"));
    let client = client(&sim, "https://api.example.com/");

    let pdf: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let csv = ["id,score\n", "1,17\n", "2,\"9\"\n"];
    let csv_len = csv.iter().map(|s| s.len() as u64).sum();
    let pieces = futures_lite::stream::iter(csv.map(|s| Ok(Bytes::from_static(s.as_bytes()))));
    let form = Form::new()
        .text("title", "Q3 \"final\" — ünïcode")
        .part(
            "report",
            Part::bytes(pdf.clone())
                .file_name("report.pdf")
                .content_type("application/pdf"),
        )
        .part(
            "scores",
            Part::stream(pieces, Some(csv_len)).file_name("scores\r\n.csv"),
        );
    let content_type = form.content_type();
    let content_length = form.content_length().unwrap();

    let status = sim
        .run(async move {
            let response = client.post("reports").multipart(form).send().await?;
            Ok::<_, breakwater::Error>(response.status())
        })
        .unwrap();
    assert_eq!(status, 201);

    let request = &route.requests()[0];
    assert_eq!(request.header("content-type"), Some(content_type.as_str()));
    // A streamed part makes the whole body a stream: chunked, not counted.
    assert_eq!(request.header("transfer-encoding"), Some("chunked"));
    assert_eq!(request.header("content-length"), None);
    assert_eq!(request.body.len() as u64, content_length);

    let parts = parts_of(request);
    let names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["title", "report", "scores"]);
    assert_eq!(parts[0].text(), Some("Q3 \"final\" — ünïcode"));
    assert_eq!(
        (
            parts[0].file_name.as_deref(),
            parts[0].content_type.as_deref()
        ),
        (None, None)
    );
    assert_eq!(parts[1].file_name.as_deref(), Some("report.pdf"));
    assert_eq!(parts[1].content_type.as_deref(), Some("application/pdf"));
    assert_eq!(&parts[1].body[..], &pdf[..]);
    assert_eq!(parts[2].file_name.as_deref(), Some("scores\r\n.csv"));
    assert_eq!(
        parts[2].content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(parts[2].text(), Some(csv.concat().as_str()));
}

/// A form held in memory is a buffered body: a keyed POST that meets a
/// 503 is sent again, with the same bytes and the same boundary.
#[test]
fn a_keyed_form_in_memory_is_resent_whole_after_a_503() {
    let mut sim = Sim::new(62);
    let api = sim.mock("https://api.example.com");
    let route = api
        .route(Method::POST, "/orders")
        .respond_seq([Reply::new(503, "busy"), Reply::new(201, "made")]);
    let client = client(&sim, "https://api.example.com/");
    let form = Form::new().text("sku", "A-1001").part(
        "receipt",
        Part::bytes(vec![0u8, 1, 2, 255]).file_name("r.bin"),
    );
    let content_type = form.content_type();

    let status = sim
        .run(async move {
            let response = client
                .post("orders")
                .idempotency_key("order-A-1001")
                .multipart(form)
                .send()
                .await?;
            Ok::<_, breakwater::Error>(response.status())
        })
        .unwrap();
    assert_eq!(status, 201);

    let requests = route.requests();
    assert_eq!(requests.len(), 2, "the 503 was not retried");
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), Some("order-A-1001"));
        assert_eq!(request.header("content-type"), Some(content_type.as_str()));
        assert_eq!(request.header("transfer-encoding"), None);
        let length = request.body.len().to_string();
        assert_eq!(request.header("content-length"), Some(length.as_str()));
    }
    assert_eq!(
        requests[0].body, requests[1].body,
        "the retry sent other bytes"
    );
    let parts = parts_of(&requests[1]);
    assert_eq!(parts[0].text(), Some("A-1001"));
    assert_eq!(&parts[1].body[..], &[0, 1, 2, 255]);
}

/// A form with a streamed part can be sent only once: even keyed, its 503
/// is the answer, not a reason to send it again.
#[test]
fn a_keyed_form_with_a_stream_is_not_resent() {
    let mut sim = Sim::new(63);
    let api = sim.mock("https://api.example.com");
    let route = api
        .route(Method::POST, "/orders")
        .respond_seq([Reply::new(503, "busy"), Reply::new(201, "made")]);
    let client = client(&sim, "https://api.example.com/");
    let pieces = futures_lite::stream::iter([Ok(Bytes::from_static(b"streamed"))]);
    let form = Form::new().part("log", Part::stream(pieces, None));

    let status = sim
        .run(async move {
            let response = client
                .post("orders")
                .idempotency_key("order-A-1002")
                .multipart(form)
                .send()
                .await?;
            Ok::<_, breakwater::Error>(response.status())
        })
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(route.calls(), 1);
    assert_eq!(parts_of(&route.requests()[0])[0].text(), Some("streamed"));
}

/// A part's bad content type fails the call before anything is sent, and
/// says which field had it.
#[test]
fn a_bad_part_content_type_fails_the_send_and_sends_nothing() {
    let mut sim = Sim::new(64);
    let api = sim.mock("https://api.example.com");
    let route = api.route(Method::POST, "/uploads");
    let client = client(&sim, "https://api.example.com/");
    let form = Form::new().part("photo", Part::bytes("x").content_type("image png"));

    let error = sim
        .run(async move { client.post("uploads").multipart(form).send().await })
        .unwrap_err();
    assert_eq!(error.kind(), breakwater::ErrorKind::Request);
    let invalid = error
        .source()
        .and_then(|source| source.downcast_ref::<InvalidContentType>())
        .expect("the invalid content type is the source");
    assert_eq!((invalid.field(), invalid.value()), ("photo", "image png"));
    assert!(error.to_string().contains("\"photo\""), "{error}");
    assert_eq!(route.calls(), 0);
    assert_eq!(sim.connects(), 0);
}
