//! `SSL_CERT_FILE` is honoured by the default TLS options.
//!
//! Alone in its own test binary because it sets a process-wide environment
//! variable that every other TLS test would otherwise see.

use breakwater_testkit::conformance::sockets::transport as common;

use breakwater::runtime::Runtime;
use breakwater::tls::TlsOptions;
use breakwater_tokio::TokioRuntime;

#[tokio::test]
async fn default_roots_come_from_ssl_cert_file() {
    let pki = common::Pki::new();
    let addr = common::tls_echo_server(&pki.leaf("localhost"), None);
    let path = std::env::temp_dir().join(format!("breakwater-ca-{}.pem", std::process::id()));
    std::fs::write(&path, &pki.ca_pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &path);

    let target = common::https("localhost", addr, TlsOptions::default());
    let connected = TokioRuntime::new().connect(target).await;
    std::fs::remove_file(&path).unwrap();
    let mut transport = connected.expect("the CA named by SSL_CERT_FILE is trusted");
    common::round_trip(&mut transport).await.unwrap();
}
