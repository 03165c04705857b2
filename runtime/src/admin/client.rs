//! A client for the admin API, behind `eddy savepoint` and `eddy stop`.
//!
//! HTTP/1 over plain TCP with hyper-util's client: axum already brings hyper, so this adds
//! almost nothing to the build, and the API is pod-local or port-forwarded, so no TLS.
//! Every request has a deadline, so a wedged pod makes the command fail instead of hang.

use super::{ErrorBody, JobInfo, SavepointCreated, SavepointState, SavepointStatus, StopAccepted};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long one request may take; the API's handlers answer at once, so this is generous.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin answers are small JSON documents.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad admin address `{admin}`: {reason}")]
    BadAddress { admin: String, reason: String },
    #[error(
        "cannot reach the admin API at {admin}: {reason} (is the job running, and is this its pod 0 admin address?)"
    )]
    Connect { admin: String, reason: String },
    #[error("the admin API at {admin} did not answer {what} within {}s", .after.as_secs())]
    RequestTimeout {
        admin: String,
        what: String,
        after: Duration,
    },
    /// The API refused: `message` is its `{"error"}` text.
    #[error("the admin API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the admin API to {what}: {reason}")]
    Protocol { what: String, reason: String },
    #[error(
        "savepoint {id} did not complete within {}s; it may still complete (check GET /v1/savepoints/{id})",
        .waited.as_secs()
    )]
    Timeout { id: u64, waited: Duration },
    #[error("savepoint {id} failed: {error}")]
    SavepointFailed { id: u64, error: String },
}

/// A connection pool to one admin API; reuse it to poll.
#[derive(Clone)]
pub struct AdminClient {
    admin: String,
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// `admin` is `host:port` (as `--admin` takes it) or `http://host:port`.
    pub fn new(admin: &str) -> Result<AdminClient, ClientError> {
        let bad = |reason: &str| ClientError::BadAddress {
            admin: admin.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = admin.trim().trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(bad("it is empty; expected host:port, e.g. 127.0.0.1:9249"));
        }
        let base = if trimmed.starts_with("https://") {
            return Err(bad("https is not supported; the admin API is plain HTTP"));
        } else if trimmed.starts_with("http://") {
            trimmed.to_string()
        } else if trimmed.contains("://") {
            return Err(bad("only http:// addresses are supported"));
        } else {
            format!("http://{trimmed}")
        };
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.host().is_none() || uri.path() != "/" {
            return Err(bad("expected host:port, e.g. 127.0.0.1:9249"));
        }
        Ok(AdminClient {
            admin: admin.to_string(),
            base,
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Sends one request and decodes a 2xx JSON answer into `T`; other statuses become
    /// [`ClientError::Api`] with the server's message.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let protocol = |reason: String| ClientError::Protocol {
            what: what.clone(),
            reason,
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| protocol(e.to_string()))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Connect {
                    admin: self.admin.clone(),
                    reason: chain(&e),
                })?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| protocol(format!("reading the body: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::RequestTimeout {
                admin: self.admin.clone(),
                what: what.clone(),
                after: REQUEST_TIMEOUT,
            })??;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            protocol(format!(
                "{e} in `{}`",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })
    }

    pub async fn job(&self) -> Result<JobInfo, ClientError> {
        self.call(Method::GET, "/v1/job", None).await
    }

    pub async fn trigger_savepoint(&self) -> Result<u64, ClientError> {
        let created: SavepointCreated = self.call(Method::POST, "/v1/savepoints", None).await?;
        Ok(created.id)
    }

    pub async fn savepoint(&self, id: u64) -> Result<SavepointStatus, ClientError> {
        self.call(Method::GET, &format!("/v1/savepoints/{id}"), None)
            .await
    }

    /// Polls savepoint `id` until it completes (its path), fails, or `timeout` passes.
    pub async fn wait_savepoint(&self, id: u64, timeout: Duration) -> Result<String, ClientError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        // Start fast (small savepoints finish in well under a second), then back off.
        let mut pause = Duration::from_millis(100);
        loop {
            let status = self.savepoint(id).await?;
            match status.state {
                SavepointState::Completed => {
                    return status.path.ok_or_else(|| ClientError::Protocol {
                        what: format!("GET /v1/savepoints/{id}"),
                        reason: "a completed savepoint without a path".into(),
                    });
                }
                SavepointState::Failed => {
                    return Err(ClientError::SavepointFailed {
                        id,
                        error: status.error.unwrap_or_else(|| "no reason given".into()),
                    });
                }
                SavepointState::Pending => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    id,
                    waited: now - started,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Asks the job to stop (after a final savepoint if `savepoint`); returns its id.
    pub async fn stop(&self, savepoint: bool) -> Result<Option<u64>, ClientError> {
        let body = serde_json::json!({ "savepoint": savepoint }).to_string();
        let accepted: StopAccepted = self.call(Method::POST, "/v1/stop", Some(body)).await?;
        Ok(accepted.savepoint)
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

/// hyper's errors say "client error (Connect)"; the cause ("connection refused") is below.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Triggers a savepoint on the job whose admin API is at `admin` (host:port).
pub async fn trigger_savepoint(admin: &str) -> Result<u64, ClientError> {
    AdminClient::new(admin)?.trigger_savepoint().await
}

/// Waits for savepoint `id` and returns its path.
pub async fn wait_savepoint(
    admin: &str,
    id: u64,
    timeout: Duration,
) -> Result<String, ClientError> {
    AdminClient::new(admin)?.wait_savepoint(id, timeout).await
}

/// Asks the job to stop; returns the final savepoint's id if `savepoint`.
pub async fn stop(admin: &str, savepoint: bool) -> Result<Option<u64>, ClientError> {
    AdminClient::new(admin)?.stop(savepoint).await
}
