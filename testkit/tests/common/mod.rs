//! Helpers the testkit's own test files share.

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
