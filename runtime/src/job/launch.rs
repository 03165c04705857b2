//! Starting a job the way `eddy run` does: pick the checkpoint to restore (the one named, or
//! the latest complete one), start the coordinator and the admin API, run, clean up.

use super::graph::Graph;
use super::progress::Metrics;
use super::{Checkpointing, JobError, RunOptions};
use crate::checkpoint::coordinator::{Control, Coordinator, Outcome, Settings};
use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::{CheckpointError, restore, shapes};
use crate::metrics::JobMetrics;
use crate::state::StateOptions;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("{0}")]
    Job(#[from] JobError),
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("admin API on {addr}: {source}")]
    Admin {
        addr: String,
        source: std::io::Error,
    },
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
}

/// Where and how often to checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub dir: String,
    pub namespace: String,
    pub job: String,
    pub interval: Option<Duration>,
    pub timeout: Duration,
    pub retain: usize,
}

#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    pub run: RunOptions,
    pub checkpoints: Option<CheckpointConfig>,
    /// A checkpoint or savepoint directory to start from.
    pub restore: Option<String>,
    /// Local state directory (default: a fresh directory under the system temp dir).
    pub state_dir: Option<PathBuf>,
    pub state: StateOptions,
    /// Address for the admin API (`None`: no API).
    pub admin: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every source ended and every result was committed.
    Finished,
    /// Stopped on request (after a savepoint, if one was asked for).
    Stopped,
    /// The latest checkpoint says the job already finished: nothing ran.
    AlreadyFinished,
}

/// A short id unique to this run, naming what it stages.
pub(crate) fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = xxhash_rust::xxh3::xxh3_64(format!("{t}-{}", std::process::id()).as_bytes());
    format!("{:08x}", h as u32)
}

/// Runs `graph` with checkpoints, restore and the admin API as configured.
pub async fn launch(
    graph: Arc<Graph>,
    opts: LaunchOptions,
    metrics: Arc<Metrics>,
    job_metrics: Arc<JobMetrics>,
) -> Result<Ended, LaunchError> {
    let parallelism = opts.run.parallelism.max(1);
    let (state_dir, temp) = match &opts.state_dir {
        Some(d) => (d.clone(), false),
        None => {
            remove_stale_state_dirs(&std::env::temp_dir());
            (
                std::env::temp_dir().join(format!(
                    "eddy-state-{}-{}",
                    std::process::id(),
                    run_id()
                )),
                true,
            )
        }
    };
    std::fs::create_dir_all(&state_dir).map_err(|source| LaunchError::StateDir {
        path: state_dir.display().to_string(),
        source,
    })?;
    // Removed however the run ends, including when Ctrl-C drops this future.
    let _cleanup = temp.then(|| RemoveOnDrop(state_dir.clone()));
    launch_in(graph, opts, metrics, job_metrics, &state_dir, parallelism).await
}

/// Removes the temporary state directories of runs whose process is gone: a killed run
/// (`kill -9`, OOM) cannot remove its own, and each holds a whole RocksDB state.
fn remove_stale_state_dirs(tmp: &std::path::Path) {
    let Ok(dir) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("eddy-state-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed the state of a run that no longer exists")
                }
                Err(e) => {
                    tracing::debug!(path = %entry.path().display(), error = %e, "could not remove stale state")
                }
            }
        }
    }
}

/// Whether a process with this pid exists (where /proc says so; elsewhere assume it does, so
/// nothing is removed).
fn process_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn launch_in(
    graph: Arc<Graph>,
    opts: LaunchOptions,
    metrics: Arc<Metrics>,
    job_metrics: Arc<JobMetrics>,
    state_dir: &std::path::Path,
    parallelism: usize,
) -> Result<Ended, LaunchError> {
    let storage = match &opts.checkpoints {
        Some(c) => Some(Arc::new(
            CheckpointStorage::open(&c.dir, &c.namespace, &c.job).await?,
        )),
        None => None,
    };
    let restored = match (&opts.restore, &storage) {
        (Some(path), _) => {
            let (from, dir) = CheckpointStorage::for_restore_path(path)?;
            tracing::info!(path = %path, "restoring");
            Some(restore::prepare(&from, &dir, &graph, parallelism, state_dir, false).await?)
        }
        (None, Some(st)) => match restore::latest(st, &graph, parallelism, state_dir).await? {
            Some((dir, r)) => {
                eprintln!("eddy: restoring from {}/{dir}", st.display);
                Some(r)
            }
            None => None,
        },
        (None, None) => None,
    };
    if let Some(r) = &restored {
        if r.meta.finished && opts.restore.is_none() {
            super::sink::recover_finished(&graph, r, state_dir)
                .await
                .map_err(|e| LaunchError::Job(e.into()))?;
            eprintln!(
                "eddy: the job already finished (checkpoint {}); its output is complete. Use a new --checkpoint-dir or --job to run it again.",
                r.meta.id
            );
            return Ok(Ended::AlreadyFinished);
        }
        job_metrics.restored();
    }
    let restored_id = restored.as_ref().map_or(0, |r| r.meta.id);
    let first_id = match &storage {
        Some(st) => st.highest_id().await?.max(restored_id) + 1,
        None => restored_id + 1,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (trigger_tx, trigger_rx) = watch::channel(first_id - 1);
    let (completed_tx, completed_rx) = watch::channel(restored_id);
    let (outcome_tx, outcome_rx) = watch::channel(Outcome::Running);
    let control = Arc::new(Control::new(
        tx.clone(),
        job_metrics.clone(),
        parallelism,
        graph.max_parallelism,
        storage.is_some(),
    ));
    let tasks: usize = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(id, _)| super::instances(&graph, id, parallelism))
        .sum();
    let cfg = opts.checkpoints.clone();
    let settings = Settings {
        interval: cfg.as_ref().and_then(|c| c.interval),
        timeout: cfg.as_ref().map_or(Duration::from_secs(600), |c| c.timeout),
        retain: cfg.as_ref().map_or(3, |c| c.retain.max(1)),
        job: cfg.as_ref().map_or_else(String::new, |c| c.job.clone()),
        parallelism,
        max_parallelism: graph.max_parallelism,
        operators: shapes(&graph),
        node_names: graph.nodes.iter().map(|n| n.name.clone()).collect(),
        tasks,
        sinks: graph
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, super::graph::NodeKind::Sink(_)))
            .count(),
        first_id,
        run_id: run_id(),
    };
    let coordinator = Coordinator {
        settings,
        storage: storage.clone(),
        control: control.clone(),
        rx,
        trigger: trigger_tx,
        completed: completed_tx,
        outcome: outcome_tx,
    };
    let coord = tokio::spawn(coordinator.run());
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = match &opts.admin {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| LaunchError::Admin {
                    addr: addr.clone(),
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| LaunchError::Admin {
                addr: addr.clone(),
                source,
            })?;
            eprintln!("eddy: admin API on http://{local}");
            let c: Arc<dyn crate::admin::JobControl> = control.clone();
            Some(tokio::spawn(crate::admin::serve(
                listener,
                c,
                job_metrics.clone(),
                async move {
                    let _ = admin_stopped.await;
                },
            )))
        }
        None => None,
    };
    let cp = Arc::new(Checkpointing {
        coordinator: tx,
        trigger: trigger_rx,
        completed: completed_rx,
        state_dir: state_dir.to_path_buf(),
        state: opts.state.clone(),
        restore: restored,
        exactly_once: storage.is_some(),
        first_checkpoint: first_id,
    });
    control.ready.store(true, Ordering::Relaxed);
    let result = super::run(
        graph,
        opts.run.clone(),
        metrics,
        job_metrics,
        cp.clone(),
        outcome_rx,
    )
    .await;
    drop(cp);
    let ended = match result {
        Ok(true) => {
            // Let the coordinator write the final checkpoint.
            let _ = coord.await;
            Ended::Finished
        }
        Ok(false) => {
            coord.abort();
            Ended::Stopped
        }
        Err(e) => {
            coord.abort();
            return Err(e.into());
        }
    };
    if let Some(a) = admin {
        // Give `eddy stop --savepoint` a moment to read the final savepoint's path.
        if ended == Ended::Stopped {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let _ = admin_stop.send(());
        let _ = a.await;
    }
    Ok(ended)
}
