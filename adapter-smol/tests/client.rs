//! The client's behavioural suite (adapter-tokio/tests/http/scenarios.rs) on
//! smol: the same scenarios the tokio adapter runs, under `smol::block_on`.
//! The peers run on tokio in background threads; the client never does.

#[path = "../../adapter-tokio/tests/common/mod.rs"]
mod common;
#[path = "../../adapter-tokio/tests/http/mod.rs"]
mod suite;

use std::sync::Arc;

use breakwater_smol::SmolRuntime;

macro_rules! scenarios {
    ($($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            smol::block_on(suite::scenarios::$scenario(Arc::new(SmolRuntime::new())));
        }
    )*};
}

include!("../../adapter-tokio/tests/http/list.rs");
