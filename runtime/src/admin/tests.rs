//! The admin API end to end on a loopback socket, against a fake job.

use super::cli::{SavepointArgs, StopArgs, run_savepoint, run_stop};
use super::client::{AdminClient, ClientError};
use super::*;
use crate::metrics::Role;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A job whose savepoints complete after `polls` status reads (or fail, or never complete).
#[derive(Default)]
struct Fake {
    ready: AtomicBool,
    inner: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    stopping: bool,
    next_id: u64,
    /// Status reads left before the pending savepoint finishes.
    polls: u32,
    fail: bool,
    pending: Option<u64>,
    done: HashMap<u64, SavepointStatus>,
}

impl Fake {
    fn new(polls: u32, fail: bool) -> Arc<Fake> {
        let fake = Fake::default();
        {
            let mut s = fake.inner.lock().unwrap();
            s.polls = polls;
            s.fail = fail;
        }
        Arc::new(fake)
    }
}

impl JobControl for Fake {
    fn info(&self) -> JobInfo {
        let s = self.inner.lock().unwrap();
        JobInfo {
            state: match (s.stopping, s.pending) {
                (true, _) => JobState::Stopping,
                (false, Some(_)) => JobState::Savepointing,
                (false, None) => JobState::Running,
            },
            parallelism: 2,
            max_parallelism: 128,
            last_checkpoint: Some(CheckpointInfo {
                id: 4,
                path: "s3://b/ns/job/checkpoints/chk-4".into(),
                time_ms: 1_700_000_000_000,
                duration_ms: 1200,
                bytes: 2048,
            }),
            records_in: 10,
            records_out: 3,
            uptime_s: 42,
        }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn trigger_savepoint(&self) -> Result<u64, AdminError> {
        let mut s = self.inner.lock().unwrap();
        if s.stopping {
            return Err(AdminError::NotRunning("stopping".into()));
        }
        if let Some(id) = s.pending {
            return Err(AdminError::SavepointInProgress(id));
        }
        s.next_id += 1;
        s.pending = Some(s.next_id);
        Ok(s.next_id)
    }

    fn savepoint(&self, id: u64) -> Option<SavepointStatus> {
        let mut s = self.inner.lock().unwrap();
        if s.pending == Some(id) {
            if s.polls > 0 {
                s.polls -= 1;
                return Some(SavepointStatus {
                    id,
                    state: SavepointState::Pending,
                    path: None,
                    error: None,
                });
            }
            s.pending = None;
            let status = if s.fail {
                SavepointStatus {
                    id,
                    state: SavepointState::Failed,
                    path: None,
                    error: Some("worker 1 timed out".into()),
                }
            } else {
                SavepointStatus {
                    id,
                    state: SavepointState::Completed,
                    path: Some(format!("s3://b/ns/job/savepoints/sp-{id}")),
                    error: None,
                }
            };
            s.done.insert(id, status);
        }
        s.done.get(&id).cloned()
    }

    fn stop(&self, savepoint: bool) -> Result<Option<u64>, AdminError> {
        let id = if savepoint {
            Some(self.trigger_savepoint()?)
        } else if self.inner.lock().unwrap().stopping {
            return Err(AdminError::NotRunning("stopping".into()));
        } else {
            None
        };
        self.inner.lock().unwrap().stopping = true;
        Ok(id)
    }
}

struct Server {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(fake: Arc<Fake>, metrics: Arc<JobMetrics>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, fake, metrics, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            handle,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// One raw request: (status, content type, body).
async fn raw(addr: &str, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ct, String::from_utf8(bytes.to_vec()).unwrap())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let fake = Fake::new(0, false);
    let metrics = Arc::new(JobMetrics::new());
    let src = metrics.operator("clicks", 0, Role::Source);
    src.records_in.inc_by(1234);
    metrics.dead_letters(3);
    metrics.checkpoint_completed(7, Duration::from_millis(250), 100, 900);
    let server = Server::start(fake.clone(), metrics).await;
    let a = &server.addr;

    assert_eq!(raw(a, "GET", "/healthz", "").await.0, 200);
    assert_eq!(raw(a, "GET", "/healthz", "").await.2, "ok");
    assert_eq!(raw(a, "GET", "/readyz", "").await.0, 503);
    fake.ready.store(true, Ordering::Relaxed);
    assert_eq!(raw(a, "GET", "/readyz", "").await.0, 200);

    let (status, ct, text) = raw(a, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
    for line in [
        r#"eddy_records_in_total{operator="clicks",worker="0"} 1234"#,
        "eddy_dead_letters_total 3",
        "eddy_last_checkpoint_id 7",
        "eddy_checkpoint_size_bytes 100",
        "eddy_checkpoint_duration_seconds_count 1",
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn job_info_shape() {
    let server = Server::start(Fake::new(0, false), Arc::new(JobMetrics::new())).await;
    let (status, ct, body) = raw(&server.addr, "GET", "/v1/job", "").await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let v = json(&body);
    assert_eq!(v["state"], "running");
    assert_eq!(v["parallelism"], 2);
    assert_eq!(v["max_parallelism"], 128);
    assert_eq!(v["last_checkpoint"]["id"], 4);
    assert_eq!(v["last_checkpoint"]["bytes"], 2048);
    assert_eq!(
        (v["records_in"].as_u64(), v["uptime_s"].as_u64()),
        (Some(10), Some(42))
    );
    let info = AdminClient::new(&server.addr).unwrap().job().await.unwrap();
    assert_eq!(info.state, JobState::Running);
    server.shutdown().await;
}

#[tokio::test]
async fn savepoint_lifecycle() {
    let server = Server::start(Fake::new(2, false), Arc::new(JobMetrics::new())).await;
    let a = &server.addr;
    let (status, _, body) = raw(a, "POST", "/v1/savepoints", "").await;
    assert_eq!((status, json(&body)), (202, serde_json::json!({"id": 1})));

    // One at a time: 409 with a message naming the one in progress.
    let (status, _, body) = raw(a, "POST", "/v1/savepoints", "").await;
    assert_eq!(status, 409);
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("savepoint 1"),
        "{body}"
    );
    let client = AdminClient::new(a).unwrap();
    match client.trigger_savepoint().await {
        Err(ClientError::Api { status: 409, .. }) => {}
        other => panic!("expected 409, got {other:?}"),
    }

    let (status, _, body) = raw(a, "GET", "/v1/savepoints/1", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({"id": 1, "state": "pending", "path": null, "error": null})
    );
    let path = client
        .wait_savepoint(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(path, "s3://b/ns/job/savepoints/sp-1");
    let (_, _, body) = raw(a, "GET", "/v1/savepoints/1", "").await;
    assert_eq!(json(&body)["state"], "completed");

    let (status, _, body) = raw(a, "GET", "/v1/savepoints/99", "").await;
    assert_eq!(
        (status, json(&body)["error"].as_str()),
        (404, Some("no savepoint 99"))
    );
    let (status, _, body) = raw(a, "GET", "/v1/savepoints/abc", "").await;
    assert_eq!(status, 400);
    assert!(
        json(&body)["error"].as_str().unwrap().contains("`abc`"),
        "{body}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn failed_and_slow_savepoints() {
    let failing = Server::start(Fake::new(0, true), Arc::new(JobMetrics::new())).await;
    let id = client::trigger_savepoint(&failing.addr).await.unwrap();
    match client::wait_savepoint(&failing.addr, id, Duration::from_secs(5)).await {
        Err(ClientError::SavepointFailed { id: 1, error }) => {
            assert_eq!(error, "worker 1 timed out")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    failing.shutdown().await;

    let slow = Server::start(Fake::new(u32::MAX, false), Arc::new(JobMetrics::new())).await;
    let id = client::trigger_savepoint(&slow.addr).await.unwrap();
    match client::wait_savepoint(&slow.addr, id, Duration::from_millis(300)).await {
        Err(e @ ClientError::Timeout { id: 1, .. }) => {
            assert!(e.to_string().contains("did not complete"), "{e}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    slow.shutdown().await;
}

#[tokio::test]
async fn stop_bodies_and_conflicts() {
    let server = Server::start(Fake::new(0, false), Arc::new(JobMetrics::new())).await;
    let a = &server.addr;
    for (body, field) in [
        (r#"{"savepoint": "yes"}"#, "`savepoint`"),
        (r#"{"savpoint": true}"#, "savpoint"),
        ("savepoint=true", "bad stop request"),
        ("[]", "bad stop request"),
    ] {
        let (status, ct, resp) = raw(a, "POST", "/v1/stop", body).await;
        assert_eq!(
            (status, ct.as_str()),
            (400, "application/json"),
            "{body}: {resp}"
        );
        let msg = json(&resp)["error"].as_str().unwrap().to_string();
        assert!(msg.contains(field), "{body}: {msg}");
    }
    let (status, _, body) = raw(a, "POST", "/v1/stop", "").await;
    assert_eq!(
        (status, json(&body)),
        (202, serde_json::json!({"savepoint": null}))
    );
    let (status, _, body) = raw(a, "POST", "/v1/stop", r#"{"savepoint": false}"#).await;
    assert_eq!(status, 409, "{body}");
    let (status, _, body) = raw(a, "POST", "/v1/savepoints", "").await;
    assert_eq!(status, 409);
    assert!(
        json(&body)["error"].as_str().unwrap().contains("stopping"),
        "{body}"
    );
    server.shutdown().await;

    let server = Server::start(Fake::new(0, false), Arc::new(JobMetrics::new())).await;
    let (status, _, body) = raw(&server.addr, "POST", "/v1/stop", r#"{"savepoint": true}"#).await;
    assert_eq!(
        (status, json(&body)),
        (202, serde_json::json!({"savepoint": 1}))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = Server::start(Fake::new(0, false), Arc::new(JobMetrics::new())).await;
    let (status, _, body) = raw(&server.addr, "GET", "/v2/nope", "").await;
    assert_eq!(status, 404);
    assert!(json(&body)["error"].as_str().unwrap().contains("/v2/nope"));
    let (status, _, body) = raw(&server.addr, "GET", "/v1/stop", "").await;
    assert_eq!(status, 405);
    assert!(json(&body)["error"].as_str().unwrap().contains("GET"));
    server.shutdown().await;
}

#[tokio::test]
async fn client_errors_say_what_to_check() {
    for bad in ["", "https://pod:9249", "ftp://x", "host:9249/some/path"] {
        match AdminClient::new(bad) {
            Err(ClientError::BadAddress { .. }) => {}
            other => panic!("{bad}: expected BadAddress, got {:?}", other.is_ok()),
        }
    }
    assert!(AdminClient::new("http://127.0.0.1:9249/").is_ok());
    // A port nobody listens on (bound, then released).
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = client::stop(&addr, false).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains(&addr), "{e}");
}

#[tokio::test]
async fn cli_handlers_print_ids_and_paths() {
    let server = Server::start(Fake::new(1, false), Arc::new(JobMetrics::new())).await;
    let mut args = SavepointArgs {
        admin: server.addr.clone(),
        wait: false,
        timeout: 10,
    };
    let mut out = Vec::new();
    run_savepoint(&args, &mut out).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "1\n");
    // Let savepoint 1 finish, then take one more and wait for its path.
    client::wait_savepoint(&server.addr, 1, Duration::from_secs(5))
        .await
        .unwrap();
    args.wait = true;
    let mut out = Vec::new();
    run_savepoint(&args, &mut out).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "s3://b/ns/job/savepoints/sp-2\n"
    );

    let stop = StopArgs {
        admin: server.addr.clone(),
        savepoint: true,
        no_wait: false,
        timeout: 10,
    };
    let mut out = Vec::new();
    run_stop(&stop, &mut out).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "s3://b/ns/job/savepoints/sp-3\n"
    );
    let e = run_stop(&stop, &mut Vec::new()).await.unwrap_err();
    assert!(e.to_string().contains("409"), "{e}");
    server.shutdown().await;
}

#[test]
fn cli_arguments_parse() {
    use clap::Parser;
    #[derive(clap::Parser)]
    enum Cmd {
        Savepoint(SavepointArgs),
        Stop(StopArgs),
    }
    let Cmd::Savepoint(a) = Cmd::try_parse_from(["t", "savepoint", "--wait"]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (a.admin.as_str(), a.wait, a.timeout),
        (cli::DEFAULT_ADMIN, true, 300)
    );
    let Cmd::Stop(s) =
        Cmd::try_parse_from(["t", "stop", "--admin", "10.0.0.1:9249", "--savepoint"]).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (s.admin.as_str(), s.savepoint, s.no_wait),
        ("10.0.0.1:9249", true, false)
    );
    assert!(Cmd::try_parse_from(["t", "stop", "--no-wait"]).is_err());
}
