//! Runs a compiled [`Graph`]: one task per operator instance per worker, wired through an
//! [`Exchange`]. Tasks exchange batches, watermarks and end-of-input; a node's watermark is
//! the minimum over all its senders, and the job ends when every sink has seen every sender
//! end.

pub mod graph;
pub mod progress;
mod router;

use crate::connectors::sink::{LineSink, Sink as _};
use crate::connectors::{ConnectorError, SinkSpec};
use crate::exchange::{Envelope, LocalExchange, Msg};
use crate::operators::join::Join;
use crate::operators::stateless::{Filter, Map, Split};
use crate::operators::top::Top;
use crate::operators::window_agg::WindowAgg;
use crate::operators::{DeadLetter, Emit, Operator};
use crate::record::BATCH_SIZE;
use graph::{Graph, NodeId, NodeKind, Route};
use progress::Metrics;
use router::Outputs;
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::mpsc;

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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            parallelism: 1,
            channel_capacity: 16,
            dead_letter: None,
        }
    }
}

/// The dead-letter output shared by all tasks; dead letters are rare, so a mutex is fine.
pub struct DeadLetters {
    out: Mutex<Option<LineSink>>,
    metrics: Arc<Metrics>,
}

impl DeadLetters {
    fn write(&self, dead: &mut Vec<DeadLetter>) -> Result<(), ConnectorError> {
        if dead.is_empty() {
            return Ok(());
        }
        self.metrics.add_dead(dead.len() as u64);
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(sink) => {
                for d in dead.iter() {
                    sink.write_dead(d)?;
                }
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

/// Runs the graph to completion (bounded sources) or until `stop` resolves.
pub async fn run(
    graph: Arc<Graph>,
    opts: RunOptions,
    metrics: Arc<Metrics>,
) -> Result<(), JobError> {
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
        Some(spec) => Some(LineSink::open(spec)?),
        None => None,
    };
    let dead = Arc::new(DeadLetters {
        out: Mutex::new(dead_out),
        metrics: metrics.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (id, node) in graph.nodes.iter().enumerate() {
        for w in 0..instances(&graph, id, workers) {
            let outputs = Outputs::new(&graph, id, w, workers, &exchange);
            let step: Arc<str> = node.name.as_str().into();
            let ctx = TaskCtx {
                graph: graph.clone(),
                id,
                worker: w,
                workers,
                step,
                dead: dead.clone(),
                metrics: metrics.clone(),
            };
            match &node.kind {
                NodeKind::Source(_) => {
                    tasks.spawn(source_task(ctx, outputs));
                }
                NodeKind::Sink(_) => {
                    let inbox = inboxes
                        .remove(&(id, w))
                        .ok_or_else(|| JobError::Task("missing inbox".into()))?;
                    tasks.spawn(sink_task(ctx, inbox));
                }
                _ => {
                    let inbox = inboxes
                        .remove(&(id, w))
                        .ok_or_else(|| JobError::Task("missing inbox".into()))?;
                    let op = make_operator(&graph, id);
                    tasks.spawn(operator_task(ctx, inbox, op, outputs));
                }
            }
        }
    }
    drop(exchange);
    let mut first: Option<JobError> = None;
    while let Some(res) = tasks.join_next().await {
        let err = match res {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
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
        None => Ok(()),
    }
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

struct TaskCtx {
    graph: Arc<Graph>,
    id: NodeId,
    worker: usize,
    workers: usize,
    step: Arc<str>,
    dead: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
}

impl TaskCtx {
    fn emit(&self) -> Emit {
        Emit::new(self.step.clone(), self.graph.nodes[self.id].schema.clone())
    }

    /// Number of senders on each input port.
    fn senders(&self) -> Vec<usize> {
        self.graph.nodes[self.id]
            .inputs
            .iter()
            .map(|i| match i.route {
                Route::Forward => 1,
                Route::Global | Route::Key(_) => instances(&self.graph, i.from, self.workers),
            })
            .collect()
    }
}

async fn source_task(ctx: TaskCtx, mut out: Outputs) -> Result<(), JobError> {
    let NodeKind::Source(spec) = &ctx.graph.nodes[ctx.id].kind else {
        return Err(JobError::Task("not a source".into()));
    };
    let mut source = spec.open(ctx.worker, ctx.workers)?;
    let mut emit = ctx.emit();
    let mut max_ts = i64::MIN;
    let mut wm = i64::MIN;
    let pace = spec
        .rate
        .map(|r| (r as f64 / ctx.workers as f64).max(0.001));
    let started = tokio::time::Instant::now();
    let mut produced: u64 = 0;
    loop {
        emit.reserve(BATCH_SIZE);
        let more = source.poll(&mut emit, BATCH_SIZE)?;
        ctx.dead.write(&mut emit.dead)?;
        for b in emit.take() {
            for &t in b.times() {
                max_ts = max_ts.max(t);
            }
            produced += b.len() as u64;
            ctx.metrics.add_in(b.len() as u64);
            out.send(b, &mut emit).await?;
        }
        ctx.dead.write(&mut emit.dead)?;
        let next_wm = max_ts
            .saturating_sub(spec.out_of_orderness)
            .saturating_sub(1);
        if next_wm > wm {
            wm = next_wm;
            out.watermark(wm).await?;
        }
        if !more {
            break;
        }
        if let Some(rate) = pace {
            let due = started + std::time::Duration::from_secs_f64(produced as f64 / rate);
            tokio::time::sleep_until(due).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    out.end().await
}

async fn operator_task(
    ctx: TaskCtx,
    mut inbox: mpsc::Receiver<Envelope>,
    mut op: Box<dyn Operator>,
    mut out: Outputs,
) -> Result<(), JobError> {
    let mut emit = ctx.emit();
    let senders = ctx.senders();
    let mut marks: Vec<Vec<i64>> = senders.iter().map(|n| vec![i64::MIN; *n]).collect();
    let total: usize = senders.iter().sum();
    let mut ended = 0usize;
    let mut current = i64::MIN;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let ticks = op.wants_ticks();
    loop {
        let env = tokio::select! {
            env = inbox.recv() => env,
            _ = tick.tick(), if ticks => {
                op.on_tick(crate::connectors::now_ms(), &mut emit);
                out.flush(&mut emit, &ctx.dead, &ctx.metrics).await?;
                continue;
            }
        };
        let Some(env) = env else {
            return Err(JobError::Task(format!(
                "step `{}` lost its inputs",
                ctx.step
            )));
        };
        let port = env.port as usize;
        let from = env.from as usize;
        match env.msg {
            Msg::Data(batch) => {
                op.on_batch(port, batch, &mut emit);
                out.flush(&mut emit, &ctx.dead, &ctx.metrics).await?;
            }
            Msg::Encoded { .. } => {
                return Err(JobError::Task(format!(
                    "step `{}` got encoded rows meant for a sink",
                    ctx.step
                )));
            }
            Msg::Watermark(w) => marks[port][from] = marks[port][from].max(w),
            Msg::End => {
                marks[port][from] = i64::MAX;
                ended += 1;
            }
        }
        let min = marks.iter().flatten().copied().min().unwrap_or(i64::MAX);
        if min > current {
            current = min;
            op.on_watermark(current, &mut emit);
            out.flush(&mut emit, &ctx.dead, &ctx.metrics).await?;
            if current != i64::MAX {
                out.watermark(current).await?;
            }
        }
        if ended == total {
            return out.end().await;
        }
    }
}

async fn sink_task(ctx: TaskCtx, mut inbox: mpsc::Receiver<Envelope>) -> Result<(), JobError> {
    let NodeKind::Sink(spec) = &ctx.graph.nodes[ctx.id].kind else {
        return Err(JobError::Task("not a sink".into()));
    };
    let mut sink = LineSink::open(spec)?;
    let senders = ctx.senders();
    let total: usize = senders.iter().sum();
    let mut marks = vec![i64::MIN; total];
    let slot = ctx.metrics.sink_slot();
    let mut ended = 0;
    while ended < total {
        let Some(env) = inbox.recv().await else {
            return Err(JobError::Task(format!(
                "sink `{}` lost its inputs",
                ctx.step
            )));
        };
        match env.msg {
            Msg::Data(b) => {
                sink.write(&b)?;
                ctx.metrics.add_out(b.len() as u64);
            }
            Msg::Encoded { lines, rows } => {
                sink.write_encoded(lines.as_bytes())?;
                ctx.metrics.add_out(rows as u64);
            }
            Msg::Watermark(w) => {
                marks[env.from as usize] = marks[env.from as usize].max(w);
                ctx.metrics
                    .set_watermark(&slot, marks.iter().copied().min().unwrap_or(i64::MIN));
            }
            Msg::End => {
                marks[env.from as usize] = i64::MAX;
                ended += 1;
            }
        }
    }
    sink.finish()?;
    Ok(())
}
