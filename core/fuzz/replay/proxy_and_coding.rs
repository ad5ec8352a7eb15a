// The fuzz check of the small parsers a connection meets before or around
// its body: the gzip member header, a proxy's answer to `CONNECT`, a SOCKS5
// proxy's answers. Shared by `fuzz_targets/proxy_and_coding.rs` and by
// `tests/fuzz_corpus.rs`, which replays the checked-in corpus on stable.
// Included with `include!`, so it names its imports.

use breakwater_core::content::{gzip_header_len, MAX_GZIP_HEADER};
use breakwater_core::proxy::socks5;
use breakwater_core::proxy::tunnel::{read_reply, Reply, MAX_REPLY};

/// Runs every parser over `data`; panics if one breaks a promise.
pub fn check(data: &[u8]) {
    // The gzip header: a length within the input and the cap, and a verdict
    // that does not change once given, however many more bytes follow.
    let whole = gzip_header_len(data);
    if let Ok(Some(len)) = whole {
        assert!(len <= data.len() && len <= MAX_GZIP_HEADER, "{len}");
        assert_eq!(gzip_header_len(&data[..len]), Ok(Some(len)));
    }
    for cut in 0..data.len().min(64) {
        match gzip_header_len(&data[..cut]) {
            Ok(Some(len)) => assert_eq!(whole, Ok(Some(len)), "cut at {cut}"),
            Err(e) => assert_eq!(whole, Err(e), "cut at {cut}"),
            Ok(None) => {}
        }
    }
    // A proxy's answer: a verdict once the head is whole; never a tunnel
    // from an answer that is not HTTP; `Incomplete` only while short.
    match read_reply(data) {
        Reply::Incomplete => assert!(data.len() <= MAX_REPLY, "{}", data.len()),
        // (Blank lines before the status line are skipped, as RFC 9112 lets
        // a recipient do.)
        Reply::Established => {
            let start = data.iter().position(|&b| b != b'\r' && b != b'\n');
            assert!(data[start.unwrap_or(data.len())..].starts_with(b"HTTP/1."));
        }
        Reply::Refused(_) => {}
    }
    // SOCKS5 answers of any bytes: typed errors, and a reply length that
    // covers its fixed part.
    if let Some(first) = data.first_chunk::<2>() {
        let _ = socks5::read_choice(*first);
        let _ = socks5::read_authentication(*first);
    }
    if let Some(first) = data.first_chunk::<5>() {
        if let Ok(len) = socks5::reply_len(*first) {
            assert!(len >= 4 + 1 + 2, "{len}");
        }
    }
}
