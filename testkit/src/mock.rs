//! Mock upstreams for tests: routes, canned replies, sequences, counts.

use std::sync::{Arc, Mutex};

use http::Method;

use crate::server::{Context, Reply, Request, ServerHandle};

type RouteHandler = Box<dyn FnMut(&Request, &mut Context<'_>) -> Reply + Send>;

struct Route {
    method: Method,
    path: String,
    answer: Answer,
    requests: Arc<Mutex<Vec<Request>>>,
}

enum Answer {
    Fixed(Reply),
    Sequence(Vec<Reply>),
    Handler(RouteHandler),
}

#[derive(Default)]
struct MockState {
    routes: Vec<Route>,
    unmatched: Vec<Request>,
    server: Option<ServerHandle>,
}

/// A mock upstream: requests go to the first route whose method and path
/// match; a request no route matches is answered `501` and recorded, and
/// [`Mock::assert_all_matched`] (also run when the mock is dropped) fails
/// the test with the list.
#[derive(Clone, Default)]
pub struct Mock {
    state: Arc<Mutex<MockState>>,
}

impl std::fmt::Debug for Mock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap();
        f.debug_struct("Mock")
            .field("routes", &state.routes.len())
            .field("unmatched", &state.unmatched.len())
            .finish()
    }
}

/// One route of a [`Mock`]: set its answer, then read its calls.
#[derive(Clone)]
pub struct RouteHandle {
    mock: Mock,
    index: usize,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl std::fmt::Debug for RouteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteHandle")
            .field("index", &self.index)
            .field("calls", &self.calls())
            .finish()
    }
}

impl Mock {
    pub(crate) fn new() -> Self {
        Mock::default()
    }

    pub(crate) fn attach(&self, server: ServerHandle) {
        self.state.lock().unwrap().server = Some(server);
    }

    /// Adds a route for `method` and an exact `path` (the query is ignored); it answers 200 with an empty body until told otherwise.
    pub fn route(&self, method: Method, path: &str) -> RouteHandle {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mut state = self.state.lock().unwrap();
        state.routes.push(Route {
            method,
            path: path.to_owned(),
            answer: Answer::Fixed(Reply::new(200, "")),
            requests: requests.clone(),
        });
        RouteHandle {
            mock: self.clone(),
            index: state.routes.len() - 1,
            requests,
        }
    }

    /// The simulated server behind this mock (connection counts, faults, outages).
    pub fn server(&self) -> ServerHandle {
        self.state
            .lock()
            .unwrap()
            .server
            .clone()
            .expect("a mock is attached to its server")
    }

    /// Requests no route matched.
    pub fn unmatched(&self) -> Vec<Request> {
        self.state.lock().unwrap().unmatched.clone()
    }

    /// Fails the test if any request matched no route.
    pub fn assert_all_matched(&self) {
        let unmatched = self.unmatched();
        if !unmatched.is_empty() {
            let list: Vec<String> = unmatched
                .iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect();
            panic!("requests matched no mock route: {}", list.join(", "));
        }
    }

    pub(crate) fn answer(&self, request: &Request, ctx: &mut Context<'_>) -> Reply {
        let mut state = self.state.lock().unwrap();
        let found = state
            .routes
            .iter_mut()
            .find(|r| r.method == request.method && r.path == request.path());
        let Some(route) = found else {
            state.unmatched.push(request.clone());
            return Reply::new(
                501,
                format!("no mock route for {} {}", request.method, request.target),
            );
        };
        route.requests.lock().unwrap().push(request.clone());
        match &mut route.answer {
            Answer::Fixed(reply) => reply.clone(),
            Answer::Sequence(replies) if replies.len() > 1 => replies.remove(0),
            Answer::Sequence(replies) => replies
                .first()
                .cloned()
                .unwrap_or_else(|| Reply::new(200, "")),
            Answer::Handler(handler) => handler(request, ctx),
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        // Only the last handle checks, and never on top of another panic.
        if Arc::strong_count(&self.state) == 1 && !std::thread::panicking() {
            self.assert_all_matched();
        }
    }
}

impl RouteHandle {
    fn set(self, answer: Answer) -> Self {
        if let Some(route) = self.mock.state.lock().unwrap().routes.get_mut(self.index) {
            route.answer = answer;
        }
        self
    }

    /// Answers every call with `reply`.
    pub fn respond(self, reply: Reply) -> Self {
        self.set(Answer::Fixed(reply))
    }

    /// Answers calls with these replies in turn, repeating the last one.
    pub fn respond_seq(self, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.set(Answer::Sequence(replies.into_iter().collect()))
    }

    /// Answers calls with a handler.
    pub fn handler(
        self,
        handler: impl FnMut(&Request, &mut Context<'_>) -> Reply + Send + 'static,
    ) -> Self {
        self.set(Answer::Handler(Box::new(handler)))
    }

    /// How many requests this route answered.
    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The requests this route answered, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}
