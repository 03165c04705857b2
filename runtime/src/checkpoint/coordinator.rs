//! The checkpoint coordinator: triggers checkpoint n at every source (which injects barrier
//! n), collects every task's acknowledgement, uploads state, writes `_metadata.json` last, and
//! then tells sinks to commit. One checkpoint is in flight at a time; one that fails or times
//! out is counted and the next interval tries again, while processing goes on.

use super::storage::{CheckpointStorage, chk_dir};
use super::{InstanceState, Metadata, OperatorShape, WorkerManifest};
use crate::admin::{
    AdminError, CheckpointInfo, JobControl, JobInfo, JobState, SavepointState, SavepointStatus,
};
use crate::connectors::now_ms;
use crate::metrics::JobMetrics;
use crate::state::LocalFile;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A task instance: (node, worker).
pub type TaskId = (usize, usize);

/// What a task contributes to a checkpoint.
#[derive(Debug)]
pub enum AckData {
    Source(serde_json::Value),
    State {
        operator: String,
        key_groups: (u32, u32),
        watermark: i64,
        dir: PathBuf,
        files: Vec<LocalFile>,
    },
    Sink(serde_json::Value),
    /// A sink whose pre-committed results are files the checkpoint must store (Kafka
    /// exactly-once). A finished sink's files stay in place: later checkpoints store them too.
    SinkFiles {
        state: serde_json::Value,
        key_groups: (u32, u32),
        dir: PathBuf,
        files: Vec<LocalFile>,
    },
    None,
}

#[derive(Debug)]
pub enum Msg {
    Ack {
        id: u64,
        task: TaskId,
        data: AckData,
    },
    /// The task ended; `data` stands for it in every later checkpoint.
    Finished {
        task: TaskId,
        data: AckData,
    },
    Savepoint {
        id: u64,
    },
    /// A sink committed everything up to checkpoint `id`.
    Committed {
        task: TaskId,
        id: u64,
    },
    Stop {
        savepoint: Option<u64>,
    },
}

/// Settings of a checkpointed run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Option<Duration>,
    pub timeout: Duration,
    pub retain: usize,
    pub job: String,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub operators: Vec<OperatorShape>,
    pub node_names: Vec<String>,
    pub tasks: usize,
    /// Sink instances, which report their commits.
    pub sinks: usize,
    /// Id of this run's first checkpoint (after every id already in the store).
    pub first_id: u64,
    /// A random id of this run, so state files of different runs never collide.
    pub run_id: String,
}

/// The job's control surface for the admin API, shared with the coordinator.
pub struct Control {
    pub tx: mpsc::UnboundedSender<Msg>,
    pub metrics: Arc<JobMetrics>,
    pub started: Instant,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub ready: AtomicBool,
    pub finished: AtomicBool,
    pub stopping: AtomicBool,
    next_savepoint: Mutex<u64>,
    pub savepoints: Mutex<BTreeMap<u64, SavepointStatus>>,
    pub last: Mutex<Option<CheckpointInfo>>,
    pub checkpointing: bool,
}

impl Control {
    pub fn new(
        tx: mpsc::UnboundedSender<Msg>,
        metrics: Arc<JobMetrics>,
        parallelism: usize,
        max_parallelism: u32,
        checkpointing: bool,
    ) -> Control {
        Control {
            tx,
            metrics,
            started: Instant::now(),
            parallelism,
            max_parallelism,
            ready: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            next_savepoint: Mutex::new(1),
            savepoints: Mutex::new(BTreeMap::new()),
            last: Mutex::new(None),
            checkpointing,
        }
    }

    fn pending_savepoint(&self) -> Option<u64> {
        let sp = self.savepoints.lock().unwrap_or_else(|p| p.into_inner());
        sp.values()
            .find(|s| s.state == SavepointState::Pending)
            .map(|s| s.id)
    }

    fn new_savepoint(&self) -> Result<u64, AdminError> {
        if !self.checkpointing {
            return Err(AdminError::Unavailable(
                "savepoints need a checkpoint store: start the job with --checkpoint-dir".into(),
            ));
        }
        if self.finished.load(Ordering::Relaxed) {
            return Err(AdminError::NotRunning("finished".into()));
        }
        if let Some(id) = self.pending_savepoint() {
            return Err(AdminError::SavepointInProgress(id));
        }
        let mut n = self
            .next_savepoint
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let id = *n;
        *n += 1;
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                SavepointStatus {
                    id,
                    state: SavepointState::Pending,
                    path: None,
                    error: None,
                },
            );
        Ok(id)
    }

    fn set_savepoint(
        &self,
        id: u64,
        state: SavepointState,
        path: Option<String>,
        error: Option<String>,
    ) {
        let mut sp = self.savepoints.lock().unwrap_or_else(|p| p.into_inner());
        sp.insert(
            id,
            SavepointStatus {
                id,
                state,
                path,
                error,
            },
        );
    }
}

impl JobControl for Control {
    fn info(&self) -> JobInfo {
        let state = if self.finished.load(Ordering::Relaxed) {
            JobState::Finished
        } else if self.stopping.load(Ordering::Relaxed) {
            JobState::Stopping
        } else if self.pending_savepoint().is_some() {
            JobState::Savepointing
        } else {
            JobState::Running
        };
        JobInfo {
            state,
            parallelism: self.parallelism,
            max_parallelism: self.max_parallelism as usize,
            last_checkpoint: self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            records_in: self.metrics.total_in(),
            records_out: self.metrics.total_out(),
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn trigger_savepoint(&self) -> Result<u64, AdminError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(AdminError::NotRunning("stopping".into()));
        }
        let id = self.new_savepoint()?;
        self.tx
            .send(Msg::Savepoint { id })
            .map_err(|_| AdminError::NotRunning("finished".into()))?;
        Ok(id)
    }

    fn savepoint(&self, id: u64) -> Option<SavepointStatus> {
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn stop(&self, savepoint: bool) -> Result<Option<u64>, AdminError> {
        if self.finished.load(Ordering::Relaxed) {
            return Err(AdminError::NotRunning("finished".into()));
        }
        if self.stopping.swap(true, Ordering::Relaxed) {
            return Err(AdminError::NotRunning("stopping".into()));
        }
        let id = if savepoint {
            match self.new_savepoint() {
                Ok(id) => Some(id),
                Err(e) => {
                    self.stopping.store(false, Ordering::Relaxed);
                    return Err(e);
                }
            }
        } else {
            None
        };
        self.tx
            .send(Msg::Stop { savepoint: id })
            .map_err(|_| AdminError::NotRunning("finished".into()))?;
        Ok(id)
    }
}

struct InFlight {
    id: u64,
    started: Instant,
    savepoint: Option<u64>,
    acks: HashMap<TaskId, AckData>,
}

/// How the run should end, as the coordinator decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// Stop now (after the final savepoint, if one was asked for).
    Stop,
}

pub struct Coordinator {
    pub settings: Settings,
    pub storage: Option<Arc<CheckpointStorage>>,
    pub control: Arc<Control>,
    pub rx: mpsc::UnboundedReceiver<Msg>,
    /// Latest checkpoint id the sources should inject.
    pub trigger: watch::Sender<u64>,
    /// Latest completed checkpoint id, for sinks to commit.
    pub completed: watch::Sender<u64>,
    /// Set when the job must stop (a stop request).
    pub outcome: watch::Sender<Outcome>,
}

impl Coordinator {
    /// Runs until every task finished (then writes the final checkpoint) or a stop completes.
    pub async fn run(mut self) {
        let mut next_id = self.settings.first_id;
        let mut finished: HashMap<TaskId, AckData> = HashMap::new();
        let mut flight: Option<InFlight> = None;
        let mut committed: HashMap<TaskId, u64> = HashMap::new();
        let mut queued_savepoint: Option<u64> = None;
        let mut stop_after: Option<Option<u64>> = None;
        let period = self
            .settings
            .interval
            .unwrap_or(Duration::from_secs(3600 * 24 * 365));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(Duration::from_millis(200));
        loop {
            let mut start: Option<Option<u64>> = None;
            tokio::select! {
                _ = tick.tick(), if self.settings.interval.is_some() && self.storage.is_some() => {
                    if flight.is_none() {
                        start = Some(None);
                    }
                }
                _ = poll.tick() => {}
                msg = self.rx.recv() => match msg {
                    None => return,
                    Some(Msg::Ack { id, task, data }) => {
                        tracing::debug!(id, ?task, "checkpoint acknowledged");
                        if let Some(f) = flight.as_mut().filter(|f| f.id == id) {
                            f.acks.insert(task, data);
                        } else {
                            discard(data);
                        }
                    }
                    Some(Msg::Finished { task, data }) => {
                        finished.insert(task, data);
                    }
                    Some(Msg::Savepoint { id }) => queued_savepoint = Some(id),
                    Some(Msg::Committed { task, id }) => {
                        committed.insert(task, id);
                    }
                    Some(Msg::Stop { savepoint }) => {
                        match savepoint {
                            Some(id) => {
                                queued_savepoint = Some(id);
                                stop_after = Some(Some(id));
                            }
                            None => {
                                let _ = self.outcome.send(Outcome::Stop);
                                return;
                            }
                        }
                    }
                }
            }
            if flight.is_none()
                && start.is_none()
                && let Some(sp) = queued_savepoint.take()
            {
                start = Some(Some(sp));
            }
            if finished.len() == self.settings.tasks {
                if let Some(f) = flight.take() {
                    discard_all(f.acks);
                }
                self.finish(next_id, finished, queued_savepoint).await;
                return;
            }
            if let Some(savepoint) = start {
                let id = next_id;
                next_id += 1;
                tracing::debug!(id, ?savepoint, "triggering checkpoint");
                flight = Some(InFlight {
                    id,
                    started: Instant::now(),
                    savepoint,
                    acks: HashMap::new(),
                });
                let _ = self.trigger.send(id);
            }
            let Some(f) = flight.as_ref() else { continue };
            let have = self.settings.tasks;
            let acked = f.acks.len() + finished.keys().filter(|t| !f.acks.contains_key(t)).count();
            if acked >= have {
                let Some(f) = flight.take() else { continue };
                let savepoint = f.savepoint;
                let result = self.complete(f, &finished).await;
                if let Some(sp) = savepoint {
                    match &result {
                        Ok(path) => {
                            tracing::info!(id = sp, path = %path, "savepoint completed");
                            self.control.set_savepoint(
                                sp,
                                SavepointState::Completed,
                                Some(path.clone()),
                                None,
                            )
                        }
                        Err(e) => self.control.set_savepoint(
                            sp,
                            SavepointState::Failed,
                            None,
                            Some(e.to_string()),
                        ),
                    }
                    if stop_after == Some(Some(sp)) {
                        if result.is_ok() {
                            self.await_commits(&mut committed, next_id - 1).await;
                            let _ = self.outcome.send(Outcome::Stop);
                            return;
                        }
                        // The final savepoint failed: keep running, and say so.
                        self.control.stopping.store(false, Ordering::Relaxed);
                        stop_after = None;
                    }
                }
            } else if f.started.elapsed() > self.settings.timeout {
                let Some(f) = flight.take() else { continue };
                tracing::warn!(
                    id = f.id,
                    acked,
                    expected = have,
                    "checkpoint timed out; the next interval tries again"
                );
                self.control.metrics.checkpoint_failed();
                if let Some(sp) = f.savepoint {
                    // Try the savepoint again with the next checkpoint.
                    queued_savepoint = Some(sp);
                }
                discard_all(f.acks);
            }
        }
    }

    /// Before stopping after a savepoint: waits (a while) until every sink committed it, so the
    /// output holds everything the savepoint covers.
    async fn await_commits(&mut self, committed: &mut HashMap<TaskId, u64>, id: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while committed.values().filter(|c| **c >= id).count() < self.settings.sinks {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Msg::Committed { task, id })) => {
                    committed.insert(task, id);
                }
                Ok(Some(Msg::Finished { task, .. })) => {
                    committed.insert(task, u64::MAX);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        id,
                        "stopping before every sink committed the savepoint; a restore from it completes the commit"
                    );
                    return;
                }
            }
        }
    }

    /// Uploads a fully acknowledged checkpoint and commits it; returns its path.
    async fn complete(
        &mut self,
        f: InFlight,
        finished: &HashMap<TaskId, AckData>,
    ) -> Result<String, super::CheckpointError> {
        let Some(storage) = self.storage.clone() else {
            discard_all(f.acks);
            return Err(super::CheckpointError::Incompatible(
                "no checkpoint storage".into(),
            ));
        };
        let id = f.id;
        let dir = chk_dir(id);
        tracing::info!(id, "uploading checkpoint");
        let mut meta = self.metadata(id, f.savepoint.is_some(), false);
        let mut workers: BTreeMap<usize, WorkerManifest> = BTreeMap::new();
        let mut uploaded = 0;
        let mut state_bytes = 0;
        let mut result = Ok(());
        let mut dirs = Vec::new();
        let late = finished.iter().filter(|(t, _)| !f.acks.contains_key(t));
        for ((node, worker), data) in f.acks.iter().chain(late) {
            let (operator, key_groups, watermark, local, files) = match data {
                AckData::State {
                    operator,
                    key_groups,
                    watermark,
                    dir,
                    files,
                } => (operator.clone(), *key_groups, *watermark, dir, files),
                AckData::SinkFiles {
                    key_groups,
                    dir,
                    files,
                    ..
                } => {
                    self.record(&mut meta, (*node, *worker), data);
                    let name = self.node_name(*node);
                    (name, *key_groups, i64::MIN, dir, files)
                }
                other => {
                    self.record(&mut meta, (*node, *worker), other);
                    continue;
                }
            };
            if f.acks.contains_key(&(*node, *worker)) {
                dirs.push(local.clone());
            }
            if result.is_err() {
                continue;
            }
            let instance = format!("{node}-{operator}-w{worker}");
            match storage
                .upload_instance(&instance, files, &dir, &self.settings.run_id)
                .await
            {
                Ok((refs, up)) => {
                    uploaded += up;
                    state_bytes += refs.iter().map(|r| r.size).sum::<u64>();
                    workers
                        .entry(*worker)
                        .or_insert_with(|| WorkerManifest {
                            worker: *worker,
                            instances: Vec::new(),
                        })
                        .instances
                        .push(InstanceState {
                            operator,
                            worker: *worker,
                            key_groups,
                            watermark,
                            files: refs,
                        });
                }
                Err(e) => result = Err(e),
            }
        }
        for d in dirs {
            let _ = tokio::fs::remove_dir_all(&d).await;
        }
        if let Err(e) = result {
            tracing::warn!(id, error = %e, "checkpoint upload failed; the next interval tries again");
            self.control.metrics.checkpoint_failed();
            return Err(e);
        }
        meta.state_bytes = state_bytes;
        meta.uploaded_bytes = uploaded;
        let manifests: Vec<WorkerManifest> = workers.into_values().collect();
        if let Err(e) = storage.commit(&dir, &manifests, &mut meta).await {
            tracing::warn!(id, error = %e, "writing checkpoint metadata failed; the next interval tries again");
            self.control.metrics.checkpoint_failed();
            return Err(e);
        }
        let elapsed = f.started.elapsed();
        self.control
            .metrics
            .checkpoint_completed(id, elapsed, uploaded, state_bytes);
        *self.control.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(CheckpointInfo {
            id,
            path: format!("{}/{dir}", storage.display),
            time_ms: now_ms(),
            duration_ms: elapsed.as_millis() as u64,
            bytes: uploaded,
        });
        tracing::info!(
            id,
            ms = elapsed.as_millis() as u64,
            uploaded,
            state_bytes,
            "checkpoint completed"
        );
        let _ = self.completed.send(id);
        let mut path = format!("{}/{dir}", storage.display);
        if f.savepoint.is_some() {
            let sp = format!("savepoints/sp-{id:010}-{}", now_ms() / 1000);
            storage.savepoint_from(&dir, &sp).await?;
            path = format!("{}/{sp}", storage.display);
        }
        if let Err(e) = storage.retain(self.settings.retain).await {
            tracing::warn!(error = %e, "deleting old checkpoints failed");
        }
        Ok(path)
    }

    fn metadata(&self, id: u64, savepoint: bool, finished: bool) -> Metadata {
        Metadata {
            version: 1,
            id,
            savepoint,
            job: self.settings.job.clone(),
            time_ms: now_ms(),
            parallelism: self.settings.parallelism,
            max_parallelism: self.settings.max_parallelism,
            operators: self.settings.operators.clone(),
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            manifests: Vec::new(),
            finished,
            state_bytes: 0,
            uploaded_bytes: 0,
        }
    }

    fn node_name(&self, node: usize) -> String {
        self.settings
            .node_names
            .get(node)
            .cloned()
            .unwrap_or_default()
    }

    fn record(&self, meta: &mut Metadata, (node, worker): TaskId, data: &AckData) {
        let name = self.node_name(node);
        match data {
            AckData::Source(pos) => {
                let v = meta.sources.entry(name).or_default();
                if v.len() <= worker {
                    v.resize(worker + 1, serde_json::Value::Null);
                }
                v[worker] = pos.clone();
            }
            AckData::Sink(state) | AckData::SinkFiles { state, .. } => {
                meta.sinks.insert(name, state.clone());
            }
            _ => {}
        }
    }

    /// Every task ended: records the final positions and committed outputs, so running the
    /// job again finds it finished instead of replaying it.
    async fn finish(
        &mut self,
        id: u64,
        finished: HashMap<TaskId, AckData>,
        savepoint: Option<u64>,
    ) {
        self.control.finished.store(true, Ordering::Relaxed);
        if let Some(sp) = savepoint {
            self.control.set_savepoint(
                sp,
                SavepointState::Failed,
                None,
                Some("the job finished first".into()),
            );
        }
        let Some(storage) = self.storage.clone() else {
            return;
        };
        let mut meta = self.metadata(id, false, true);
        let dir = chk_dir(id);
        let mut manifests: BTreeMap<usize, WorkerManifest> = BTreeMap::new();
        for (&(node, worker), data) in &finished {
            self.record(&mut meta, (node, worker), data);
            // Results a sink pre-committed at its end are stored like any checkpoint's, so a
            // crash before it commits them loses nothing.
            if let AckData::SinkFiles {
                key_groups, files, ..
            } = data
            {
                let name = self.node_name(node);
                let instance = format!("{node}-{name}-w{worker}");
                match storage
                    .upload_instance(&instance, files, &dir, &self.settings.run_id)
                    .await
                {
                    Ok((refs, _)) => manifests
                        .entry(worker)
                        .or_insert_with(|| WorkerManifest {
                            worker,
                            instances: Vec::new(),
                        })
                        .instances
                        .push(InstanceState {
                            operator: name,
                            worker,
                            key_groups: *key_groups,
                            watermark: i64::MIN,
                            files: refs,
                        }),
                    Err(e) => {
                        tracing::warn!(error = %e, "storing the final checkpoint failed");
                        return;
                    }
                }
            }
        }
        let manifests: Vec<WorkerManifest> = manifests.into_values().collect();
        match storage.commit(&dir, &manifests, &mut meta).await {
            Ok(()) => {
                tracing::info!(id, "final checkpoint written: the job is finished");
                let _ = self.completed.send(id);
                if let Err(e) = storage.retain(self.settings.retain).await {
                    tracing::warn!(error = %e, "deleting old checkpoints failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "writing the final checkpoint failed"),
        }
    }
}

fn discard(data: AckData) {
    if let AckData::State { dir, .. } | AckData::SinkFiles { dir, .. } = data {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn discard_all(acks: HashMap<TaskId, AckData>) {
    for (_, d) in acks {
        discard(d);
    }
}
