//! The transport scenarios: what a runtime's `connect` and timers must do,
//! on real sockets. Everything a scenario needs lives here: rcgen
//! certificates, echo servers (plain and tokio-rustls) on 127.0.0.1, and the
//! scenarios themselves, written against `dyn Runtime` only;
//! [`socket_transport_tests!`](crate::socket_transport_tests) lists them.
//!
//! The servers run on a tokio runtime of their own in background threads, so
//! a client under test never shares its executor with its peer (and the smol
//! client never touches tokio).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use breakwater::core::{Instant, Origin, Scheme};
use breakwater::runtime::{
    BoxTransport, CertificateErrorKind, ConnectErrorKind, ConnectTarget, Runtime,
};
use breakwater::tls::TlsOptions;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---------------------------------------------------------------------------
// Certificates

/// A certificate chain and its private key, both PEM.
pub struct Identity {
    /// The certificate chain, leaf first, as PEM.
    pub chain_pem: String,
    /// The private key, as PEM.
    pub key_pem: String,
}

/// A private certificate authority that signs leaves for the tests.
pub struct Pki {
    /// The CA certificate, as PEM.
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `name`, valid from 1975 to 4096.
    pub fn leaf(&self, name: &str) -> Identity {
        self.sign(leaf_params(name))
    }

    /// A leaf for `name` that expired in 2001.
    pub fn expired_leaf(&self, name: &str) -> Identity {
        let mut params = leaf_params(name);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Identity {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A self-signed certificate for `name`: no authority vouches for it.
pub fn self_signed(name: &str) -> Identity {
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(name).self_signed(&key).unwrap();
    Identity {
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn leaf_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
}

// ---------------------------------------------------------------------------
// Servers: echo whatever arrives, until the client closes.

fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-server")
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A plain TCP echo server on a tokio `TcpListener` at 127.0.0.1.
pub fn echo_server() -> SocketAddr {
    serve(None)
}

/// A tokio-rustls echo server presenting `identity`; with `client_ca_pem` it
/// requires a client certificate signed by that authority.
pub fn tls_echo_server(identity: &Identity, client_ca_pem: Option<&str>) -> SocketAddr {
    let config = tls_server_config(identity, client_ca_pem);
    serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// A rustls server configuration presenting `identity`; with `client_ca_pem`
/// it requires a client certificate signed by that authority.
pub fn tls_server_config(identity: &Identity, client_ca_pem: Option<&str>) -> ServerConfig {
    let chain = CertificateDer::pem_slice_iter(identity.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).unwrap()
}

fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    server_runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                // A failed handshake is the point of several tests: drop it.
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => echo(stream).await,
                        Err(e) => Err(e),
                    },
                    None => echo(stream).await,
                };
            });
        }
    });
    addr
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
) -> io::Result<()> {
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
        stream.flush().await?;
    }
}

// ---------------------------------------------------------------------------
// Targets and probes

/// A plain connect target for `addr`.
pub fn http(addr: SocketAddr) -> ConnectTarget {
    ConnectTarget::new(
        Origin::new(Scheme::Http, &addr.ip().to_string(), addr.port()),
        None,
    )
}

/// An `https` target that dials `host` (resolved by the runtime) at `addr`'s port.
pub fn https(host: &str, addr: SocketAddr, options: TlsOptions) -> ConnectTarget {
    ConnectTarget::new(
        Origin::new(Scheme::Https, host, addr.port()),
        Some(options.build().unwrap()),
    )
}

/// Writes a few bytes through the transport and reads the echo back.
pub async fn round_trip(transport: &mut BoxTransport) -> io::Result<()> {
    transport.write_all(b"ping").await?;
    transport.flush().await?;
    let mut buf = [0u8; 4];
    transport.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

/// Connects, expecting a failure, and returns its kind.
pub async fn connect_error(rt: &dyn Runtime, target: ConnectTarget) -> ConnectErrorKind {
    match rt.connect(target).await {
        Ok(_) => panic!("connect unexpectedly succeeded"),
        Err(e) => e.kind(),
    }
}

/// Connects over TLS, expecting the certificate to be refused.
async fn certificate_error(rt: &dyn Runtime, target: ConnectTarget) -> CertificateErrorKind {
    match connect_error(rt, target).await {
        ConnectErrorKind::Certificate(kind) => kind,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

/// TLS options that trust `pki`'s CA.
pub fn localhost_ca(pki: &Pki) -> TlsOptions {
    TlsOptions::default()
        .with_only_ca_pem(pki.ca_pem.as_bytes())
        .unwrap()
}

// ---------------------------------------------------------------------------
// Scenarios: each takes the runtime under test and panics on failure.

/// Plain TCP: bytes round-trip and the transport reports its peer and timings.
pub async fn plain_tcp_round_trip(rt: Arc<dyn Runtime>) {
    let addr = echo_server();
    let mut transport = rt.connect(http(addr)).await.unwrap();
    round_trip(&mut transport).await.unwrap();
    let info = transport.info();
    assert_eq!(info.peer_addr, Some(addr));
    assert!(!info.tls);
    assert!(info.dns.is_some() && info.tcp_connect.is_some());
    assert_eq!(info.tls_handshake, None);
    transport.close().await.unwrap();
}

/// A loopback address nobody listens on: a port the system just handed out,
/// whose listener is closed again.
pub fn closed_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap() // the listener is dropped here, closing the port
}

/// A port nobody listens on refuses the connection.
pub async fn refused(rt: Arc<dyn Runtime>) {
    let addr = closed_port();
    assert_eq!(
        connect_error(&*rt, http(addr)).await,
        ConnectErrorKind::Refused
    );
}

/// A name in the reserved `.invalid` domain never resolves.
pub async fn unresolvable(rt: Arc<dyn Runtime>) {
    let target = ConnectTarget::new(Origin::new(Scheme::Http, "nonexistent.invalid", 80), None);
    assert_eq!(connect_error(&*rt, target).await, ConnectErrorKind::Dns);
}

/// A leaf signed by a custom CA is trusted with that CA alone; bytes round-trip over TLS.
pub async fn tls_custom_ca(rt: Arc<dyn Runtime>) {
    let pki = Pki::new();
    let addr = tls_echo_server(&pki.leaf("localhost"), None);
    let mut transport = rt
        .connect(https("localhost", addr, localhost_ca(&pki)))
        .await
        .unwrap();
    round_trip(&mut transport).await.unwrap();
    let info = transport.info();
    assert!(info.tls);
    assert_eq!(info.peer_addr, Some(addr));
    assert!(info.tls_handshake.is_some());
}

/// A self-signed certificate is not trusted by the default (platform) roots.
pub async fn tls_unknown_issuer(rt: Arc<dyn Runtime>) {
    let addr = tls_echo_server(&self_signed("localhost"), None);
    let target = https("localhost", addr, TlsOptions::default());
    assert_eq!(
        certificate_error(&*rt, target).await,
        CertificateErrorKind::UnknownIssuer
    );
}

/// An expired leaf from a trusted CA is refused as expired.
pub async fn tls_expired(rt: Arc<dyn Runtime>) {
    let pki = Pki::new();
    let addr = tls_echo_server(&pki.expired_leaf("localhost"), None);
    let target = https("localhost", addr, localhost_ca(&pki));
    assert_eq!(
        certificate_error(&*rt, target).await,
        CertificateErrorKind::Expired
    );
}

/// A trusted leaf for another name is refused as the wrong host.
pub async fn tls_wrong_host(rt: Arc<dyn Runtime>) {
    let pki = Pki::new();
    let addr = tls_echo_server(&pki.leaf("other.example"), None);
    let target = https("localhost", addr, localhost_ca(&pki));
    assert_eq!(
        certificate_error(&*rt, target).await,
        CertificateErrorKind::WrongHost
    );
}

/// A server that requires client certificates accepts ours and refuses a
/// client without one (in TLS 1.3 the refusal arrives on the first read).
pub async fn mutual_tls(rt: Arc<dyn Runtime>) {
    let pki = Pki::new();
    let addr = tls_echo_server(&pki.leaf("localhost"), Some(&pki.ca_pem));
    let client = pki.leaf("client.localhost");

    let with_cert = localhost_ca(&pki)
        .with_client_certificate_pem(client.chain_pem.as_bytes(), client.key_pem.as_bytes())
        .unwrap();
    let mut transport = rt
        .connect(https("localhost", addr, with_cert))
        .await
        .unwrap();
    round_trip(&mut transport).await.unwrap();

    let refused = match rt
        .connect(https("localhost", addr, localhost_ca(&pki)))
        .await
    {
        Err(_) => true,
        Ok(mut transport) => round_trip(&mut transport).await.is_err(),
    };
    assert!(refused, "a client without a certificate got through");
}

/// The loudly named insecure mode connects to a self-signed server.
pub async fn danger_accept_invalid(rt: Arc<dyn Runtime>) {
    let addr = tls_echo_server(&self_signed("localhost"), None);
    let options = TlsOptions::default().danger_accept_invalid_certificates();
    let mut transport = rt.connect(https("localhost", addr, options)).await.unwrap();
    round_trip(&mut transport).await.unwrap();
}

/// `sleep_until` returns once the runtime's own clock has reached the deadline.
pub async fn sleep_reaches_deadline(rt: Arc<dyn Runtime>, wait: Duration) {
    let start = rt.now();
    rt.sleep_until(start + wait).await;
    assert!(rt.now().saturating_duration_since(start) >= wait);
}

/// A deadline the clock has reached completes on its first poll; one `ahead`
/// of it does not. No real time passes.
pub async fn sleep_fires_only_once_due(rt: Arc<dyn Runtime>, ahead: Duration) {
    let now = rt.now();
    assert!(futures_lite::future::poll_once(rt.sleep_until(now))
        .await
        .is_some());
    let later = rt.sleep_until(now + ahead);
    assert!(futures_lite::future::poll_once(later).await.is_none());
}

/// A deadline of "never" neither panics nor fires.
pub async fn never_deadline_stays_pending(rt: Arc<dyn Runtime>) {
    let sleep = rt.sleep_until(Instant::MAX);
    assert!(futures_lite::future::poll_once(sleep).await.is_none());
}
