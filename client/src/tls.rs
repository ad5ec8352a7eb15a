//! TLS settings, shared by every runtime adapter.
//!
//! [`TlsOptions`] describes what a user wants — which roots to trust, a
//! client certificate for mutual TLS, or (for development only) no
//! verification at all — and [`TlsOptions::build`] turns it into a
//! [`TlsConfig`]: a rustls client configuration with the ring provider and
//! ALPN `http/1.1`, built once per client and shared by every connection.
//! Adapters take the rustls configuration from it and perform the handshake
//! with their own rustls wrapper (tokio-rustls, futures-rustls).
//!
//! Platform roots honour `SSL_CERT_FILE` and `SSL_CERT_DIR` (through
//! rustls-native-certs); when the platform store is empty or unreadable the
//! Mozilla roots of webpki-roots are used instead, so a minimal container
//! still verifies public servers.

use std::fmt;
use std::sync::Arc;

use breakwater_core::Origin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Which certificate authorities to trust.
#[derive(Clone, Debug)]
enum Roots {
    /// The platform store (honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`), else webpki-roots.
    Platform,
    /// The Mozilla roots compiled into webpki-roots.
    WebPki,
    /// Only the certificates the user gave.
    Custom,
}

/// What a client's TLS connections should trust and present.
///
/// ```
/// use breakwater::tls::TlsOptions;
///
/// // The default: platform roots, no client certificate.
/// let config = TlsOptions::default().build().expect("platform or bundled roots load");
/// assert!(config.rustls_config().alpn_protocols.contains(&b"http/1.1".to_vec()));
/// ```
#[derive(Clone, Default)]
pub struct TlsOptions {
    roots: Option<Roots>,
    extra_roots: Vec<CertificateDer<'static>>,
    client_auth: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    accept_invalid_certificates: bool,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("roots", &self.roots.clone().unwrap_or(Roots::Platform))
            .field("extra_roots", &self.extra_roots.len())
            // The private key never reaches Debug output.
            .field("client_certificate", &self.client_auth.is_some())
            .field(
                "accept_invalid_certificates",
                &self.accept_invalid_certificates,
            )
            .finish()
    }
}

impl TlsOptions {
    /// Trust the Mozilla roots bundled with webpki-roots instead of the platform store.
    pub fn with_webpki_roots(mut self) -> Self {
        self.roots = Some(Roots::WebPki);
        self
    }

    /// Trust these PEM certificates in addition to the roots.
    pub fn with_extra_ca_pem(mut self, pem: &[u8]) -> Result<Self, TlsError> {
        self.extra_roots.extend(parse_certificates(pem)?);
        Ok(self)
    }

    /// Trust only these PEM certificates (a private CA bundle).
    pub fn with_only_ca_pem(mut self, pem: &[u8]) -> Result<Self, TlsError> {
        self.roots = Some(Roots::Custom);
        self.extra_roots = parse_certificates(pem)?;
        Ok(self)
    }

    /// Present this certificate chain and private key (both PEM) for mutual TLS.
    pub fn with_client_certificate_pem(
        mut self,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = parse_certificates(chain_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::InvalidPrivateKey)?;
        self.client_auth = Some((chain, Arc::new(key)));
        Ok(self)
    }

    /// **Development only**: accept any server certificate, valid or not.
    ///
    /// Handshake signatures are still checked, but anyone on the path can
    /// impersonate the server. The name is loud on purpose; never ship it.
    pub fn danger_accept_invalid_certificates(mut self) -> Self {
        self.accept_invalid_certificates = true;
        self
    }

    /// Builds the shared rustls configuration.
    pub fn build(&self) -> Result<TlsConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = if self.accept_invalid_certificates {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
        } else {
            builder.with_root_certificates(self.root_store()?)
        };
        let mut config = match &self.client_auth {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Rustls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            rustls: Arc::new(config),
        })
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        match self.roots.clone().unwrap_or(Roots::Platform) {
            Roots::Platform => {
                let loaded = rustls_native_certs::load_native_certs();
                let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
                if added == 0 {
                    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
            }
            Roots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Roots::Custom => {}
        }
        for cert in &self.extra_roots {
            store
                .add(cert.clone())
                .map_err(|e| TlsError::InvalidCertificate(e.to_string()))?;
        }
        if store.is_empty() {
            return Err(TlsError::NoRoots);
        }
        Ok(store)
    }
}

/// A built TLS configuration; cheap to clone and shared by every connection.
#[derive(Clone)]
pub struct TlsConfig {
    rustls: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn", &self.rustls.alpn_protocols)
            .field(
                "client_auth",
                &self.rustls.client_auth_cert_resolver.has_certs(),
            )
            .finish()
    }
}

impl TlsConfig {
    /// The rustls configuration adapters hand to their TLS connector.
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        self.rustls.clone()
    }

    /// The name the server's certificate must carry for `origin`.
    pub fn server_name(origin: &Origin) -> Result<ServerName<'static>, TlsError> {
        let host = origin.host().trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|_| TlsError::InvalidServerName)
    }
}

/// Why TLS settings could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM certificate could not be read.
    InvalidCertificate(String),
    /// The PEM private key could not be read.
    InvalidPrivateKey,
    /// No trusted roots could be loaded.
    NoRoots,
    /// The host cannot be a TLS server name.
    InvalidServerName,
    /// rustls refused the configuration.
    Rustls(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::InvalidCertificate(why) => write!(f, "invalid PEM certificate: {why}"),
            TlsError::InvalidPrivateKey => f.write_str("invalid or missing PEM private key"),
            TlsError::NoRoots => f.write_str("no trusted root certificates could be loaded"),
            TlsError::InvalidServerName => f.write_str("host is not a valid TLS server name"),
            TlsError::Rustls(why) => write!(f, "TLS configuration refused: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::InvalidCertificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::InvalidCertificate(
            "no CERTIFICATE block found".into(),
        ));
    }
    Ok(certs)
}

/// The verifier behind [`TlsOptions::danger_accept_invalid_certificates`].
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
