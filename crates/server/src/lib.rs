//! # sluice-server
//!
//! `sluice serve`: one long-running service for a team's pipelines.
//!
//! - [`Server::start`] loads every pipeline file of the folders (and files) it is given. A
//!   file that does not validate is reported (in the log, on `GET /pipelines`, as the
//!   `sluice_pipeline_files_invalid` gauge) and the others run.
//! - Each pipeline has a worker that runs its runs one at a time, through the same engine
//!   path as `sluice run` (build the plan, take the pipeline's run lease, open its buffer,
//!   [`sluice_engine::Executor::run`], release). A run whose lease is held elsewhere (a
//!   `sluice run` in a terminal, another worker) is skipped, and said so; a cron tick under
//!   `overlap: queue` waits for it instead.
//! - Workers sharing a PostgreSQL state store and a Kafka buffer help each other's runs:
//!   the sinks' consumer groups spread over them (`helping`).
//! - Schedules ([`sluice_config::spec::Schedule`]): `cron` (in its `timezone`) with
//!   `catch_up` (ticks missed while the service was down: `none`, `last`, `all`; the last
//!   tick is kept in the state store) and `overlap` (`skip`, `queue`); `realtime` (back to
//!   back while there is data); `manual` (only through the API).
//! - A JSON API (axum) with Prometheus metrics ([`metrics`]); mutating endpoints need the
//!   bearer token.
//! - A web view on the same address (`web/`, docs/web.md): server-rendered pages of the
//!   pipelines, their DAG, runs, failed batches, links and alerts; its changes need a
//!   signed-in session and pass CSRF checks.
//! - Hot reload: an edited, added or deleted file is picked up; a broken edit keeps the
//!   running version; a run in flight finishes on the version it started with.
//! - [`Server::run`] returns once its stop token is cancelled and the runs in flight
//!   finished (or the stop timeout passed: they are then stopped gracefully, their batches
//!   in hand committed).
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_server::ServeError> {
//! use sluice_server::{Server, ServeOptions};
//! let server = Server::start(ServeOptions::new(vec!["pipelines".into()])).await?;
//! println!("listening on http://{}", server.local_addr());
//! let stop = tokio_util::sync::CancellationToken::new();
//! server.run(stop).await
//! # }
//! ```

mod api;
mod catalog;
mod helping;
pub mod metrics;
mod owner;
mod reload;
mod service;
mod web;

use sluice_core::ErrorClass;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How `sluice serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Folders (their `*.yaml` and `*.yml`) and files.
    pub paths: Vec<PathBuf>,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The state store of every pipeline, in place of each one's `state:`.
    pub state: Option<String>,
    /// The bearer token of the mutating endpoints (none: they are open, which is
    /// allowed on a loopback address only).
    pub token: Option<String>,
    /// On stop, how long runs in flight may go on before they are stopped gracefully.
    pub stop_timeout: Duration,
    /// The run leases' time to live (PostgreSQL: a worker that stops renewing loses them
    /// this long after its last renewal).
    pub lease_ttl: Duration,
    /// Watch the files and reload them when they change.
    pub watch: bool,
    /// Check every link of every pipeline this often (the `sluice_link_up` gauges, the
    /// `links` of `GET /pipelines/{name}`); `None`: only on `GET /health`.
    pub health_interval: Option<Duration>,
    /// The service's default alert channels (`--alerts FILE`): for the pipelines whose
    /// `alerts:` has no channels, and for pipeline files that do not validate.
    pub alerts: Option<sluice_config::spec::AlertsSpec>,
}

impl ServeOptions {
    /// The defaults: 127.0.0.1:7878, no token, 30 s to stop, the default lease, watching.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        ServeOptions {
            paths,
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            state: None,
            token: None,
            stop_timeout: Duration::from_secs(30),
            lease_ttl: sluice_state::DEFAULT_LEASE_TTL,
            watch: true,
            health_interval: Some(Duration::from_secs(60)),
            alerts: None,
        }
    }
}

/// What can stop `sluice serve` from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] sluice_state::StateError),
    /// The API's address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another `sluice serve` on it? pick another with --listen)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The API server failed.
    #[error("the API server failed: {0}")]
    Http(#[source] std::io::Error),
    /// The service is set up in a way it refuses to run (say what to change).
    #[error("{0}")]
    Refused(String),
    /// The folders cannot be watched for changes.
    #[error(
        "cannot watch {path} for changes: {message} (pass --no-watch to run without hot reload)"
    )]
    Watch {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl ServeError {
    /// The failure's class.
    pub fn class(&self) -> ErrorClass {
        match self {
            ServeError::State(e) => e.class(),
            ServeError::Listen { .. } | ServeError::Http(_) | ServeError::Watch { .. } => {
                ErrorClass::Dependency
            }
            ServeError::Refused(_) => ErrorClass::InvalidRequest,
        }
    }
}

/// A started service: pipelines loaded, the API's address bound.
pub struct Server {
    service: Arc<service::Service>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    opts: ServeOptions,
}

impl Server {
    /// Checks the options, loads the pipelines, opens their state stores and binds the
    /// API's address. Refuses a non-loopback address without a token, and a second
    /// `sluice serve` on one SQLite state store.
    pub async fn start(opts: ServeOptions) -> Result<Server, ServeError> {
        if !opts.listen.ip().is_loopback() && opts.token.is_none() {
            return Err(ServeError::Refused(format!(
                "--listen {} is not a loopback address and no API token is set: anyone who reaches it could trigger runs and replays; set one with --token-file FILE or SLUICE_API_TOKEN, or listen on 127.0.0.1",
                opts.listen
            )));
        }
        let service = service::Service::new(&opts);
        service.rescan(true).await?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(ServeError::Http)?;
        Ok(Server {
            service,
            listener,
            addr,
            opts,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs the schedules and serves the API until `stop` is cancelled; then lets the
    /// runs in flight finish (within the stop timeout), releases their leases and returns.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ServeError> {
        let Server {
            service,
            listener,
            addr,
            opts,
        } = self;
        let _watcher = if opts.watch {
            Some(reload::watch(service.clone(), &opts.paths)?)
        } else {
            None
        };
        service.start_all();
        if let Some(every) = opts.health_interval {
            tokio::spawn(service.clone().watch_links(every));
        }
        service.set_ready(true);
        tracing::info!(%addr, "sluice serve: API listening");
        let app = web::router(service.clone()).merge(api::router(service.clone()));
        let http_stop = CancellationToken::new();
        let http = {
            let http_stop = http_stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { http_stop.cancelled().await })
                    .await
            })
        };
        stop.cancelled().await;
        service.set_ready(false);
        tracing::info!(
            timeout = ?opts.stop_timeout,
            "stopping: no new runs; runs in flight may finish"
        );
        service.stop(opts.stop_timeout).await;
        http_stop.cancel();
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServeError::Http(e)),
            Err(e) => tracing::warn!(error = %e, "the API server ended abnormally"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}
