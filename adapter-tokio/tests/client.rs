//! The client's behavioural suite (tests/http/scenarios.rs) on tokio, against
//! real peers on 127.0.0.1. `breakwater-smol` runs the same scenarios.

mod common;
#[path = "http/mod.rs"]
mod suite;

use std::sync::Arc;

use breakwater_tokio::TokioRuntime;

macro_rules! scenarios {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $scenario() {
            suite::scenarios::$scenario(Arc::new(TokioRuntime::new())).await;
        }
    )*};
}

include!("http/list.rs");
