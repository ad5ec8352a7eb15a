//! Feeds arbitrary bytes to the response decoder, cut at points the input
//! chooses, and checks the decoder's promises: no panic, progress on every
//! call, sticky errors, and the same outcome as decoding the bytes whole.
//! The check itself is in `replay/response_decoder.rs`, which `cargo test`
//! also runs over the checked-in corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../replay/response_decoder.rs");

fuzz_target!(|data: &[u8]| {
    check(data);
});
