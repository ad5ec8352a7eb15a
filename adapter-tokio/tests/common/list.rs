// The transport scenarios every runtime runs, in one list. Each runtime's
// `tests/runtime.rs` defines a `scenarios!` macro that turns a name into a
// test, then includes this file.
scenarios!(
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
