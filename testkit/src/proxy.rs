//! Simulated proxies: [`Sim::proxy`](crate::Sim::proxy) puts one on the
//! simulated network, and a client whose settings route a request through it
//! (`ClientBuilder::proxy`, or the simulation's own `HTTPS_PROXY` set with
//! [`Sim::set_env`](crate::Sim::set_env)) connects through it.
//!
//! The proxy decides what a real one would: whether it answers at all,
//! whether the credentials are right, whether it reaches the origin, and
//! when it drops a tunnel. It reports its decisions to the client as the
//! runtime's connect errors; the handshake bytes themselves are the core's
//! codecs' business and are tested against real proxies. A plain `http`
//! request through an HTTP proxy reaches the origin in origin form without
//! `Proxy-Authorization`, as a real proxy forwards it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use breakwater::core::proxy::ProxyUrl;

/// What a simulated proxy does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyFault {
    /// Refuses connections: the proxy is down.
    Refuse,
    /// Answers every request for a tunnel with 407.
    AuthenticationRequired,
    /// Answers 502: it cannot reach the origin.
    BadGateway,
    /// Opens the tunnel, then drops it once the origin has sent this many bytes.
    DropTunnelAfter(u64),
}

pub(crate) struct ProxyState {
    pub(crate) credentials: Mutex<Option<(String, String)>>,
    pub(crate) fault: Mutex<Option<ProxyFault>>,
    pub(crate) tunnels: AtomicUsize,
    pub(crate) refused: AtomicUsize,
}

/// A simulated proxy: its settings and what it saw.
#[derive(Clone)]
pub struct ProxyHandle {
    pub(crate) state: Arc<ProxyState>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("tunnels", &self.tunnels())
            .field("refused", &self.refused())
            .finish_non_exhaustive()
    }
}

impl ProxyHandle {
    pub(crate) fn new() -> Self {
        ProxyHandle {
            state: Arc::new(ProxyState {
                credentials: Mutex::new(None),
                fault: Mutex::new(None),
                tunnels: AtomicUsize::new(0),
                refused: AtomicUsize::new(0),
            }),
        }
    }

    /// Asks for these credentials (Basic for HTTP, RFC 1929 for SOCKS5).
    pub fn require_credentials(&self, user: &str, password: &str) -> &Self {
        *self.state.credentials.lock().unwrap() = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Misbehaves from now on (`None` behaves again).
    pub fn set_fault(&self, fault: Option<ProxyFault>) -> &Self {
        *self.state.fault.lock().unwrap() = fault;
        self
    }

    /// Connections the proxy opened to an origin.
    pub fn tunnels(&self) -> usize {
        self.state.tunnels.load(Ordering::SeqCst)
    }

    /// Connections it refused (down, 407, 502).
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

/// What the proxy does with a connection from a client configured with `url`.
pub(crate) enum Admission {
    /// Down: the client cannot reach it.
    Unreachable,
    /// It answers, and refuses (credentials).
    Refused,
    /// It cannot reach the origin.
    OriginUnreachable,
    /// It connects to the origin, dropping the tunnel after so many bytes.
    Open { drop_after: Option<u64> },
}

impl ProxyState {
    pub(crate) fn admit(&self, url: &ProxyUrl) -> Admission {
        let fault = *self.fault.lock().unwrap();
        let wanted = self.credentials.lock().unwrap().clone();
        let given = url
            .credentials()
            .map(|(user, password)| (user.to_owned(), password.expose().to_owned()));
        let admission = match fault {
            Some(ProxyFault::Refuse) => Admission::Unreachable,
            Some(ProxyFault::AuthenticationRequired) => Admission::Refused,
            _ if wanted.is_some() && wanted != given => Admission::Refused,
            Some(ProxyFault::BadGateway) => Admission::OriginUnreachable,
            Some(ProxyFault::DropTunnelAfter(n)) => Admission::Open {
                drop_after: Some(n),
            },
            None => Admission::Open { drop_after: None },
        };
        match admission {
            Admission::Open { .. } => self.tunnels.fetch_add(1, Ordering::SeqCst),
            _ => self.refused.fetch_add(1, Ordering::SeqCst),
        };
        admission
    }
}
