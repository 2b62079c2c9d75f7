//! The flaky mock API: a stand-in for third-party HTTP APIs that injects each failure
//! class on demand, so that every disposition of the HTTP source is tested end to end.
//!
//! It serves a deterministic data set of order records (nested JSON, 300–600 bytes each,
//! with `id` and `updated_at`) on 127.0.0.1 in every pagination style:
//!
//! | route | pagination | records at |
//! |---|---|---|
//! | `GET /page/items?page=&per_page=` | page number, `meta.has_more`, `meta.total` | `$.data.items` |
//! | `GET /offset/items?offset=&limit=` | offset/limit, `meta.total` | `$.data.items` |
//! | `GET /cursor/items?cursor=&limit=` | cursor at `$.meta.next_cursor` | `$.data.items` |
//! | `GET /next/items?after=&limit=` | next URL at `$.links.next` | `$.data.items` |
//! | `GET /link/items?page=&per_page=` | `Link: <...>; rel="next"` | root array |
//! | `GET /ndjson/items?offset=&limit=` | offset/limit, empty page ends | NDJSON |
//! | `POST /search` `{"page","page_size","updated_since"}` | page number in the body | `$.data.items` |
//!
//! Every data route takes `updated_since` (RFC 3339) and returns only records changed
//! after it. `POST /oauth/token` issues OAuth2 client-credentials tokens;
//! `POST /admin/heal` turns faults off; `POST /admin/repair` serves malformed records
//! well; `POST /admin/touch {"ids": [..]}` gives records a new `updated_at`;
//! `GET /admin/requests` returns the request log.
//!
//! ```no_run
//! # async fn demo() {
//! use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, RetryAfter};
//! let mock = MockApi::start(MockConfig {
//!     records: 300,
//!     faults: vec![Fault::new(2, 1, FaultKind::RateLimited { retry_after: RetryAfter::Seconds(1) })],
//!     ..MockConfig::default()
//! })
//! .await
//! .unwrap();
//! let url = mock.url("/page/items");
//! // ... point a source at `url` ...
//! assert!(mock.data_requests().iter().any(|r| r.status == 429));
//! mock.shutdown().await;
//! # }
//! ```

mod config;
mod data;
mod log;
mod server;

pub use config::{
    DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Drift, DriftChange, Fault, FaultKind, KeyIn, MockAuth,
    MockConfig, QuotaDialect, RetryAfter,
};
pub use log::LoggedRequest;

use server::{ConnKill, MockState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// The port was taken or the address unusable.
    #[error(
        "the mock API could not listen on 127.0.0.1:{port}: {source} (pick another port, or 0 for any free one)"
    )]
    Bind {
        /// The port asked for.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid mock API config: {0}")]
    Config(String),
}

/// Starts mock APIs.
pub struct MockApi;

impl MockApi {
    /// Starts a mock API on `127.0.0.1:config.port` (`0`: any free port) and returns its
    /// handle. It serves until [`MockHandle::shutdown`] or until the handle drops.
    pub async fn start(config: MockConfig) -> Result<MockHandle, MockError> {
        if config.page_size == 0 {
            return Err(MockError::Config("`page_size` must be at least 1".into()));
        }
        let port = config.port;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| MockError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MockError::Bind { port, source })?;
        let state = Arc::new(MockState::new(config));
        let shutdown = Arc::new(Notify::new());
        let task = tokio::spawn(serve(listener, state.clone(), shutdown.clone()));
        Ok(MockHandle {
            base_url: format!("http://{addr}"),
            addr,
            state,
            shutdown,
            task: Some(task),
        })
    }
}

/// A running mock API.
pub struct MockHandle {
    base_url: String,
    addr: SocketAddr,
    state: Arc<MockState>,
    shutdown: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl MockHandle {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `base_url` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The data requests received so far (not the token endpoint nor `/admin/*`).
    pub fn data_requests(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.data_request.is_some())
            .collect()
    }

    /// How many tokens the OAuth2 endpoint issued.
    pub fn tokens_issued(&self) -> u64 {
        self.state.token_counter.load(Ordering::SeqCst)
    }

    /// Forgets the request log (fault counting goes on).
    pub fn clear_log(&self) {
        self.state
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Turns every fault off (schema drift and malformed records stay: they are data).
    pub fn heal(&self) {
        self.state.healed.store(true, Ordering::SeqCst);
    }

    /// Serves the malformed records well from now on: the upstream fixed its data.
    pub fn repair(&self) {
        self.state
            .data
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .repair();
    }

    /// Replaces the faults, turns them back on and restarts request counting at 1.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.state.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
        self.state.data_requests.store(0, Ordering::SeqCst);
        self.state.healed.store(false, Ordering::SeqCst);
    }

    /// Gives these records a new `updated_at`, later than that of any record before.
    pub fn touch(&self, ids: &[u64]) {
        self.state
            .data
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .touch(ids);
    }

    /// The record with this id as served (after drift, touches, corruption).
    pub fn record(&self, id: u64) -> Option<serde_json::Value> {
        self.state.data().record(id)
    }

    /// Records in the data set.
    pub fn len(&self) -> usize {
        self.state.data().len()
    }

    /// Whether the data set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.shutdown.notify_one();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.shutdown.notify_one();
    }
}

/// The accept loop. Each connection is served by hyper with the axum router; a handler
/// can ask its connection task to drop the socket, which (lingering 0) resets it.
async fn serve(listener: TcpListener, state: Arc<MockState>, shutdown: Arc<Notify>) {
    use tower::ServiceExt as _;
    let router = axum::Router::new().fallback({
        let state = state.clone();
        move |req: axum::extract::Request| server::handle(state.clone(), req)
    });
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.notified() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                conns.spawn(async move {
                    let kill = Arc::new(Notify::new());
                    let on_request = kill.clone();
                    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(ConnKill(on_request.clone()));
                        router.clone().oneshot(req.map(axum::body::Body::new))
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = kill.notified() => {}
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

#[cfg(test)]
mod tests;
