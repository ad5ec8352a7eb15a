//! The client: one per upstream, cheap to clone, shared by every task that calls it.

use std::fmt;
use std::sync::Arc;

use breakwater_core::Origin;
use http::Method;

use crate::error::{Error, ErrorKind};
use crate::request::RequestBuilder;
use crate::state::Inner;
use crate::urls::{resolve, without_userinfo};

/// A resilient HTTP/1.1 client for one upstream (and any other origin it is pointed at).
///
/// Cheap to clone: clones share the pool, breakers, budgets and token cache.
/// Build one per upstream with [`Client::builder`] on an adapter's runtime
/// (`breakwater_tokio::runtime()`, `breakwater_smol::runtime()`, or the
/// testkit's simulation).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("credentials", &self.inner.credentials)
            .field("proxies", &self.inner.proxies)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A GET request to `url` (relative to the base URL, or absolute).
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A POST request.
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// A PUT request.
    pub fn put(&self, url: &str) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// A PATCH request.
    pub fn patch(&self, url: &str) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// A DELETE request.
    pub fn delete(&self, url: &str) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// A request with any method. A relative URL is appended to the base
    /// URL's path, as httpx does it: under `https://h/v1/` (or `https://h/v1`),
    /// both `users/1` and `/users/1` are `https://h/v1/users/1`. An absolute
    /// URL is used as it is.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let url = resolve(&self.inner.base_url, url)
            .and_then(|url| without_userinfo(url, ErrorKind::Request));
        RequestBuilder::new(self.inner.clone(), method, url)
    }

    /// GETs `url` and decodes its JSON body, failing on an error status.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Error> {
        self.get(url)
            .send()
            .await?
            .error_for_status()
            .await?
            .json()
            .await
    }

    /// Closes the client: idle connections are closed, waiting calls fail
    /// with [`ErrorKind::Closed`], and later calls fail at once. Connections
    /// in use close when their calls end.
    pub async fn close(&self) {
        self.close_now();
    }

    fn close_now(&self) {
        let now = self.inner.runtime.now();
        let housekeeper = self.inner.update(|shared| {
            shared.closed = true;
            shared.engine.close(now);
            shared.housekeeping.take_waker()
        });
        // A sleeping housekeeper sees the client closed and ends.
        if let Some(waker) = housekeeper {
            waker.wake();
        }
    }

    /// The client's cookie jar, if it keeps cookies.
    pub fn cookie_jar(&self) -> Option<&std::sync::Arc<crate::cookies::CookieJar>> {
        self.inner.cookies.as_ref()
    }

    /// A snapshot of the client's gauges and counters.
    ///
    /// Read at the moment it is taken: a timer that has come due (an open
    /// breaker's interval, an idle connection's expiry) is applied first, so
    /// the snapshot never shows a state that has already passed.
    pub fn stats(&self) -> crate::ClientStats {
        let now = self.inner.runtime.now();
        self.inner.decide(|shared| {
            if shared.engine.poll_timeout().is_some_and(|due| due <= now) {
                shared.engine.handle_timeout(now);
            }
            crate::stats::snapshot(&shared.engine, &self.inner.counters, now)
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The origin of the base URL.
    pub fn base_origin(&self) -> &Origin {
        &self.inner.base_origin
    }
}
