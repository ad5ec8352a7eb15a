//! Batch calls: many requests, at most the concurrency cap in flight.
//!
//! Both forms run on the calling task (no spawned tasks, so they work on
//! any runtime) and keep at most the client's concurrency cap of calls in
//! flight; later calls start as earlier ones finish. Results come back in
//! input order.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use crate::{Client, Error, RequestBuilder, Response};

type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Polls up to `limit` futures at once, starting the next as one finishes.
struct Window<'a, T, I> {
    upcoming: I,
    next_index: usize,
    running: Vec<(usize, Pending<'a, T>)>,
    limit: usize,
}

impl<'a, T, I> Window<'a, T, I>
where
    I: Iterator<Item = Pending<'a, T>>,
{
    fn new(upcoming: I, limit: usize) -> Self {
        Window {
            upcoming,
            next_index: 0,
            running: Vec::new(),
            limit: limit.max(1),
        }
    }

    /// The next finished call, with its input index; `None` when all are done.
    async fn next(&mut self) -> Option<(usize, Result<T, Error>)> {
        while self.running.len() < self.limit {
            let Some(future) = self.upcoming.next() else {
                break;
            };
            self.running.push((self.next_index, future));
            self.next_index += 1;
        }
        if self.running.is_empty() {
            return None;
        }
        std::future::poll_fn(|cx: &mut Context<'_>| {
            for i in 0..self.running.len() {
                if let Poll::Ready(result) = self.running[i].1.as_mut().poll(cx) {
                    let (index, _) = self.running.swap_remove(i);
                    return Poll::Ready(Some((index, result)));
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Client {
    fn concurrency_cap(&self) -> usize {
        self.inner().lock().engine.config().max_concurrency
    }

    /// Sends every request (any method, any body) and hands each response to
    /// `handle`; each item is its own `Result`, in input order (partial
    /// results). Every error names its request's method and URL, including
    /// the ones `handle` returns.
    ///
    /// At most the concurrency cap of calls is in flight at once; later
    /// requests start as earlier ones finish.
    ///
    /// ```no_run
    /// # async fn run(client: breakwater::Client) {
    /// let orders = [1, 2, 3].map(|id| client.post("orders").json(&serde_json::json!({"id": id})));
    /// let statuses = client
    ///     .send_many(orders, |response| async move { Ok(response.status()) })
    ///     .await;
    /// # }
    /// ```
    pub async fn send_many<T, F, Fut>(
        &self,
        requests: impl IntoIterator<Item = RequestBuilder>,
        handle: F,
    ) -> Vec<Result<T, Error>>
    where
        T: Send,
        F: Fn(Response) -> Fut + Sync,
        Fut: Future<Output = Result<T, Error>> + Send,
    {
        let futures: Vec<_> = requests
            .into_iter()
            .map(|request| call(request, &handle))
            .collect();
        let count = futures.len();
        let mut results: Vec<Option<Result<T, Error>>> = (0..count).map(|_| None).collect();
        let mut window = Window::new(futures.into_iter(), self.concurrency_cap());
        while let Some((index, result)) = window.next().await {
            results[index] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.expect("every call finished"))
            .collect()
    }

    /// Like [`send_many`](Self::send_many), but all or nothing: the first
    /// error cancels the calls still running (dropping them gives their
    /// connections back) and is returned.
    pub async fn try_send_many<T, F, Fut>(
        &self,
        requests: impl IntoIterator<Item = RequestBuilder>,
        handle: F,
    ) -> Result<Vec<T>, Error>
    where
        T: Send,
        F: Fn(Response) -> Fut + Sync,
        Fut: Future<Output = Result<T, Error>> + Send,
    {
        let futures: Vec<_> = requests
            .into_iter()
            .map(|request| call(request, &handle))
            .collect();
        let count = futures.len();
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        let mut window = Window::new(futures.into_iter(), self.concurrency_cap());
        while let Some((index, result)) = window.next().await {
            results[index] = Some(result?);
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every call finished"))
            .collect())
    }

    /// GETs every URL and decodes each JSON body, failing on error statuses;
    /// each item is its own `Result`, in input order (partial results).
    /// [`send_many`](Self::send_many) takes any request and any handling.
    pub async fn get_many<T, U>(&self, urls: impl IntoIterator<Item = U>) -> Vec<Result<T, Error>>
    where
        T: DeserializeOwned + Send,
        U: AsRef<str>,
    {
        let requests: Vec<_> = urls.into_iter().map(|url| self.get(url.as_ref())).collect();
        self.send_many(requests, json_body).await
    }

    /// Like [`get_many`](Self::get_many), but all or nothing: the first
    /// error cancels the calls still running (dropping them gives their
    /// connections back) and is returned.
    pub async fn try_get_many<T, U>(
        &self,
        urls: impl IntoIterator<Item = U>,
    ) -> Result<Vec<T>, Error>
    where
        T: DeserializeOwned + Send,
        U: AsRef<str>,
    {
        let requests: Vec<_> = urls.into_iter().map(|url| self.get(url.as_ref())).collect();
        self.try_send_many(requests, json_body).await
    }
}

/// One item of a batch: the request sent, its response handled, and any
/// error named after the request.
fn call<'a, T, F, Fut>(request: RequestBuilder, handle: &'a F) -> Pending<'a, T>
where
    T: Send,
    F: Fn(Response) -> Fut + Sync,
    Fut: Future<Output = Result<T, Error>> + Send + 'a,
{
    let named = request.names();
    Box::pin(async move {
        let response = request.send().await?;
        handle(response).await.map_err(|e| match &named {
            Some((method, url)) => e.with_request(method, url),
            None => e,
        })
    })
}

/// The body of a successful response, decoded as JSON.
async fn json_body<T: DeserializeOwned>(response: Response) -> Result<T, Error> {
    response.error_for_status().await?.json::<T>().await
}
