//! The HTTP/1.1 codec: a typical response head, 1 MiB bodies, a request head.

use std::hint::black_box;

use breakwater_benches::{TYPICAL_RESPONSE_BODY, TYPICAL_RESPONSE_HEAD};
use breakwater_core::h1::{
    encode_request_head, BodyLength, RequestContext, ResponseDecoder, ResponseEvent,
};
use breakwater_core::Origin;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method, Uri};

/// Decodes a whole response out of `buf`, returning the body length.
fn decode(decoder: &mut ResponseDecoder, buf: &mut BytesMut) -> usize {
    let mut body = 0;
    loop {
        match decoder.poll_event(buf) {
            Ok(Some(ResponseEvent::Body(piece))) => body += piece.len(),
            Ok(Some(ResponseEvent::End(_))) => return body,
            Ok(Some(ResponseEvent::Head(head))) => {
                black_box(head);
            }
            Ok(None) | Err(_) => panic!("benchmark input must be one complete response"),
        }
    }
}

fn one_mib_chunked(chunk: usize) -> Vec<u8> {
    let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let body = vec![b'x'; 1 << 20];
    for piece in body.chunks(chunk) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire
}

fn one_mib_content_length() -> Vec<u8> {
    let mut wire = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 1 << 20).into_bytes();
    wire.extend(std::iter::repeat_n(b'x', 1 << 20));
    wire
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("h1");

    let mut typical = TYPICAL_RESPONSE_HEAD.to_vec();
    typical.extend_from_slice(TYPICAL_RESPONSE_BODY);
    group.throughput(Throughput::Elements(1));
    // The decoder and buffer are reused, as a driver reuses them on a kept-alive connection.
    let mut decoder = ResponseDecoder::new(RequestContext::default());
    let mut buf = BytesMut::with_capacity(4096);
    group.bench_function("decode typical response (10 headers, small body)", |b| {
        b.iter(|| {
            buf.extend_from_slice(&typical);
            decoder.reset(RequestContext::default());
            black_box(decode(&mut decoder, &mut buf))
        })
    });

    // The driver's own pattern: the decoder is asked before any byte has
    // arrived, then the head lands together with a 10 KB body. Finding the
    // head must cost the head's length, not the body's.
    let mut with_body = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        10_000
    )
    .into_bytes();
    with_body.extend(std::iter::repeat_n(b'x', 10_000));
    group.bench_function("decode head polled before it arrived (10 KB body)", |b| {
        b.iter(|| {
            decoder.reset(RequestContext::default());
            assert!(matches!(decoder.poll_event(&mut buf), Ok(None)));
            buf.extend_from_slice(&with_body);
            black_box(decode(&mut decoder, &mut buf))
        })
    });

    for (name, wire) in [
        (
            "decode 1 MiB chunked body (16 KiB chunks)",
            one_mib_chunked(16 * 1024),
        ),
        (
            "decode 1 MiB chunked body (1 KiB chunks)",
            one_mib_chunked(1024),
        ),
        ("decode 1 MiB content-length body", one_mib_content_length()),
    ] {
        group.throughput(Throughput::Bytes(1 << 20));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    (
                        ResponseDecoder::new(RequestContext::default()),
                        BytesMut::from(&wire[..]),
                    )
                },
                |(decoder, buf)| black_box(decode(decoder, buf)),
                BatchSize::LargeInput,
            )
        });
    }

    // The figures above split bodies off the buffer without copying, so they
    // measure framing alone. A driver first copies each socket read into the
    // buffer; this one includes that copy, in 64 KiB reads.
    let wire = one_mib_chunked(16 * 1024);
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("decode 1 MiB chunked body fed in 64 KiB reads", |b| {
        let mut buf = BytesMut::with_capacity(128 * 1024);
        b.iter(|| {
            let mut decoder = ResponseDecoder::new(RequestContext::default());
            let mut body = 0;
            for read in wire.chunks(64 * 1024) {
                buf.extend_from_slice(read);
                while !decoder.is_done() {
                    match decoder.poll_event(&mut buf).unwrap() {
                        Some(ResponseEvent::Body(piece)) => body += piece.len(),
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            black_box(body)
        })
    });

    let uri: Uri = "https://api.example.com/v1/users/42?expand=posts"
        .parse()
        .unwrap();
    let origin = Origin::from_uri(&uri).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("application/json"));
    headers.insert("user-agent", HeaderValue::from_static("breakwater/0.1"));
    headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer abcdefghijklmnop"),
    );
    headers.insert(
        "idempotency-key",
        HeaderValue::from_static("5f2b8c4e-9d41-4a7e-b3c2-1e0f9a8d7c6b"),
    );
    let mut out = Vec::with_capacity(1024);
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode request head (4 headers)", |b| {
        b.iter(|| {
            out.clear();
            encode_request_head(
                &mut out,
                &Method::POST,
                &uri,
                &origin,
                &headers,
                BodyLength::Known(27),
            )
            .unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
