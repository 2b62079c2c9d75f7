//! The JSON API (docs/api.md). Reading is open; mutating (`POST`) needs the bearer token
//! when one is set. Errors are `{"error": "...", "class": "<error class>"}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::ErrorClass;
use sluice_state::{FailedBatchFilter, RunRow, StateError, now_ms};
use std::str::FromStr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::service::{Outcome, Request, Service, Slot, describe_schedule, last_tick};

type Svc = State<Arc<Service>>;

/// The API's routes.
pub(crate) fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/pipelines", get(pipelines))
        .route("/pipelines/{name}", get(pipeline))
        .route("/pipelines/{name}/runs", post(trigger))
        .route("/pipelines/{name}/doctor", get(doctor))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run))
        .route("/failed", get(failed))
        .route("/replay", post(replay))
        .route("/health", get(health))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(service)
}

/// An error answer: its status, message and class.
pub(crate) struct ApiError {
    status: StatusCode,
    class: ErrorClass,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, class: ErrorClass, message: impl Into<String>) -> Self {
        ApiError {
            status,
            class,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorClass::InvalidRequest, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorClass::InvalidRequest, message)
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        let status = match e {
            StateError::NotFound { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.class(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({
            "error": self.message,
            "class": self.class.as_str(),
            "status": self.status.as_u16(),
        }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// A query string the endpoint cannot read (`?limit=abc`), answered as every other error.
fn query_error(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!(
        "{}: see docs/api.md for the endpoint's parameters",
        rejection.body_text()
    ))
}

/// Mutating endpoints: the bearer token, compared in constant time. 401 without one, 403
/// with a wrong one. Without a token set (loopback only), open.
fn authorize(svc: &Service, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &svc.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorClass::Auth,
            "this endpoint changes things: send the API token as `Authorization: Bearer TOKEN` (the one in --token-file or SLUICE_API_TOKEN of `sluice serve`)",
        ));
    };
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorClass::Permission,
            "the API token is not the one `sluice serve` was given",
        ))
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see docs/api.md)")
}

fn iso(ms: i64) -> Value {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

async fn last_run(slot: &Slot) -> Option<RunRow> {
    slot.store
        .runs(Some(&slot.name), 1)
        .await
        .ok()
        .and_then(|r| r.into_iter().next())
}

/// A short fingerprint of the file's text: changes when a reload swapped a new version in.
fn version(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// What `GET /pipelines` says of one pipeline.
async fn summary(slot: &Slot) -> Value {
    let loaded = slot.current();
    let plan = &loaded.plan;
    let next = *slot.next_run.lock().expect("slot");
    json!({
        "name": slot.name,
        "file": loaded.file.display().to_string(),
        "version": version(&loaded.text),
        "description": plan.description,
        "schedule": plan.schedule,
        "schedule_text": describe_schedule(&plan.schedule),
        "next_run": next,
        "next_run_at": next.map_or(Value::Null, iso),
        "running": *slot.running.lock().expect("slot"),
        "queued": slot.queued(),
        "last_run": last_run(slot).await,
        "last_skip": *slot.last_skip.lock().expect("slot"),
        "reload_error": *slot.reload_error.lock().expect("slot"),
    })
}

async fn pipelines(State(svc): Svc) -> ApiResult {
    let mut list = Vec::new();
    for slot in svc.all_slots() {
        list.push(summary(&slot).await);
    }
    let invalid: Vec<Value> = svc
        .invalid
        .read()
        .expect("invalid")
        .iter()
        .map(|(file, error)| json!({"file": file.display().to_string(), "error": error}))
        .collect();
    Ok(Json(json!({ "pipelines": list, "invalid": invalid })).into_response())
}

fn slot_of(svc: &Service, name: &str) -> Result<Arc<Slot>, ApiError> {
    svc.slot(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no pipeline `{name}` is served (GET /pipelines lists them, and the files that do not validate)"
        ))
    })
}

async fn pipeline(State(svc): Svc, Path(name): Path<String>) -> ApiResult {
    let slot = slot_of(&svc, &name)?;
    let mut body = summary(&slot).await;
    let loaded = slot.current();
    let plan = &loaded.plan;
    let nodes: Vec<Value> = plan
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "type": n.node_type,
                "role": n.role.as_str(),
                "inputs": n.inputs,
                "after": n.after,
            })
        })
        .collect();
    let edges: Vec<Value> = plan
        .edges
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    body["plan"] = json!({ "nodes": nodes, "edges": edges, "text": plan.to_text() });
    body["state"] = Value::String(sluice_state::redact_url(&slot.state_url));
    body["last_tick"] = last_tick(&slot.store, &name).await.map_or(Value::Null, iso);
    body["links"] = match svc.links.read().expect("links").get(&name) {
        Some((at, links)) => json!({ "checked_at": iso(*at), "links": links }),
        None => Value::Null,
    };
    body["recent_runs"] =
        serde_json::to_value(slot.store.runs(Some(&name), 10).await?).unwrap_or(Value::Null);
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize)]
struct DoctorQuery {
    node: Option<String>,
    run: Option<String>,
}

/// `GET /pipelines/{name}/doctor[?node=&run=]`: the troubleshooting flow of `sluice doctor
/// --json`, run now on the version of the pipeline being served and its state store.
async fn doctor(
    State(svc): Svc,
    Path(name): Path<String>,
    q: Result<Query<DoctorQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(query_error)?;
    let slot = slot_of(&svc, &name)?;
    let loaded = slot.current();
    let mut plan = (*loaded.plan).clone();
    // The store the service uses for it (`--state` may differ from the file's).
    plan.state = slot.state_url.parse().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorClass::Internal,
            format!("the state store URL of `{name}` does not read back: {e}"),
        )
    })?;
    if let Some(node) = &q.node
        && plan.node(node).is_none()
    {
        return Err(ApiError::not_found(format!(
            "pipeline `{name}` has no node `{node}` (GET /pipelines/{name} lists them)"
        )));
    }
    if let Some(run) = &q.run {
        slot.store.run(run).await?;
    }
    let options = sluice_engine::doctor::DoctorOptions {
        node: q.node,
        run: q.run,
    };
    let report = sluice_engine::doctor::diagnose(&plan, &svc.ctx, &options).await;
    Ok(Json(report.to_json()).into_response())
}

async fn trigger(State(svc): Svc, Path(name): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&svc, &headers)?;
    let slot = slot_of(&svc, &name)?;
    if svc.stopping.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Dependency,
            "the service is stopping",
        ));
    }
    if slot.queued() > 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorClass::InvalidRequest,
            format!("a run of `{name}` is already waiting to start; it will read everything new"),
        ));
    }
    let running = slot.running.lock().expect("slot").is_some();
    slot.enqueue(Request::Run {
        trigger: sluice_state::Trigger::Manual,
        done: None,
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "pipeline": name,
            "accepted": true,
            "starts": if running { "after the run in flight" } else { "now" },
            "runs": format!("/runs?pipeline={name}"),
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

async fn runs(State(svc): Svc, q: Result<Query<RunsQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(query_error)?;
    let status = match &q.status {
        Some(s) => Some(sluice_state::RunStatus::from_str(s).map_err(|e| {
            ApiError::bad_request(format!(
                "unknown run status `{s}` in `status`: use one of {}",
                e.expected
            ))
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let mut all: Vec<RunRow> = Vec::new();
    for store in svc.stores().await {
        // A status filter reads further back: the store lists the latest runs.
        let fetch = if status.is_some() { limit * 20 } else { limit };
        all.extend(store.runs(q.pipeline.as_deref(), fetch).await?);
    }
    all.retain(|r| status.is_none_or(|s| r.status == s));
    all.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
    all.dedup_by(|a, b| a.id == b.id);
    all.truncate(limit as usize);
    Ok(Json(json!({ "runs": all })).into_response())
}

async fn run(State(svc): Svc, Path(id): Path<String>) -> ApiResult {
    for store in svc.stores().await {
        match store.run(&id).await {
            Ok((run, nodes, attempts)) => {
                return Ok(
                    Json(json!({ "run": run, "nodes": nodes, "attempts": attempts }))
                        .into_response(),
                );
            }
            Err(StateError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::not_found(format!(
        "no run `{id}` in the state store"
    )))
}

#[derive(Debug, Deserialize)]
struct FailedQuery {
    pipeline: Option<String>,
    node: Option<String>,
    run: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn failed(State(svc): Svc, q: Result<Query<FailedQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = q.map_err(query_error)?;
    let filter = FailedBatchFilter {
        pipeline: q.pipeline,
        node: q.node,
        run_id: q.run,
        include_resolved: q.all,
        ..FailedBatchFilter::default()
    };
    let mut all = Vec::new();
    for store in svc.stores().await {
        all.extend(store.failed_batches(&filter, false).await?);
    }
    Ok(Json(json!({ "failed": all })).into_response())
}

/// `POST /replay`: the filters of `sluice replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    pipeline: String,
    node: Option<String>,
    run: Option<String>,
    since: Option<String>,
    batch: Option<String>,
}

async fn replay(State(svc): Svc, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult {
    authorize(&svc, &headers)?;
    let body: ReplayBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a replay request ({e}): send {{\"pipeline\": \"orders\"}}, optionally with \"node\", \"run\", \"since\" (\"2h\") or \"batch\""
        ))
    })?;
    let slot = slot_of(&svc, &body.pipeline)?;
    let since = match &body.since {
        Some(text) => {
            let ago = sluice_config::values::Duration::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("since `{text}`: {e}")))?;
            Some(now_ms() - ago.get().as_millis() as i64)
        }
        None => None,
    };
    let filter = FailedBatchFilter {
        run_id: body.run,
        node: body.node,
        since,
        id: body.batch,
        ..FailedBatchFilter::default()
    };
    let (done, outcome) = oneshot::channel();
    if !slot.enqueue(Request::Replay { filter, done }) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Dependency,
            "the pipeline is no longer served",
        ));
    }
    match outcome.await {
        Ok(Outcome::Replayed(report)) => Ok(Json(json!({
            "pipeline": body.pipeline,
            "run_id": report.run_id,
            "delivered": report.delivered.iter().map(|(id, rows)| json!({"batch": id, "records": rows})).collect::<Vec<_>>(),
            "failed_again": report.failed_again.iter().map(|(id, why)| json!({"batch": id, "error": why})).collect::<Vec<_>>(),
            "not_replayable": report.not_replayable.iter().map(|(id, why)| json!({"batch": id, "error": why})).collect::<Vec<_>>(),
            "downstream": report.downstream.as_ref().map(|s| json!({"status": s.status, "nodes": s.nodes})),
        }))
        .into_response()),
        Ok(Outcome::Skipped(why)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorClass::Dependency,
            why,
        )),
        Ok(Outcome::Failed(class, why)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            class,
            why,
        )),
        Ok(Outcome::Ran(_)) | Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Dependency,
            "the replay was not run: the service is stopping",
        )),
    }
}

/// `GET /health`: every link of every pipeline, checked now.
async fn health(State(svc): Svc) -> ApiResult {
    let mut all_up = true;
    let mut list = Vec::new();
    for slot in svc.all_slots() {
        let (up, links) = svc.check_links(&slot).await;
        all_up &= up;
        list.push(json!({ "pipeline": slot.name, "links": links }));
    }
    let status = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(json!({ "status": if all_up { "up" } else { "down" }, "pipelines": list })),
    )
        .into_response())
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(svc): Svc) -> Response {
    let pipelines = svc.all_slots().len();
    let invalid = svc.invalid.read().expect("invalid").len();
    let ready = svc.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "pipelines": pipelines, "invalid_files": invalid })),
    )
        .into_response()
}

async fn metrics(State(svc): Svc) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        svc.metrics
            .render(&[&svc.ctx.shared::<sluice_config::ConnectorMetrics>().registry]),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServeOptions;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_token_is_required_and_compared() {
        let mut opts = ServeOptions::new(Vec::new());
        opts.token = Some("t0ken".into());
        let svc = Service::new(&opts);
        let status = |h: Option<&str>| authorize(&svc, &headers(h)).err().map(|e| e.status);
        assert_eq!(status(None), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(Some("Basic dXNlcjpw")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(status(Some("Bearer t0ke")), Some(StatusCode::FORBIDDEN));
        assert_eq!(status(Some("Bearer t0kenX")), Some(StatusCode::FORBIDDEN));
        assert_eq!(status(Some("Bearer t0ken")), None);
        assert_eq!(status(Some("bearer  t0ken ")), None);
        // Without a token (loopback only), open.
        let open = Service::new(&ServeOptions::new(Vec::new()));
        assert!(authorize(&open, &headers(None)).is_ok());
    }
}
