//! Helpers the testkit's own test files share.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

/// A GET whose body is read whole.
pub async fn fetch(client: &breakwater::Client, path: &str) -> bytes::Bytes {
    client
        .get(path)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

/// A client with the default configuration on `sim`'s runtime.
pub fn client(sim: &breakwater_testkit::Sim, base: &str) -> breakwater::Client {
    breakwater::Client::builder(sim.runtime(), base)
        .build()
        .unwrap()
}
