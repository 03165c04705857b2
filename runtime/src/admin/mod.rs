//! The runtime's admin API (DESIGN.md section 6): health, readiness and metrics on every pod;
//! job info, savepoints and stop on pod 0, which coordinates checkpoints.
//!
//! The server only translates HTTP into calls on a [`JobControl`], which the job implements,
//! so the API can be tested without a job and the job without HTTP. Every error is JSON
//! `{"error": "..."}` with a status that says whose fault it is (400 a bad request, 404 an
//! unknown id, 409 a request the job's state refuses, 503 a pod that can't answer).
//! [`client`] is the other side, for the `eddy savepoint` / `eddy stop` commands in [`cli`].

pub mod cli;
pub mod client;
#[cfg(test)]
mod tests;

use crate::metrics::JobMetrics;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;

/// What the job is doing, as `GET /v1/job` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    /// Running, with a savepoint in progress.
    Savepointing,
    /// Draining after `POST /v1/stop` (taking the final savepoint first, if asked).
    Stopping,
    Finished,
    Failed,
}

/// The last completed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub id: u64,
    /// Where its `_metadata.json` lives (an object-store URL).
    pub path: String,
    /// Completion time, epoch milliseconds.
    pub time_ms: i64,
    pub duration_ms: u64,
    /// Bytes uploaded by this checkpoint (incremental, so not the whole state).
    pub bytes: u64,
}

/// `GET /v1/job`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub state: JobState,
    pub parallelism: usize,
    pub max_parallelism: usize,
    pub last_checkpoint: Option<CheckpointInfo>,
    /// Records read by sources ([`JobMetrics::total_in`]).
    pub records_in: u64,
    /// Records written by sinks ([`JobMetrics::total_out`]).
    pub records_out: u64,
    pub uptime_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SavepointState {
    Pending,
    Completed,
    Failed,
}

/// `GET /v1/savepoints/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointStatus {
    pub id: u64,
    pub state: SavepointState,
    /// Set once completed: what to pass as the restore path.
    pub path: Option<String>,
    /// Set once failed.
    pub error: Option<String>,
}

/// Why the job refused a request; the variant picks the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// 409: one savepoint at a time, as each one is a full barrier round.
    #[error("savepoint {0} is already in progress; wait for it (GET /v1/savepoints/{0})")]
    SavepointInProgress(u64),
    /// 409: the job is stopping, finished or failed, so it takes no more savepoints or stops.
    #[error("the job is {0}; it accepts no savepoint or stop now")]
    NotRunning(String),
    /// 503: this pod cannot serve the request now (e.g. it is not pod 0, or still restoring).
    #[error("{0}")]
    Unavailable(String),
    /// 500: the job hit a bug or lost an internal channel.
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::SavepointInProgress(_) | AdminError::NotRunning(_) => StatusCode::CONFLICT,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        error(self.status(), self.to_string())
    }
}

/// The job as the admin API sees it. Implementations are called on the async runtime's
/// threads, so each method must return quickly: read shared state or send a command on a
/// channel, never wait for a checkpoint.
pub trait JobControl: Send + Sync + 'static {
    fn info(&self) -> JobInfo;
    /// Restored (if restoring) and every task started: the pod can take traffic.
    fn ready(&self) -> bool;
    /// Starts a savepoint and returns its id; it completes asynchronously.
    fn trigger_savepoint(&self) -> Result<u64, AdminError>;
    /// A savepoint's status, `None` for an id this job never issued.
    fn savepoint(&self, id: u64) -> Option<SavepointStatus>;
    /// Begins a graceful stop, after a final savepoint if `savepoint` (whose id it returns).
    fn stop(&self, savepoint: bool) -> Result<Option<u64>, AdminError>;
}

/// `POST /v1/stop` body; every field optional, unknown fields rejected (a typo like
/// `savepiont` must not silently stop without a savepoint).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    #[serde(default)]
    pub savepoint: bool,
}

/// `POST /v1/savepoints` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavepointCreated {
    pub id: u64,
}

/// `POST /v1/stop` answer: the final savepoint's id, if one was asked.
#[derive(Debug, Serialize, Deserialize)]
pub struct StopAccepted {
    pub savepoint: Option<u64>,
}

/// Every error body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// OpenMetrics 1.0, which Prometheus negotiates for; prometheus-client writes this format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AppState {
    control: Arc<dyn JobControl>,
    metrics: Arc<JobMetrics>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// The routes, for embedding in another server or testing without a socket.
pub fn router(control: Arc<dyn JobControl>, metrics: Arc<JobMetrics>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/job", get(job_info))
        .route("/v1/savepoints", post(trigger_savepoint))
        .route("/v1/savepoints/{id}", get(savepoint_status))
        .route("/v1/stop", post(stop))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState { control, metrics })
}

/// Serves the admin API on `listener` until `shutdown` resolves, then finishes the requests
/// in flight. Bind the listener yourself (port 0 in tests; 9249 in pods) so a bad address
/// fails before the job starts.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<dyn JobControl>,
    metrics: Arc<JobMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    axum::serve(listener, router(control, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.control.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        s.metrics.encode(),
    )
        .into_response()
}

async fn job_info(State(s): State<AppState>) -> Json<JobInfo> {
    Json(s.control.info())
}

async fn trigger_savepoint(State(s): State<AppState>) -> Result<Response, AdminError> {
    let id = s.control.trigger_savepoint()?;
    tracing::info!(id, "savepoint triggered through the admin API");
    Ok((StatusCode::ACCEPTED, Json(SavepointCreated { id })).into_response())
}

async fn savepoint_status(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(n) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("savepoint id `{id}` is not a number"),
        );
    };
    match s.control.savepoint(n) {
        Some(status) => Json(status).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no savepoint {n}")),
    }
}

/// Parses a stop body: empty means `{"savepoint": false}`; errors name the bad field.
/// Only an object is accepted: serde would take `[]` as a struct with every field defaulted,
/// and a stop is too consequential to read into a body that said nothing.
pub fn parse_stop(body: &[u8]) -> Result<StopRequest, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StopRequest::default());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("bad stop request: not JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!(
            "bad stop request: expected an object like {{\"savepoint\": true}}, got `{value}`"
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("bad stop request: {}", e.inner())
        } else {
            format!("bad stop request: field `{path}`: {}", e.inner())
        }
    })
}

async fn stop(State(s): State<AppState>, body: Bytes) -> Result<Response, Response> {
    let req = parse_stop(&body).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
    let savepoint = s
        .control
        .stop(req.savepoint)
        .map_err(IntoResponse::into_response)?;
    tracing::info!(
        with_savepoint = req.savepoint,
        ?savepoint,
        "stop requested through the admin API"
    );
    Ok((StatusCode::ACCEPTED, Json(StopAccepted { savepoint })).into_response())
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}; try /healthz, /readyz, /metrics, /v1/job, /v1/savepoints, /v1/stop",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
