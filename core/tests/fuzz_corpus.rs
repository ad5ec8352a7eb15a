//! Replays the fuzz targets' checked-in corpora on stable Rust, so that every
//! `cargo test` runs each interesting input (every hostile shape of the codec
//! tests among them) through the same check the fuzzer applies.

#[allow(dead_code)]
mod response_decoder {
    include!("../fuzz/replay/response_decoder.rs");
}

use breakwater_core::h1::DecodeError;
use response_decoder::Outcome;
use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn the_response_decoder_corpus_replays_cleanly() {
    let inputs = corpus("response_decoder");
    assert!(inputs.len() >= 30, "the corpus is missing");
    for (name, data) in &inputs {
        let outcome = response_decoder::check(data);
        // Inputs named for a refused shape must be refused, and those named
        // for a lax parser's leniency must not be taken as a clean response.
        let refused = ["size-", "trailer-", "data-", "last-chunk-", "blank-line-"]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if refused {
            assert!(
                matches!(outcome, Some(Outcome::Failed(_))),
                "{name}: {outcome:?}"
            );
        }
        if name.starts_with("chunked-") {
            assert!(
                matches!(outcome, Some(Outcome::Complete { reusable: true, .. })),
                "{name}: {outcome:?}"
            );
        }
    }
    // One exact check, so a corpus that no longer reaches the chunk grammar shows.
    let (_, unbalanced) = inputs
        .iter()
        .find(|(name, _)| name == "size-unbalanced-quote")
        .unwrap();
    assert_eq!(
        response_decoder::check(unbalanced),
        Some(Outcome::Failed(DecodeError::InvalidChunkExtension))
    );
}

#[allow(dead_code)]
mod proxy_and_coding {
    include!("../fuzz/replay/proxy_and_coding.rs");
}

#[test]
fn the_proxy_and_coding_corpus_replays_cleanly() {
    let inputs = corpus("proxy_and_coding");
    assert!(inputs.len() >= 19, "the corpus is missing");
    for (name, data) in &inputs {
        proxy_and_coding::check(data);
        // Every prefix too, as a connection sees the bytes arrive.
        for cut in 0..data.len() {
            proxy_and_coding::check(&data[..cut]);
        }
        let _ = name;
    }
}
