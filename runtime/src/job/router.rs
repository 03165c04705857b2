//! A task's outgoing edges: routes each batch to the right instances of each consumer
//! (forward, to the single instance, or by key group) and broadcasts watermarks and ends.

use super::graph::{Graph, NodeId, NodeKind, Route};
use super::progress::Metrics;
use super::{DeadLetters, JobError};
use crate::exchange::{
    Envelope, Exchange, Msg, canonical_bytes, canonical_value_bytes, group_of, key_group, owner,
    short_key_hash,
};
use crate::expr::Compiled;
use crate::operators::Emit;
use crate::operators::combiner::Combiner;
use crate::record::{Batch, JsonLines};
use std::sync::Arc;
use tokio::sync::mpsc::Sender;

struct Edge {
    port: u8,
    /// Sender index the receiver tracks watermarks under: 0 on a forward edge (one sender per
    /// receiver), the worker index otherwise.
    from: u32,
    late: bool,
    route: Route,
    /// Set when the consumer is a sink: batches travel encoded.
    encoder: Option<JsonLines>,
    /// Target instances, by worker index (one entry for forward and single targets).
    targets: Vec<Sender<Envelope>>,
    /// Folds records into partial aggregates before a keyed hop to a window's instances.
    combiner: Option<Combiner>,
    /// Keeps only each window's best rows of a batch before a keyed hop to a top step.
    top: Option<Arc<crate::job::graph::TopSpec>>,
}

pub struct Outputs {
    step: String,
    edges: Vec<Edge>,
    max_parallelism: u32,
    key_buf: Vec<u8>,
    /// Where each row's key bytes end in `key_buf` (`partition`).
    key_ends: Vec<usize>,
    parts: Vec<Batch>,
    owners: Vec<usize>,
}

impl Outputs {
    pub fn new(
        graph: &Graph,
        id: NodeId,
        worker: usize,
        workers: usize,
        exchange: &dyn Exchange,
    ) -> Outputs {
        let mut edges = Vec::new();
        for (consumer, port) in graph.consumers(id) {
            let input = &graph.nodes[consumer].inputs[port];
            let targets = if graph.nodes[consumer].single {
                vec![exchange.endpoint(consumer, 0)]
            } else {
                match input.route {
                    Route::Forward => vec![exchange.endpoint(consumer, worker)],
                    Route::Global => vec![exchange.endpoint(consumer, 0)],
                    Route::Key(_) => (0..workers)
                        .map(|w| exchange.endpoint(consumer, w))
                        .collect(),
                }
            };
            let from = if matches!(input.route, Route::Forward) && !graph.nodes[consumer].single {
                0
            } else {
                worker as u32
            };
            let encoder =
                matches!(&graph.nodes[consumer].kind, NodeKind::Sink(s) if !s.wants_rows())
                    .then(|| JsonLines::new(&graph.nodes[id].schema_for(input.late)));
            let combiner = match (&graph.nodes[consumer].kind, &input.route) {
                // Late records must reach a window's late output whole.
                (NodeKind::Window(spec), Route::Key(_))
                    if targets.len() > 1 && !graph.has_late_consumer(consumer) =>
                {
                    Combiner::for_window(spec)
                }
                _ => None,
            };
            let top = match (&graph.nodes[consumer].kind, &input.route) {
                (NodeKind::Top(spec), Route::Key(_)) if targets.len() > 1 => Some(spec.clone()),
                _ => None,
            };
            edges.push(Edge {
                top,
                combiner,
                encoder,
                port: port as u8,
                from,
                late: input.late,
                route: input.route.clone(),
                targets,
            });
        }
        Outputs {
            step: graph.nodes[id].name.clone(),
            edges,
            max_parallelism: graph.max_parallelism,
            key_buf: Vec::new(),
            key_ends: Vec::new(),
            parts: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// The encoder of the step's one main-output edge when that edge goes to a sink: the
    /// step's rows can then be encoded as they are emitted (`Emit::encode_lines`).
    pub fn sink_encoder(&self) -> Option<JsonLines> {
        let mut main = self.edges.iter().filter(|e| !e.late);
        match (main.next(), main.next()) {
            (Some(e), None) => e.encoder.clone(),
            _ => None,
        }
    }

    fn gone(&self) -> JobError {
        JobError::Disconnected {
            step: self.step.clone(),
        }
    }

    async fn deliver(
        &self,
        target: &Sender<Envelope>,
        port: u8,
        from: u32,
        msg: Msg,
    ) -> Result<(), JobError> {
        target
            .send(Envelope { port, from, msg })
            .await
            .map_err(|_| self.gone())
    }

    /// Sends one batch of the main output (or of the late output) along every matching edge.
    async fn send_stream(
        &mut self,
        batch: Batch,
        late: bool,
        emit: &mut Emit,
    ) -> Result<(), JobError> {
        let matching: Vec<usize> = (0..self.edges.len())
            .filter(|&e| self.edges[e].late == late)
            .collect();
        let Some((&last, rest)) = matching.split_last() else {
            return Ok(());
        };
        for &e in rest {
            self.send_edge(e, batch.clone(), emit).await?;
        }
        self.send_edge(last, batch, emit).await
    }

    async fn send_edge(
        &mut self,
        e: usize,
        mut batch: Batch,
        emit: &mut Emit,
    ) -> Result<(), JobError> {
        let (port, from) = (self.edges[e].port, self.edges[e].from);
        if let Some(spec) = &self.edges[e].top {
            batch = crate::operators::top::best_rows(spec, batch);
            if batch.is_empty() {
                return Ok(());
            }
        }
        if let Some(c) = &mut self.edges[e].combiner {
            let raw = c.add(batch);
            if c.full() {
                self.send_partials(e, None).await?;
            }
            if raw.is_empty() {
                return Ok(());
            }
            batch = raw;
        }
        if let Some(enc) = &self.edges[e].encoder {
            let mut lines = Vec::new();
            enc.encode(&batch, &mut lines);
            let target = self.edges[e].targets[0].clone();
            let rows = batch.len();
            return self
                .deliver(&target, port, from, Msg::Encoded { lines, rows })
                .await;
        }
        let keys = match &self.edges[e].route {
            Route::Key(k) if self.edges[e].targets.len() > 1 => k.clone(),
            _ => {
                let target = self.edges[e].targets[0].clone();
                return self.deliver(&target, port, from, Msg::Data(batch)).await;
            }
        };
        let n = self.edges[e].targets.len();
        if let Some(w) = self.constant_owner(&keys, &batch, n) {
            // A constant key (`keyBy: {all: ...}`): the whole batch has one owner and moves
            // as it is, instead of being hashed and split row by row.
            let target = self.edges[e].targets[w].clone();
            return self.deliver(&target, port, from, Msg::Data(batch)).await;
        }
        self.partition(batch, &keys, n, emit);
        let parts = std::mem::take(&mut self.parts);
        for (w, part) in parts.into_iter().enumerate() {
            if !part.is_empty() {
                let target = self.edges[e].targets[w].clone();
                self.deliver(&target, port, from, Msg::Data(part)).await?;
            }
        }
        Ok(())
    }

    /// The worker owning every row of `batch` when its key reads no field; `None` otherwise,
    /// and when the key fails to evaluate (the row-by-row path then dead-letters each row).
    fn constant_owner(&mut self, keys: &[Compiled], batch: &Batch, n: usize) -> Option<usize> {
        if batch.is_empty() || !keys.iter().all(Compiled::is_constant) {
            return None;
        }
        self.key_buf.clear();
        for k in keys {
            canonical_bytes(&k.eval(&[batch.row(0)]).ok()?, &mut self.key_buf);
        }
        let kg = key_group(&self.key_buf, self.max_parallelism);
        Some(owner(kg, n, self.max_parallelism))
    }

    /// Splits `batch` by owner worker, moving (not cloning) each row into its part.
    fn partition(&mut self, batch: Batch, keys: &Arc<Vec<Compiled>>, n: usize, emit: &mut Emit) {
        // Out of range for `scatter`, which drops such rows (already dead-lettered).
        const DEAD: usize = usize::MAX;
        let mut owners = std::mem::take(&mut self.owners);
        owners.clear();
        let mut counts = vec![0usize; n];
        // A one-field key of a usual value is hashed where it lies (`short_key_hash`); others
        // have their key bytes written first and hashed in a second pass: hashing each key
        // right after writing it loaded words its byte-sized writes had not yet completed (a
        // stalled load per record, a fifth of this function's time).
        const HASHED: usize = usize::MAX - 1;
        let one_field = match keys.as_slice() {
            [k] => k.field.map(|(_, f)| f),
            _ => None,
        };
        let mp = self.max_parallelism;
        let (bytes, ends) = (&mut self.key_buf, &mut self.key_ends);
        bytes.clear();
        ends.clear();
        'rows: for (row, _) in batch.rows() {
            if let Some(h) = one_field.and_then(|f| short_key_hash(&row[f])) {
                let w = owner(group_of(h, mp), n, mp);
                counts[w] += 1;
                owners.push(w);
                ends.push(HASHED);
                continue;
            }
            let start = bytes.len();
            for k in keys.iter() {
                if let Some((_, f)) = k.field {
                    canonical_value_bytes(&row[f], bytes);
                    continue;
                }
                match k.eval(&[row]) {
                    Ok(v) => canonical_bytes(&v, bytes),
                    Err(e) => {
                        emit.dead_row(&batch.schema, row, format!("key: {e}"));
                        bytes.truncate(start);
                        ends.push(DEAD);
                        owners.push(DEAD);
                        continue 'rows;
                    }
                }
            }
            ends.push(bytes.len());
            owners.push(DEAD);
        }
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            if end == DEAD || end == HASHED {
                continue;
            }
            let kg = key_group(&bytes[start..end], mp);
            let w = owner(kg, n, mp);
            start = end;
            counts[w] += 1;
            owners[i] = w;
        }
        self.parts = counts
            .iter()
            .map(|c| Batch::with_capacity(batch.schema.clone(), *c))
            .collect();
        batch.scatter(&owners, &mut self.parts);
        self.owners = owners;
    }

    pub async fn send(&mut self, batch: Batch, emit: &mut Emit) -> Result<(), JobError> {
        self.send_stream(batch, false, emit).await
    }

    /// Sends what an operator emitted (main and late outputs) and writes its dead letters.
    pub async fn flush(
        &mut self,
        emit: &mut Emit,
        dead: &DeadLetters,
        metrics: &Metrics,
    ) -> Result<(), JobError> {
        for b in emit.take() {
            self.send_stream(b, false, emit).await?;
        }
        for (lines, rows) in emit.take_lines() {
            // Only set up when the one main edge is a sink's (`sink_encoder`).
            if let Some(e) = self.edges.iter().find(|e| !e.late) {
                let (port, from, target) = (e.port, e.from, e.targets[0].clone());
                self.deliver(&target, port, from, Msg::Encoded { lines, rows })
                    .await?;
            }
        }
        for b in std::mem::take(&mut emit.late) {
            self.send_stream(b, true, emit).await?;
        }
        if emit.dropped_late > 0 {
            metrics.add_late_dropped(emit.dropped_late);
            emit.dropped_late = 0;
        }
        dead.write(&mut emit.dead)?;
        Ok(())
    }

    /// Sends edge `e`'s combined partials: those a window may fire on watermark `wm`, or
    /// all of them (`None`).
    async fn send_partials(&mut self, e: usize, wm: Option<i64>) -> Result<(), JobError> {
        let n = self.edges[e].targets.len();
        let mp = self.max_parallelism;
        let key_buf = &mut self.key_buf;
        let Some(c) = self.edges[e].combiner.as_mut() else {
            return Ok(());
        };
        let owner_of = |key: &[crate::record::Value]| {
            if let [v] = key
                && let Some(h) = short_key_hash(v)
            {
                return owner(group_of(h, mp), n, mp);
            }
            key_buf.clear();
            for v in key {
                canonical_value_bytes(v, key_buf);
            }
            owner(key_group(key_buf, mp), n, mp)
        };
        let parts = match wm {
            Some(wm) => c.before_watermark(wm, owner_of, n),
            None => c.take_all(owner_of, n),
        };
        let (port, from) = (self.edges[e].port, self.edges[e].from);
        for (w, p) in parts.into_iter().enumerate() {
            if !p.is_empty() {
                let target = self.edges[e].targets[w].clone();
                self.deliver(&target, port, from, Msg::Partials(p)).await?;
            }
        }
        Ok(())
    }

    /// Sends `msg` on every edge, after the partials it must follow: `wm` for a watermark,
    /// everything otherwise.
    async fn broadcast(&mut self, msg: impl Fn() -> Msg, wm: Option<i64>) -> Result<(), JobError> {
        for e in 0..self.edges.len() {
            if self.edges[e].combiner.is_some() {
                self.send_partials(e, wm).await?;
            }
            let edge = &self.edges[e];
            for t in &edge.targets {
                self.deliver(t, edge.port, edge.from, msg()).await?;
            }
        }
        Ok(())
    }

    pub async fn watermark(&mut self, wm: i64) -> Result<(), JobError> {
        self.broadcast(|| Msg::Watermark(wm), Some(wm)).await
    }

    pub async fn barrier(&mut self, id: u64) -> Result<(), JobError> {
        self.broadcast(|| Msg::Barrier(id), None).await
    }

    pub async fn end(&mut self) -> Result<(), JobError> {
        self.broadcast(|| Msg::End, None).await
    }
}
