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

/// The same scenarios under futures-lite's `block_on`, which does not run
/// async-io's reactor: the "async-io" thread does. Every registration of
/// interest then races that thread's `epoll_wait`, a timing the suite under
/// `smol::block_on` (which runs the reactor itself) never sees.
mod reactor_on_another_thread {
    use super::suite;
    use std::sync::Arc;

    use breakwater_smol::SmolRuntime;

    macro_rules! scenarios {
        ($($scenario:ident),* $(,)?) => {$(
            #[test]
            fn $scenario() {
                futures_lite::future::block_on(suite::scenarios::$scenario(Arc::new(SmolRuntime::new())));
            }
        )*};
    }

    include!("../../adapter-tokio/tests/http/list.rs");
}
