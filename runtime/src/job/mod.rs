//! Runs a compiled [`Graph`]: one task per operator instance per worker, wired through an
//! [`Exchange`]. Tasks exchange batches, watermarks and end-of-input; a node's watermark is
//! the minimum over all its senders, and the job ends when every sink has seen every sender
//! end.

pub mod drift;
pub mod graph;
mod lanes;
pub use lanes::Pinning;
pub mod launch;
pub mod progress;
mod router;
pub mod sink;
mod task;

use crate::connectors::sink::LineSink;
use crate::connectors::{ConnectorError, SinkSpec};
use crate::exchange::LocalExchange;
use crate::operators::join::Join;
use crate::operators::stateless::{Filter, Map, Split};
use crate::operators::top::Top;
use crate::operators::window_agg::WindowAgg;
use crate::operators::{DeadLetter, Emit, Operator};
use graph::{Graph, NodeId, NodeKind};
use progress::Metrics;
use router::Outputs;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JobError {
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    #[error("step `{step}` stopped: its downstream ended early")]
    Disconnected { step: String },
    #[error("task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub parallelism: usize,
    /// Batches buffered per operator instance inbox.
    pub channel_capacity: usize,
    /// Where dead letters go (default: stderr).
    pub dead_letter: Option<SinkSpec>,
    /// Threads running the workers' tasks (see `lanes`); `None`: one per worker, at most one
    /// per CPU.
    pub threads: Option<usize>,
    /// Whether each of those threads is pinned to a CPU (see `lanes`).
    pub pinning: lanes::Pinning,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            parallelism: 1,
            channel_capacity: 16,
            dead_letter: None,
            threads: None,
            pinning: lanes::Pinning::default(),
        }
    }
}

/// A restored checkpoint, downloaded and ready for the tasks.
pub struct Restore {
    pub meta: crate::checkpoint::Metadata,
    /// (node, worker) -> database directories of the old instances overlapping its key
    /// groups, and the lowest of their watermarks.
    pub instances: std::collections::HashMap<(NodeId, usize), (Vec<std::path::PathBuf>, i64)>,
}

/// What tasks share for checkpoints, state and restore.
pub struct Checkpointing {
    pub coordinator: tokio::sync::mpsc::UnboundedSender<crate::checkpoint::coordinator::Msg>,
    pub trigger: tokio::sync::watch::Receiver<u64>,
    pub completed: tokio::sync::watch::Receiver<u64>,
    /// Local directory for state stores and checkpoint staging.
    pub state_dir: std::path::PathBuf,
    pub state: crate::state::StateOptions,
    pub restore: Option<Restore>,
    /// File sinks commit per checkpoint (checkpoints are on).
    pub exactly_once: bool,
    /// Id of this run's first checkpoint.
    pub first_checkpoint: u64,
}

/// The dead-letter output shared by all tasks; dead letters are rare, so a mutex is fine.
pub struct DeadLetters {
    out: Mutex<Option<LineSink>>,
    metrics: Arc<Metrics>,
    job_metrics: Arc<crate::metrics::JobMetrics>,
}

impl DeadLetters {
    fn write(&self, dead: &mut Vec<DeadLetter>) -> Result<(), ConnectorError> {
        if dead.is_empty() {
            return Ok(());
        }
        self.metrics.add_dead(dead.len() as u64);
        self.job_metrics.dead_letters(dead.len() as u64);
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(sink) => {
                for d in dead.iter() {
                    sink.write_dead(d)?;
                }
                // Written through at once: a checkpoint taken after these records must not
                // outlive them in a buffer a crash would lose. Dead letters are rare.
                crate::connectors::Sink::finish(sink)?;
            }
            None => {
                for d in dead.iter() {
                    tracing::warn!(step = %d.step, reason = %d.reason, record = %d.record, "dead letter");
                }
            }
        }
        dead.clear();
        Ok(())
    }
}

fn instances(graph: &Graph, id: NodeId, workers: usize) -> usize {
    if graph.nodes[id].single { 1 } else { workers }
}

/// Runs the graph to completion (bounded sources), or until the coordinator says stop
/// (returns `Ok(false)` then).
pub async fn run(
    graph: Arc<Graph>,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    job_metrics: Arc<crate::metrics::JobMetrics>,
    cp: Arc<Checkpointing>,
    mut stop: tokio::sync::watch::Receiver<crate::checkpoint::coordinator::Outcome>,
) -> Result<bool, JobError> {
    let workers = opts.parallelism.max(1);
    let mut all = Vec::new();
    for (id, node) in graph.nodes.iter().enumerate() {
        if !matches!(node.kind, NodeKind::Source(_)) {
            for w in 0..instances(&graph, id, workers) {
                all.push((id, w));
            }
        }
    }
    let (exchange, mut inboxes) = LocalExchange::new(all, opts.channel_capacity);
    let dead_out = match &opts.dead_letter {
        Some(spec) => Some(LineSink::open_append(spec)?),
        None => None,
    };
    let dead = Arc::new(DeadLetters {
        out: Mutex::new(dead_out),
        metrics: metrics.clone(),
        job_metrics: job_metrics.clone(),
    });
    let threads = opts.threads.unwrap_or_else(|| default_threads(workers));
    let lanes = lanes::Lanes::start(threads, opts.pinning)
        .map_err(|e| JobError::Task(format!("starting worker threads: {e}")))?;
    // Alignment groups the splits of one event-time source (Flink aligns the groups a user
    // names): sources of different time domains, or processing-time ones, never wait on
    // each other.
    let mut slots = HashMap::new();
    for (id, node) in graph.nodes.iter().enumerate() {
        if let NodeKind::Source(spec) = &node.kind
            && !matches!(spec.time, crate::connectors::TimeField::Processing)
        {
            let n = instances(&graph, id, workers);
            let group = Arc::new(drift::Drift::new(n, graph.max_drift));
            for w in 0..n {
                slots.insert((id, w), (group.clone(), w));
            }
        }
    }
    // Units of a generator's index space, shared by the source's instances and resumed once
    // from all their positions (`connectors::splits`).
    let mut splits = HashMap::new();
    for (id, node) in graph.nodes.iter().enumerate() {
        if let NodeKind::Source(spec) = &node.kind {
            let restored = cp
                .restore
                .as_ref()
                .and_then(|r| r.meta.sources.get(&node.name))
                .map(Vec::as_slice);
            if let Some(d) = spec.splits(restored)? {
                splits.insert(id, d);
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (id, node) in graph.nodes.iter().enumerate() {
        for w in 0..instances(&graph, id, workers) {
            let outputs = Outputs::new(&graph, id, w, workers, &exchange);
            let step: Arc<str> = node.name.as_str().into();
            let ctx = task::TaskCtx {
                graph: graph.clone(),
                id,
                worker: w,
                workers,
                step,
                dead: dead.clone(),
                metrics: metrics.clone(),
                job_metrics: job_metrics.clone(),
                cp: cp.clone(),
                drift: slots.get(&(id, w)).cloned(),
                splits: splits.get(&id).cloned(),
            };
            match &node.kind {
                NodeKind::Source(_) => {
                    tasks.spawn_on(task::source_task(ctx, outputs), lanes.of(w));
                }
                NodeKind::Sink(_) => {
                    let inbox = inboxes
                        .remove(&(id, w))
                        .ok_or_else(|| JobError::Task("missing inbox".into()))?;
                    tasks.spawn_on(sink::sink_task(ctx, inbox), lanes.of(w));
                }
                _ => {
                    let inbox = inboxes
                        .remove(&(id, w))
                        .ok_or_else(|| JobError::Task("missing inbox".into()))?;
                    let op = make_operator(&graph, id);
                    tasks.spawn_on(task::operator_task(ctx, inbox, op, outputs), lanes.of(w));
                }
            }
        }
    }
    drop(exchange);
    let mut first: Option<JobError> = None;
    loop {
        let res = tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => r,
                None => break,
            },
            Ok(()) = stop.changed() => {
                if *stop.borrow() == crate::checkpoint::coordinator::Outcome::Stop {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Ok(false);
                }
                continue;
            }
        };
        let err = match res {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) if e.is_cancelled() => continue,
            Err(e) => JobError::Task(e.to_string()),
        };
        // A disconnect is the echo of another task's failure; keep the root cause.
        let replace = match &first {
            None => true,
            Some(JobError::Disconnected { .. }) => !matches!(err, JobError::Disconnected { .. }),
            Some(_) => false,
        };
        if replace {
            first = Some(err);
        }
        tasks.abort_all();
    }
    match first {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// One thread per worker, at most one per CPU: with more threads than workers, every
/// hand-off between a job's tasks woke an idle thread on the other core (a seventh of a keyed
/// count's CPU at parallelism 1, for no gain in throughput).
pub fn default_threads(parallelism: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    parallelism.clamp(1, cpus.max(1))
}

fn make_operator(graph: &Arc<Graph>, id: NodeId) -> Box<dyn Operator> {
    let node = &graph.nodes[id];
    let input_schema =
        |port: usize| graph.nodes[node.inputs[port].from].schema_for(node.inputs[port].late);
    let has_late = graph.has_late_consumer(id);
    match &node.kind {
        NodeKind::Filter(f) => Box::new(Filter::new(f.clone())),
        NodeKind::Map(m) => Box::new(Map::new(m.clone(), node.schema.clone())),
        NodeKind::Split(s) => Box::new(Split::new(s.clone(), node.schema.clone())),
        NodeKind::Window(w) => Box::new(WindowAgg::new(w.clone(), input_schema(0), has_late)),
        NodeKind::Top(t) => Box::new(Top::new(t.clone(), input_schema(0))),
        NodeKind::Join(j) => Box::new(Join::new(
            j.clone(),
            input_schema(0),
            input_schema(1),
            has_late,
        )),
        NodeKind::Late => Box::new(Passthrough),
        NodeKind::Source(_) | NodeKind::Sink(_) => Box::new(Passthrough),
    }
}

struct Passthrough;

impl Operator for Passthrough {
    fn on_batch(&mut self, _port: usize, batch: crate::record::Batch, out: &mut Emit) {
        out.batch(batch);
    }
    fn on_watermark(&mut self, _wm: i64, _out: &mut Emit) {}
}
