//! Feeds arbitrary bytes to the gzip header parser and to the proxy
//! handshakes' answer parsers, checking their promises. The check is in
//! `replay/proxy_and_coding.rs`, which `cargo test` also runs over the
//! checked-in corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../replay/proxy_and_coding.rs");

fuzz_target!(|data: &[u8]| {
    check(data);
});
