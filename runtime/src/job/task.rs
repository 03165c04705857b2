//! The three kinds of task: sources (poll, inject barriers), operators (align barriers,
//! snapshot state) and sinks (pre-commit at barriers, commit when checkpoints complete).

use super::graph::{Graph, NodeId, NodeKind, Route};
use super::router::Outputs;
use super::{Checkpointing, DeadLetters, JobError, instances};
use crate::checkpoint::coordinator::{AckData, Msg as Coord, TaskId};
use crate::exchange::{Envelope, Msg, key_group_range};
use crate::metrics::{JobMetrics, OperatorMetrics, Role};
use crate::operators::{Emit, Keyed, Operator};
use crate::record::BATCH_SIZE;
use crate::state::StateStore;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::mpsc;

pub(super) struct TaskCtx {
    pub graph: Arc<Graph>,
    pub id: NodeId,
    pub worker: usize,
    pub workers: usize,
    pub step: Arc<str>,
    pub dead: Arc<DeadLetters>,
    pub metrics: Arc<super::progress::Metrics>,
    pub job_metrics: Arc<JobMetrics>,
    pub cp: Arc<Checkpointing>,
    /// Watermark alignment of the job's source splits, and this split's slot (sources only).
    pub drift: Option<(Arc<super::drift::Drift>, usize)>,
    /// The units this source's instances share (`connectors::splits`; sources only).
    pub splits: Option<Arc<crate::connectors::splits::Shared>>,
}

impl TaskCtx {
    pub(super) fn emit(&self) -> Emit {
        Emit::new(self.step.clone(), self.graph.nodes[self.id].schema.clone())
    }

    pub(super) fn task(&self) -> TaskId {
        (self.id, self.worker)
    }

    pub(super) fn om(&self, role: Role) -> OperatorMetrics {
        self.job_metrics.operator(&self.step, self.worker, role)
    }

    /// Number of senders on each input port.
    pub(super) fn senders(&self) -> Vec<usize> {
        self.graph.nodes[self.id]
            .inputs
            .iter()
            .map(|i| match i.route {
                Route::Forward => 1,
                Route::Global | Route::Key(_) => instances(&self.graph, i.from, self.workers),
            })
            .collect()
    }

    pub(super) fn tell(&self, msg: Coord) {
        // The coordinator outlives the tasks; a send fails only while the job is torn down.
        let _ = self.cp.coordinator.send(msg);
    }

    pub(super) fn ack(&self, id: u64, data: AckData) {
        self.tell(Coord::Ack {
            id,
            task: self.task(),
            data,
        });
    }
}

pub(super) async fn source_task(ctx: TaskCtx, mut out: Outputs) -> Result<(), JobError> {
    let NodeKind::Source(spec) = &ctx.graph.nodes[ctx.id].kind else {
        return Err(JobError::Task("not a source".into()));
    };
    let mut source = spec.open(ctx.worker, ctx.workers, ctx.splits.as_ref())?;
    if let Some(r) = &ctx.cp.restore
        && let Some(parts) = r.meta.sources.get(&ctx.graph.nodes[ctx.id].name)
    {
        source.resume(parts)?;
    }
    let om = ctx.om(Role::Source);
    let mut trigger = ctx.cp.trigger.clone();
    let mut emit = ctx.emit();
    let mut max_ts = i64::MIN;
    let mut wm = i64::MIN;
    let pace = spec
        .rate
        .map(|r| (r as f64 / ctx.workers as f64).max(0.001));
    // Pacing counts records from `paced_since`, when `paced_from` of them had been produced.
    let mut paced_since = tokio::time::Instant::now();
    let mut paced_from: u64 = 0;
    let mut produced: u64 = 0;
    // `changed()` below marks the value seen, so compare ids rather than ask `has_changed`.
    // Every id is injected, in order, even if several were triggered since the last look:
    // downstream alignment then sees the same sequence of barriers from every sender.
    let mut injected = ctx.cp.first_checkpoint - 1;
    let mut completed = ctx.cp.completed.clone();
    // Positions of checkpoints not known complete yet, for `Source::on_completed`.
    let mut recorded: VecDeque<(u64, serde_json::Value)> = VecDeque::new();
    let mut idle = false;
    // Until something was sent: downstream start gates wait for each sender's first message.
    let mut announced = false;
    let publish = |wm: i64| {
        if let Some((drift, slot)) = &ctx.drift {
            drift.publish(*slot, wm);
        }
    };
    loop {
        let id = *trigger.borrow_and_update();
        while injected < id {
            injected += 1;
            source.barrier(injected);
            let pos = source.position();
            recorded.push_back((injected, pos.clone()));
            if recorded.len() > 16 {
                recorded.pop_front();
            }
            ctx.ack(injected, AckData::Source(pos));
            out.barrier(injected).await?;
            announced = true;
        }
        if completed.has_changed().unwrap_or(false) {
            let done = *completed.borrow_and_update();
            let mut last = None;
            while recorded.front().is_some_and(|(i, _)| *i <= done) {
                last = recorded.pop_front();
            }
            if let Some((_, pos)) = last {
                source.on_completed(&pos);
            }
        }
        if let Some((drift, slot)) = &ctx.drift
            && drift.ahead(*slot)
        {
            // Too far ahead of the slowest split: wait for it, but go round the loop at least
            // every 100 ms (and at once on a checkpoint) to inject barriers.
            tokio::select! {
                _ = drift.moved(*slot, std::time::Duration::from_millis(100)) => {}
                _ = trigger.changed() => {}
            }
            continue;
        }
        emit.reserve(BATCH_SIZE);
        let more = source.poll(&mut emit, BATCH_SIZE)?;
        ctx.dead.write(&mut emit.dead)?;
        let mut polled = 0;
        for b in emit.take() {
            polled += b.len();
            for &t in b.times() {
                max_ts = max_ts.max(t);
            }
            produced += b.len() as u64;
            ctx.metrics.add_in(b.len() as u64);
            om.records_in.inc_by(b.len() as u64);
            om.records_out.inc_by(b.len() as u64);
            out.send(b, &mut emit).await?;
        }
        ctx.dead.write(&mut emit.dead)?;
        match source.watermark() {
            None => {
                let next_wm = max_ts
                    .saturating_sub(spec.out_of_orderness)
                    .saturating_sub(1);
                if next_wm > wm {
                    wm = next_wm;
                    out.watermark(wm).await?;
                    publish(wm);
                }
            }
            Some(crate::exchange::IDLE) => {
                if !idle {
                    idle = true;
                    out.watermark(crate::exchange::IDLE).await?;
                    publish(crate::exchange::IDLE);
                }
            }
            Some(w) => {
                if w > wm || idle {
                    wm = wm.max(w);
                    idle = false;
                    out.watermark(wm).await?;
                    publish(wm);
                }
            }
        }
        if !more {
            break;
        }
        if !announced && polled == 0 {
            // The first poll tells an empty split from one with data. Nothing went out yet:
            // say where this split stands (repeating a status just sent is harmless; sending
            // "active at MIN" after IDLE would not be), so start gates do not wait on it.
            let status = if idle { crate::exchange::IDLE } else { wm };
            out.watermark(status).await?;
        }
        announced = true;
        if polled == 0
            && let Some(wait) = source.backoff()
        {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = trigger.changed() => {}
            }
        } else if let Some(rate) = pace {
            let since = (produced - paced_from) as f64 / rate;
            let mut due = paced_since + std::time::Duration::from_secs_f64(since);
            let now = tokio::time::Instant::now();
            // Time spent stalled (a broker away, an empty topic) is not credit: reading
            // resumes at the rate instead of bursting to catch up with the clock.
            if due + std::time::Duration::from_secs(1) < now {
                (paced_since, paced_from, due) = (now, produced, now);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = trigger.changed() => {
                    // Checked at the top of the loop; a closed trigger just means no more
                    // checkpoints.
                }
            }
        } else {
            tokio::task::yield_now().await;
        }
    }
    publish(i64::MAX);
    out.end().await?;
    ctx.tell(Coord::Finished {
        task: ctx.task(),
        data: AckData::Source(source.position()),
    });
    Ok(())
}

/// Barrier alignment over a task's senders: a sender that delivered barrier n is blocked (its
/// later messages held back) until every live sender delivered it.
///
/// With a start gate (operators), each sender's first message also goes ahead of every other
/// sender's second: a source split with nothing to read ends (or goes idle) before any data
/// is processed, instead of whenever its task happens to be scheduled. Otherwise the input
/// watermark, and so which records are late, would depend on start-up timing.
pub(super) struct Align {
    blocked: Vec<Vec<bool>>,
    ended: Vec<Vec<bool>>,
    /// Senders that have not sent their first message yet (all zero without a start gate).
    unstarted: Vec<Vec<bool>>,
    waiting: usize,
    gate: VecDeque<Envelope>,
    held: VecDeque<Envelope>,
    replay: VecDeque<Envelope>,
    barrier: Option<u64>,
    /// The last barrier aligned.
    done: u64,
}

/// Messages a start gate holds at most (then it opens, see `Align::next`).
const GATE_CAP: usize = 256;

impl Align {
    pub(super) fn new(senders: &[usize], start_gate: bool) -> Align {
        Align {
            blocked: senders.iter().map(|n| vec![false; *n]).collect(),
            ended: senders.iter().map(|n| vec![false; *n]).collect(),
            unstarted: senders.iter().map(|n| vec![start_gate; *n]).collect(),
            waiting: if start_gate { senders.iter().sum() } else { 0 },
            gate: VecDeque::new(),
            held: VecDeque::new(),
            replay: VecDeque::new(),
            barrier: None,
            done: 0,
        }
    }

    pub(super) async fn next(&mut self, inbox: &mut mpsc::Receiver<Envelope>) -> Option<Envelope> {
        loop {
            let env = match self.replay.pop_front() {
                Some(e) => e,
                None => inbox.recv().await?,
            };
            if self.waiting > 0 {
                let unstarted = &mut self.unstarted[env.port as usize][env.from as usize];
                if *unstarted {
                    // A sender's first message goes now, ahead of what others sent later.
                    *unstarted = false;
                    self.waiting -= 1;
                    if self.waiting == 0 {
                        self.open_gate();
                    }
                } else {
                    self.gate.push_back(env);
                    if self.gate.len() >= GATE_CAP {
                        // A sender slow to start (a source waiting for its broker): stop
                        // holding the others rather than buffer without bound; only the
                        // start-up determinism of late-data decisions is lost.
                        tracing::debug!("start gate opened before every sender started");
                        self.waiting = 0;
                        self.open_gate();
                    }
                    continue;
                }
            }
            if self.blocked[env.port as usize][env.from as usize] {
                self.held.push_back(env);
                continue;
            }
            return Some(env);
        }
    }

    /// Releases what the start gate held, in arrival order, ahead of anything else queued.
    fn open_gate(&mut self) {
        let mut replay = std::mem::take(&mut self.gate);
        replay.extend(self.replay.drain(..));
        self.replay = replay;
    }

    /// Records barrier `id` from a sender; true once every live sender delivered it.
    pub(super) fn on_barrier(&mut self, port: usize, from: usize, id: u64) -> bool {
        if id <= self.done {
            // Already snapshotted (cannot happen while every source injects every id in order).
            return false;
        }
        self.barrier = Some(id);
        self.blocked[port][from] = true;
        self.aligned()
    }

    pub(super) fn on_end(&mut self, port: usize, from: usize) -> bool {
        self.ended[port][from] = true;
        self.barrier.is_some() && self.aligned()
    }

    fn aligned(&self) -> bool {
        self.blocked
            .iter()
            .flatten()
            .zip(self.ended.iter().flatten())
            .all(|(b, e)| *b || *e)
    }

    /// Unblocks every sender; held messages go first, in their arrival order.
    pub(super) fn release(&mut self) -> Option<u64> {
        for b in self.blocked.iter_mut().flatten() {
            *b = false;
        }
        let mut replay = std::mem::take(&mut self.held);
        replay.extend(self.replay.drain(..));
        self.replay = replay;
        let id = self.barrier.take();
        self.done = self.done.max(id.unwrap_or(0));
        id
    }
}

/// Opens (or restores) a stateful operator's store.
fn open_state(ctx: &TaskCtx, op: &mut Box<dyn Operator>) -> Result<(u32, u32), JobError> {
    let m = ctx.graph.max_parallelism;
    let range = key_group_range(ctx.worker, ctx.workers, m);
    if !op.stateful() {
        return Ok(range);
    }
    let path = ctx
        .cp
        .state_dir
        .join(format!("{}-{}-w{}", ctx.id, ctx.step, ctx.worker));
    let restored = ctx
        .cp
        .restore
        .as_ref()
        .and_then(|r| r.instances.get(&ctx.task()));
    let store = match restored {
        Some((dirs, _)) => StateStore::restore(&path, range, dirs, &ctx.cp.state),
        None => StateStore::create(&path, range, &ctx.cp.state),
    }
    .map_err(|e| JobError::Task(format!("step `{}`: {e}", ctx.step)))?;
    let route_keys = ctx.graph.nodes[ctx.id]
        .inputs
        .iter()
        .map(|i| match &i.route {
            Route::Key(k) => Some(k.clone()),
            _ => None,
        })
        .collect();
    let keyed = Keyed {
        store,
        max_parallelism: m,
        cache_entries: ctx.cp.state.cache_entries,
        route_keys,
    };
    op.open_state(keyed, restored.map(|(_, wm)| *wm))
        .map_err(|e| JobError::Task(format!("step `{}`: restoring state: {e}", ctx.step)))?;
    Ok(range)
}

fn snapshot(
    ctx: &TaskCtx,
    op: &mut Box<dyn Operator>,
    id: u64,
    range: (u32, u32),
    wm: i64,
) -> Result<AckData, JobError> {
    let fail =
        |e: crate::state::StateError| JobError::Task(format!("step `{}`: snapshot: {e}", ctx.step));
    let Some(store) = op.snapshot().map_err(fail)? else {
        return Ok(AckData::None);
    };
    let dir = ctx
        .cp
        .state_dir
        .join(format!("chk-{id}"))
        .join(format!("{}-w{}", ctx.id, ctx.worker));
    let files = store.checkpoint(&dir).map_err(fail)?;
    Ok(AckData::State {
        operator: ctx.step.to_string(),
        key_groups: range,
        watermark: wm,
        dir,
        files,
    })
}

/// Stops the task when the operator reports a state-store failure, before anything it
/// emitted since reaches a sink.
fn failed(ctx: &TaskCtx, op: &mut Box<dyn Operator>) -> Result<(), JobError> {
    match op.failed() {
        Some(e) => Err(JobError::Task(format!(
            "step `{}`: state store: {e}",
            ctx.step
        ))),
        None => Ok(()),
    }
}

pub(super) async fn operator_task(
    ctx: TaskCtx,
    mut inbox: mpsc::Receiver<Envelope>,
    mut op: Box<dyn Operator>,
    mut out: Outputs,
) -> Result<(), JobError> {
    // A first message right away, before a restore that may take a while, so downstream
    // start gates (see `Align`) never wait on an operator that has nothing to say yet.
    out.watermark(i64::MIN).await?;
    let range = open_state(&ctx, &mut op)?;
    let om = ctx.om(Role::Other);
    let mut emit = ctx.emit();
    if let Some(encoder) = out.sink_encoder() {
        emit.encode_lines(encoder);
    }
    let senders = ctx.senders();
    let mut align = Align::new(&senders, true);
    let mut marks: Vec<Vec<i64>> = senders.iter().map(|n| vec![i64::MIN; *n]).collect();
    let total: usize = senders.iter().sum();
    let mut ended = 0usize;
    let mut current = i64::MIN;
    let mut idle_out = false;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let ticks = op.wants_ticks();
    loop {
        let env = tokio::select! {
            env = align.next(&mut inbox) => env,
            _ = tick.tick(), if ticks => {
                op.on_tick(crate::connectors::now_ms(), &mut emit);
                failed(&ctx, &mut op)?;
                out.flush(&mut emit, &ctx.dead, &ctx.metrics).await?;
                om.records_out.inc_by(emit.take_emitted());
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
        let mut aligned = false;
        match env.msg {
            Msg::Data(batch) => {
                om.records_in.inc_by(batch.len() as u64);
                op.on_batch(port, batch, &mut emit);
                failed(&ctx, &mut op)?;
                out.flush(&mut emit, &ctx.dead, &ctx.metrics).await?;
                om.records_out.inc_by(emit.take_emitted());
            }
            Msg::Partials(p) => {
                om.records_in.inc_by(p.len() as u64);
                op.on_partials(port, p, &mut emit);
                failed(&ctx, &mut op)?;
                out.flush(&mut emit, &ctx.dead, &ctx.metrics).await?;
                om.records_out.inc_by(emit.take_emitted());
            }
            Msg::Encoded { .. } => {
                return Err(JobError::Task(format!(
                    "step `{}` got encoded rows meant for a sink",
                    ctx.step
                )));
            }
            Msg::Watermark(w) => crate::exchange::update_mark(&mut marks[port][from], w),
            Msg::Barrier(id) => aligned = align.on_barrier(port, from, id),
            Msg::End => {
                marks[port][from] = i64::MAX;
                ended += 1;
                aligned = align.on_end(port, from);
            }
        }
        if aligned && let Some(id) = align.release() {
            let wm = op.checkpoint_watermark(current);
            let data = snapshot(&ctx, &mut op, id, range, wm)?;
            ctx.ack(id, data);
            out.barrier(id).await?;
        }
        match crate::exchange::combine_marks(marks.iter().flatten().copied()) {
            Some(min) if min > current => {
                current = min;
                idle_out = false;
                op.on_watermark(current, &mut emit);
                failed(&ctx, &mut op)?;
                out.flush(&mut emit, &ctx.dead, &ctx.metrics).await?;
                om.records_out.inc_by(emit.take_emitted());
                if current != i64::MAX {
                    out.watermark(current).await?;
                }
            }
            Some(_) if idle_out => {
                // Active again without advancing: downstream counts this sender again.
                idle_out = false;
                out.watermark(current).await?;
            }
            Some(_) => {}
            None if !idle_out && ended < total => {
                idle_out = true;
                out.watermark(crate::exchange::IDLE).await?;
            }
            None => {}
        }
        if ended == total {
            out.end().await?;
            ctx.tell(Coord::Finished {
                task: ctx.task(),
                data: AckData::None,
            });
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wm(from: u32, w: i64) -> Envelope {
        Envelope {
            port: 0,
            from,
            msg: Msg::Watermark(w),
        }
    }

    fn order(got: &[Envelope]) -> Vec<(u32, i64)> {
        got.iter()
            .map(|e| match e.msg {
                Msg::Watermark(w) => (e.from, w),
                _ => (e.from, -1),
            })
            .collect()
    }

    async fn drain(
        align: &mut Align,
        rx: &mut mpsc::Receiver<Envelope>,
        n: usize,
    ) -> Vec<Envelope> {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(align.next(rx).await.expect("message"));
        }
        got
    }

    #[tokio::test]
    async fn start_gate_lets_every_first_message_ahead_keeping_each_senders_order() {
        let (tx, mut rx) = mpsc::channel(16);
        for e in [wm(0, 1), wm(0, 2), wm(0, 3), wm(1, 10), wm(1, 11), wm(0, 4)] {
            tx.send(e).await.expect("send");
        }
        let mut align = Align::new(&[2], true);
        let got = drain(&mut align, &mut rx, 6).await;
        // Sender 1's first message overtakes sender 0's later ones; each sender's own
        // messages stay in order.
        assert_eq!(
            order(&got),
            vec![(0, 1), (1, 10), (0, 2), (0, 3), (1, 11), (0, 4)]
        );
        // Without the gate, arrival order.
        for e in [wm(0, 1), wm(0, 2), wm(1, 10)] {
            tx.send(e).await.expect("send");
        }
        let mut plain = Align::new(&[2], false);
        assert_eq!(
            order(&drain(&mut plain, &mut rx, 3).await),
            vec![(0, 1), (0, 2), (1, 10)]
        );
    }

    #[tokio::test]
    async fn start_gate_opens_when_full_rather_than_buffer_without_bound() {
        let n = GATE_CAP + 10;
        let (tx, mut rx) = mpsc::channel(n + 1);
        for i in 0..n as i64 {
            tx.send(wm(0, i)).await.expect("send");
        }
        let mut align = Align::new(&[2], true);
        // Sender 1 never starts, yet everything from sender 0 comes through, in order.
        let got = drain(&mut align, &mut rx, n).await;
        assert_eq!(
            order(&got),
            (0..n as i64).map(|i| (0, i)).collect::<Vec<_>>()
        );
    }
}
