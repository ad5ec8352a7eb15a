//! The deep suite on real sockets, with independent peers: hyper and
//! tokio-rustls servers on 127.0.0.1, each on a tokio runtime of its own in a
//! background thread, so a client under any runtime can meet them (the smol
//! client never touches tokio).
//!
//! Where the [`conformance`](super) scenarios describe peers with the
//! simulation's `Reply` values so that the simulation can run them too,
//! these need what only real peers do: TLS with a custom CA, mutual TLS,
//! expired and wrong-host certificates, idle closes with no reactor turn
//! since, a 100 MiB stream, hostile bytes no server library would send.
//! Behind the `sockets` feature, which brings tokio, hyper and rcgen in as
//! the peers' dependencies.
//!
//! [`socket_transport_tests!`](crate::socket_transport_tests) and
//! [`socket_client_tests!`](crate::socket_client_tests) make one `#[test]`
//! per scenario, given a runtime and a `block_on`:
//!
//! ```no_run
//! # fn block_on(_: breakwater::runtime::BoxFuture<'static, ()>) {}
//! # fn my_runtime() -> std::sync::Arc<dyn breakwater::runtime::Runtime> { unimplemented!() }
//! breakwater_testkit::socket_transport_tests!(my_runtime(), block_on);
//! breakwater_testkit::socket_client_tests!(my_runtime(), block_on);
//! ```

pub mod client;
pub mod http;
pub mod peers;
pub mod server;
pub mod transport;

/// One `#[test]` per transport scenario (connect, TLS, timers): `$runtime`
/// makes the runtime and `$block_on` runs a boxed future on it, once per test.
#[macro_export]
macro_rules! socket_transport_tests {
    ($runtime:expr, $block_on:expr) => {
        $crate::__socket_each!(transport; $runtime, $block_on;
            plain_tcp_round_trip,
            refused,
            unresolvable,
            tls_custom_ca,
            tls_unknown_issuer,
            tls_expired,
            tls_wrong_host,
            mutual_tls,
            danger_accept_invalid,
            never_deadline_stays_pending,
        );
    };
}

/// One `#[test]` per client scenario on real sockets: `$runtime` makes the
/// runtime and `$block_on` runs a boxed future on it, once per test.
#[macro_export]
macro_rules! socket_client_tests {
    ($runtime:expr, $block_on:expr) => {
        $crate::__socket_each!(client; $runtime, $block_on;
            pool_sequential_uses_one_connection,
            pool_concurrency_20,
            pool_concurrency_64,
            pool_of_five_fifty_callers,
            retry_503_503_200,
            streamed_request_body,
            no_retry_on_404_and_422,
            retry_after_429_is_honoured,
            idempotency_key_on_every_attempt,
            post_without_key_not_resent_after_reset,
            reset_mid_upload_resends_only_what_is_safe,
            stale_keep_alive_is_replaced,
            stale_keep_alive_race_is_retried,
            refused_connection_is_a_connect_error,
            stale_keep_alive_is_noticed_before_a_post,
            stale_keep_alive_is_noticed_with_no_reactor_turn_since,
            stale_tls_keep_alive_is_noticed_with_no_reactor_turn_since,
            breaker_opens_probes_and_closes,
            token_single_flight,
            token_refreshed_after_401,
            cancellation_leaks_nothing,
            cancelled_body_read_closes_connection,
            tls_valid_chain_with_custom_ca,
            tls_bad_certificates,
            tls_mutual,
            stream_100_mib,
            ndjson_and_lines_across_chunks,
            copy_to_file_with_progress,
            hostile_conflicting_content_length,
            hostile_truncated_body,
            hostile_huge_content_length,
            hostile_header_flood,
            credentials_stay_with_base_origin,
        );
    };
}

/// One `#[test]` per scenario of redirects, compressed bodies, cookies and
/// multipart on real sockets: `$runtime` makes the runtime and `$block_on`
/// runs a boxed future on it, once per test.
#[macro_export]
macro_rules! socket_http_tests {
    ($runtime:expr, $block_on:expr) => {
        $crate::__socket_each!(http; $runtime, $block_on;
            redirect_across_servers_strips_credentials,
            compressed_bodies_decode_on_one_connection,
            decompression_bomb_is_stopped,
            cookies_round_trip,
            multipart_upload,
            proxy_gets_absolute_form_and_its_credentials,
            proxy_failures_are_the_proxys,
        );
    };
}

/// One ignored `#[test]` per scenario against third-party peers (httpbin,
/// nginx, tinyproxy, dante) that `peers/start.sh` starts: run them with
/// `cargo test ... -- --ignored` and `peers/.run/env` loaded.
#[macro_export]
macro_rules! socket_peer_tests {
    ($runtime:expr, $block_on:expr) => {
        $crate::__socket_each!(#[ignore = "needs peers: httpbin, nginx, tinyproxy and dante (peers/start.sh, run by .ci/run)"]
            peers; $runtime, $block_on;
            httpbin_redirect_chains,
            httpbin_307_keeps_method_and_body,
            httpbin_compressed_bodies,
            httpbin_cookies_follow_the_redirect,
            httpbin_multipart_files,
            nginx_gzip_static_file,
            nginx_308_to_another_port,
            tinyproxy_absolute_form_and_tunnels,
            dante_socks5_and_socks5h,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __socket_each {
    (#[$attr:meta] $suite:ident; $runtime:expr, $block_on:expr; $($scenario:ident),* $(,)?) => {$(
        #[test]
        #[$attr]
        fn $scenario() {
            let run: fn($crate::breakwater::runtime::BoxFuture<'static, ()>) = $block_on;
            run(::std::boxed::Box::pin(
                $crate::conformance::sockets::$suite::$scenario($runtime),
            ));
        }
    )*};
    // No attribute of its own: `cfg(all())` is always true.
    ($suite:ident; $runtime:expr, $block_on:expr; $($scenario:ident),* $(,)?) => {
        $crate::__socket_each!(#[cfg(all())] $suite; $runtime, $block_on; $($scenario),*);
    };
}
