//! Against third-party servers on smol: httpbin and nginx, which
//! `peers/start.sh` installs and starts on 127.0.0.1 (`.ci/run` does it).
//! Run by hand:
//! `peers/start.sh && (set -a && . peers/.run/env && cargo test -p breakwater-smol --test peers -- --ignored); peers/stop.sh`.

use std::sync::Arc;

use breakwater_smol::SmolRuntime;

breakwater_testkit::socket_peer_tests!(Arc::new(SmolRuntime::new()), |future| {
    smol::block_on(future)
});
