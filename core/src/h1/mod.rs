//! HTTP/1.1 on the wire: request encoding and incremental response decoding.
//!
//! Both halves are pure. [`encode_request_head`] writes a request head into a
//! buffer the caller reuses from one request to the next; chunk framing for
//! streamed bodies comes from [`encode_chunk_prefix`] and [`LAST_CHUNK`].
//! [`ResponseDecoder`] reads a response out of the caller's read buffer and
//! yields [`ResponseEvent`]s: the head, body pieces as [`bytes::Bytes`]
//! slices split off that same buffer (never copied byte by byte), and the end
//! together with whether the connection may carry another request.
//!
//! The decoder is strict where leniency lets a response be read two ways
//! (request smuggling and response splitting live in those gaps) and every
//! such refusal is a typed [`DecodeError`] after which the connection must not
//! be reused. The rules follow RFC 9112; the limits default to a 64 KiB head
//! and 100 headers.
//!
//! In a driver's loop the encoder runs when a call's step says to send, and
//! the decoder is fed by the driver's reads until the head, then through the
//! body the caller reads (the crate's [run loop](crate#the-run-loop)).
//!
//! ```
//! use breakwater_core::h1::{ResponseDecoder, RequestContext, ResponseEvent};
//! use bytes::BytesMut;
//!
//! let mut read_buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"[..]);
//! let mut decoder = ResponseDecoder::new(RequestContext::default());
//! let mut body = Vec::new();
//! loop {
//!     match decoder.poll_event(&mut read_buf)? {
//!         Some(ResponseEvent::Head(head)) => assert_eq!(head.status, 200),
//!         Some(ResponseEvent::Body(piece)) => body.extend_from_slice(&piece),
//!         Some(ResponseEvent::End(end)) => {
//!             assert!(end.is_reusable());
//!             break;
//!         }
//!         None => unreachable!("the whole response is in the buffer"),
//!     }
//! }
//! assert_eq!(body, b"hello");
//! # Ok::<(), breakwater_core::h1::DecodeError>(())
//! ```

mod chunked;
mod decode;
mod encode;

pub use decode::{
    DecodeError, DecoderConfig, EndOfResponse, RequestContext, ResponseDecoder, ResponseEvent,
    ResponseHead, ReuseBlocker,
};
pub use encode::{
    encode_chunk_prefix, encode_proxy_request_head_with, encode_request_head,
    encode_request_head_for_target, encode_request_head_with, BodyLength, EncodeError, LAST_CHUNK,
};
