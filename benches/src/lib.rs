//! Benchmarks for Breakwater; run them with `cargo bench -p breakwater-benches`.
//!
//! The library part holds the inputs the benchmarks share, so that every
//! benchmark measures the same bytes.
//!
//! ```
//! assert!(!breakwater_benches::TYPICAL_RESPONSE_HEAD.is_empty());
//! ```

#![deny(missing_docs)]

/// A typical JSON API response head: status line and ten headers.
pub const TYPICAL_RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Fri, 27 Nov 2026 03:40:00 GMT\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 27\r\n\
Connection: keep-alive\r\n\
Cache-Control: no-cache, no-store\r\n\
X-Request-Id: 5f2b8c4e-9d41-4a7e-b3c2-1e0f9a8d7c6b\r\n\
X-RateLimit-Limit: 1000\r\n\
X-RateLimit-Remaining: 998\r\n\
Vary: Accept-Encoding\r\n\
Server: demo\r\n\
\r\n";

/// The body that goes with [`TYPICAL_RESPONSE_HEAD`].
pub const TYPICAL_RESPONSE_BODY: &[u8] = b"{\"id\":1,\"name\":\"Leanne G.\"}";
