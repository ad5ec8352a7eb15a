//! A proxy's handshake, over the TCP stream a [`Dialer`] opened to it: the
//! core's codecs say what to send and what the answers mean
//! (`breakwater_core::proxy::{tunnel, socks5}`); this runs them.

use std::io;

use breakwater_core::proxy::socks5::{self, Choice, Socks5Error, Target};
use breakwater_core::proxy::tunnel::{self, Reply, TunnelError};
use breakwater_core::proxy::{ProxyKind, ProxyUrl};
use breakwater_core::Scheme;

use super::{ConnectError, ConnectErrorKind, ConnectTarget, Dialer};

/// Opens the way to `target`'s origin through `proxy`, on `tcp`.
///
/// A plain `http` origin behind an HTTP proxy needs no handshake: its
/// requests go to the proxy in absolute form.
pub(super) async fn handshake<D: Dialer>(
    dialer: &D,
    tcp: &mut D::Tcp,
    proxy: &ProxyUrl,
    target: &ConnectTarget,
) -> Result<(), ConnectError> {
    match proxy.kind() {
        ProxyKind::Http if target.origin.scheme() == Scheme::Http => Ok(()),
        ProxyKind::Http => connect_tunnel(dialer, tcp, proxy, target).await,
        ProxyKind::Socks5 | ProxyKind::Socks5h => socks5(dialer, tcp, proxy, target).await,
    }
}

/// A broken handshake: the proxy's fault, not the origin's.
fn broken(e: io::Error) -> ConnectError {
    ConnectError::new(ConnectErrorKind::ProxyUnreachable, e)
}

async fn connect_tunnel<D: Dialer>(
    dialer: &D,
    tcp: &mut D::Tcp,
    proxy: &ProxyUrl,
    target: &ConnectTarget,
) -> Result<(), ConnectError> {
    let credentials = proxy.credentials();
    let request = tunnel::connect_request(&target.origin, credentials);
    dialer.write_all(tcp, &request).await.map_err(broken)?;
    // The answer is read in small pieces: nothing of the origin's may be
    // read past its end (and nothing should come before the client speaks).
    let mut received = Vec::with_capacity(256);
    let mut piece = [0u8; 512];
    loop {
        let n = dialer.read(tcp, &mut piece).await.map_err(broken)?;
        if n == 0 {
            return Err(broken(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection before answering CONNECT",
            )));
        }
        received.extend_from_slice(&piece[..n]);
        match tunnel::read_reply_with(&received, credentials.is_some()) {
            Reply::Incomplete => continue,
            Reply::Established => return Ok(()),
            Reply::Refused(error) => return Err(tunnel_error(error)),
        }
    }
}

fn tunnel_error(error: TunnelError) -> ConnectError {
    let kind = if error.origin_unreachable() {
        ConnectErrorKind::Unreachable
    } else {
        ConnectErrorKind::ProxyRefused
    };
    ConnectError::new(kind, error)
}

async fn socks5<D: Dialer>(
    dialer: &D,
    tcp: &mut D::Tcp,
    proxy: &ProxyUrl,
    target: &ConnectTarget,
) -> Result<(), ConnectError> {
    let refused = |e: Socks5Error| {
        let kind = if e.origin_unreachable() {
            ConnectErrorKind::Unreachable
        } else {
            ConnectErrorKind::ProxyRefused
        };
        ConnectError::new(kind, e)
    };
    let credentials = proxy.credentials();
    dialer
        .write_all(tcp, &socks5::greeting(credentials.is_some()))
        .await
        .map_err(broken)?;
    let choice = socks5::read_choice(read_exact::<D, 2>(dialer, tcp).await?).map_err(refused)?;
    if choice == Choice::UserPassword {
        let Some((user, password)) = credentials else {
            return Err(refused(Socks5Error::Malformed));
        };
        let message = socks5::authentication(user, password).map_err(refused)?;
        dialer.write_all(tcp, &message).await.map_err(broken)?;
        socks5::read_authentication(read_exact::<D, 2>(dialer, tcp).await?).map_err(refused)?;
    }
    let host = target.resolver_host();
    let port = target.origin.port();
    // socks5h: the proxy resolves the name; socks5: the client does (an
    // address literal needs no resolving either way).
    let resolved;
    let target = match host.parse() {
        Ok(address) => Target::Address(address, port),
        Err(_) if proxy.kind() == ProxyKind::Socks5h => Target::Name(host, port),
        Err(_) => {
            let addrs = dialer
                .resolve(host, port)
                .await
                .map_err(|e| ConnectError::new(ConnectErrorKind::Dns, e))?;
            // IPv4 first: many proxies reach out over IPv4 only, and a
            // SOCKS5 connection gets one address to try.
            resolved = addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .map(|a| a.ip())
                .ok_or_else(|| ConnectError::from_kind(ConnectErrorKind::Dns))?;
            Target::Address(resolved, port)
        }
    };
    let command = socks5::connect(&target).map_err(refused)?;
    dialer.write_all(tcp, &command).await.map_err(broken)?;
    let first = read_exact::<D, 5>(dialer, tcp).await?;
    let total = socks5::reply_len(first).map_err(refused)?;
    // The rest of the answer (the address the proxy bound), unused.
    let mut rest = vec![0u8; total - first.len()];
    read_into(dialer, tcp, &mut rest).await?;
    Ok(())
}

async fn read_exact<D: Dialer, const N: usize>(
    dialer: &D,
    tcp: &mut D::Tcp,
) -> Result<[u8; N], ConnectError> {
    let mut out = [0u8; N];
    read_into(dialer, tcp, &mut out).await?;
    Ok(out)
}

async fn read_into<D: Dialer>(
    dialer: &D,
    tcp: &mut D::Tcp,
    out: &mut [u8],
) -> Result<(), ConnectError> {
    let mut filled = 0;
    while filled < out.len() {
        let n = dialer.read(tcp, &mut out[filled..]).await.map_err(broken)?;
        if n == 0 {
            return Err(broken(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection during its handshake",
            )));
        }
        filled += n;
    }
    Ok(())
}
