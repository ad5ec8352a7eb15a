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

use crate::{Client, Error};

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

    /// GETs every URL and decodes each JSON body, failing on error statuses;
    /// each item is its own `Result`, in input order (partial results).
    ///
    /// At most the concurrency cap of calls is in flight at once.
    pub async fn get_many<T, U>(&self, urls: impl IntoIterator<Item = U>) -> Vec<Result<T, Error>>
    where
        T: DeserializeOwned + Send,
        U: AsRef<str>,
    {
        let futures = self.json_calls::<T, U>(urls);
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
        let futures = self.json_calls::<T, U>(urls);
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

    fn json_calls<T, U>(&self, urls: impl IntoIterator<Item = U>) -> Vec<Pending<'static, T>>
    where
        T: DeserializeOwned + Send,
        U: AsRef<str>,
    {
        urls.into_iter()
            .map(|url| {
                let request = self.get(url.as_ref());
                Box::pin(async move {
                    request
                        .send()
                        .await?
                        .error_for_status()
                        .await?
                        .json::<T>()
                        .await
                }) as Pending<'static, T>
            })
            .collect()
    }
}
