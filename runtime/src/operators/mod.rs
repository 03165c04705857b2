//! Operators: each turns input batches and watermarks into output batches behind the small
//! [`Operator`] trait, so the task that runs them (`job`) knows nothing of what they compute.

pub mod aggregate;
pub mod combiner;
pub mod join;
mod join_rows;
mod join_store;
mod session;
mod slice_map;
pub mod stateless;
pub mod top;
pub mod window;
pub mod window_agg;
mod window_store;

use crate::record::{BATCH_SIZE, Batch, Schema, Value, row_json};
use crate::state::{StateError, StateStore};
use std::sync::Arc;

/// A record that could not be processed, with why; written to the dead-letter output.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub step: Arc<str>,
    pub reason: String,
    /// The record as JSON (or the raw input line when it did not parse).
    pub record: String,
}

/// Where an operator puts what it produces during one call.
pub struct Emit {
    step: Arc<str>,
    schema: Arc<Schema>,
    cur: Batch,
    pub ready: Vec<Batch>,
    pub late: Vec<Batch>,
    pub dead: Vec<DeadLetter>,
    /// Late records dropped because the step has no late output.
    pub dropped_late: u64,
    /// Rows emitted since `take_emitted`.
    emitted: u64,
    /// Set when the step's only consumer is a sink: see `encode_lines`.
    lines: Option<Lines>,
}

/// Rows encoded as JSON lines as they are emitted, a few dozen at a time.
struct Lines {
    encoder: crate::record::JsonLines,
    /// The chunk being filled.
    buf: Vec<u8>,
    rows: usize,
    ready: Vec<(Vec<u8>, usize)>,
    /// The last chunk's size: a new chunk starts that big instead of doubling its way up.
    hint: usize,
}

/// Rows gathered before they are encoded in lines mode: few enough to stay in L1.
const LINES_ROWS: usize = 64;

impl Emit {
    pub fn new(step: Arc<str>, schema: Arc<Schema>) -> Emit {
        let cur = Batch::with_capacity(schema.clone(), 0);
        Emit {
            step,
            schema,
            cur,
            ready: Vec::new(),
            late: Vec::new(),
            dead: Vec::new(),
            dropped_late: 0,
            emitted: 0,
            lines: None,
        }
    }

    /// Encodes rows as JSON lines as they come (taken with `take_lines`) instead of
    /// gathering them into batches: for a step whose only consumer is a sink, which wants
    /// nothing else. Building a batch of result values, moving it and dropping it cost as
    /// much as encoding it.
    pub fn encode_lines(&mut self, encoder: crate::record::JsonLines) {
        self.flush();
        self.lines = Some(Lines {
            encoder,
            buf: Vec::new(),
            rows: 0,
            ready: Vec::new(),
            hint: 0,
        });
    }

    /// Rows emitted since the last call.
    pub fn take_emitted(&mut self) -> u64 {
        std::mem::take(&mut self.emitted)
    }

    /// Takes the encoded chunks ready to send, with their row counts (lines mode).
    pub fn take_lines(&mut self) -> Vec<(Vec<u8>, usize)> {
        self.flush();
        match &mut self.lines {
            Some(l) => std::mem::take(&mut l.ready),
            None => Vec::new(),
        }
    }

    /// Lines mode: encodes the gathered rows into the current chunk; with `close`, or once
    /// the chunk holds a batch's worth of rows, makes it ready.
    fn encode_cur(&mut self, close: bool) {
        let Some(l) = &mut self.lines else {
            return;
        };
        if !self.cur.is_empty() {
            if l.buf.capacity() == 0 {
                // Room for the last full chunk and an eighth more: chunks vary with their
                // keys' lengths, and growing one copies it.
                l.buf.reserve(l.hint + l.hint / 8);
            }
            l.encoder.encode(&self.cur, &mut l.buf);
            l.rows += self.cur.len();
            self.cur.clear();
        }
        if l.rows > 0 && (close || l.rows >= BATCH_SIZE) {
            let mut chunk = std::mem::take(&mut l.buf);
            if l.rows >= BATCH_SIZE {
                l.hint = chunk.len();
            } else if chunk.capacity() > 2 * chunk.len() + 4096 {
                // A few rows flushed by a watermark: do not ship a full chunk's allocation.
                chunk.shrink_to_fit();
            }
            l.ready.push((chunk, l.rows));
            l.rows = 0;
        }
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Emits a whole batch (after flushing rows pushed one by one, to keep order).
    pub fn batch(&mut self, b: Batch) {
        self.flush();
        self.emitted += b.len() as u64;
        if self.lines.is_some() {
            self.cur = b;
            self.encode_cur(true);
            self.cur = Batch::new(self.schema.clone());
            return;
        }
        if !b.is_empty() {
            self.ready.push(b);
        }
    }

    pub fn push(&mut self, row: impl IntoIterator<Item = Value>, time: i64) {
        if self.cur.is_empty() {
            // Start each batch with room for a good share of rows: growing a batch row by row
            // copies it several times.
            self.cur.reserve(BATCH_SIZE / 4);
        }
        self.cur.push(row, time);
        self.pushed();
    }

    #[inline]
    fn pushed(&mut self) {
        self.emitted += 1;
        if self.lines.is_some() {
            if self.cur.len() >= LINES_ROWS {
                self.encode_cur(false);
            }
        } else if self.cur.len() >= BATCH_SIZE {
            self.flush();
        }
    }

    /// Pushes a row written in place (see `Batch::push_with`).
    #[inline]
    pub fn push_with(&mut self, fill: impl FnOnce(&mut Vec<Value>) -> i64) {
        if self.cur.is_empty() {
            self.cur.reserve(BATCH_SIZE / 4);
        }
        self.cur.push_with(fill);
        self.pushed();
    }

    /// Pushes a row written in place, unless `fill` refuses it (see `Batch::try_push_with`).
    #[inline]
    pub fn try_push_with(
        &mut self,
        fill: impl FnOnce(&mut Vec<Value>) -> Option<i64>,
    ) -> Option<i64> {
        if self.cur.is_empty() {
            self.cur.reserve(BATCH_SIZE / 4);
        }
        let t = self.cur.try_push_with(fill)?;
        self.pushed();
        Some(t)
    }

    /// Room for `rows` more rows in the batch being built (sources know their batch size).
    pub fn reserve(&mut self, rows: usize) {
        self.cur.reserve(rows);
    }

    pub fn flush(&mut self) {
        if self.lines.is_some() {
            self.encode_cur(true);
            return;
        }
        if !self.cur.is_empty() {
            let full = std::mem::replace(&mut self.cur, Batch::new(self.schema.clone()));
            self.ready.push(full);
        }
    }

    /// Takes everything ready to send.
    pub fn take(&mut self) -> Vec<Batch> {
        self.flush();
        std::mem::take(&mut self.ready)
    }

    pub fn dead_row(&mut self, schema: &Schema, row: &[Value], reason: impl Into<String>) {
        let mut record = String::new();
        row_json(schema, row, &mut record);
        self.dead.push(DeadLetter {
            step: self.step.clone(),
            reason: reason.into(),
            record,
        });
    }

    pub fn dead_raw(&mut self, record: String, reason: impl Into<String>) {
        self.dead.push(DeadLetter {
            step: self.step.clone(),
            reason: reason.into(),
            record,
        });
    }

    /// A record too late for any window: to the late output if there is one, else counted.
    pub fn late_row(&mut self, schema: &Arc<Schema>, row: &[Value], time: i64, has_output: bool) {
        if !has_output {
            self.dropped_late += 1;
            return;
        }
        match self.late.last_mut() {
            Some(b) if b.len() < BATCH_SIZE => b.push_slice(row, time),
            _ => {
                let mut b = Batch::with_capacity(schema.clone(), 16);
                b.push_slice(row, time);
                self.late.push(b);
            }
        }
    }
}

/// One operator instance on one worker.
pub trait Operator: Send {
    /// Records arriving on input `port`.
    fn on_batch(&mut self, port: usize, batch: Batch, out: &mut Emit);
    /// Partial aggregates from a sender's combiner on input `port` (window steps only).
    fn on_partials(&mut self, _port: usize, p: combiner::Partials, out: &mut Emit) {
        out.dead_raw(
            String::new(),
            format!(
                "{} partial aggregates reached a step that does not aggregate",
                p.len()
            ),
        );
    }
    /// The minimum watermark over all inputs advanced to `wm` (`i64::MAX` at end of input).
    fn on_watermark(&mut self, wm: i64, out: &mut Emit);
    /// Wall-clock tick for processing-time windows, in ms since the epoch.
    fn on_tick(&mut self, _now: i64, _out: &mut Emit) {}
    /// Whether `on_tick` must be called periodically.
    fn wants_ticks(&self) -> bool {
        false
    }
    /// The watermark to record with a snapshot, given the task's input watermark: what the
    /// operator gets back on restore. Processing-time windows record their own clock, which
    /// is what decides what they have fired.
    fn checkpoint_watermark(&self, input: i64) -> i64 {
        input
    }
    /// Whether this operator keeps keyed state (and so gets a state store).
    fn stateful(&self) -> bool {
        false
    }
    /// Hands the operator its store; with `restored`, loads the state found there, which
    /// was taken at watermark `wm`.
    fn open_state(&mut self, _store: Keyed, _restored: Option<i64>) -> Result<(), StateError> {
        Ok(())
    }
    /// Writes everything the store lacks, so a checkpoint of the store holds the whole state.
    fn snapshot(&mut self) -> Result<Option<&StateStore>, StateError> {
        Ok(None)
    }
    /// A state-store failure that left the operator's state or output in doubt: the task
    /// stops with it, and the job restores from its last checkpoint.
    fn failed(&mut self) -> Option<StateError> {
        None
    }
}

/// A stateful operator instance's store, with what it needs to place keys in key groups.
pub struct Keyed {
    pub store: StateStore,
    pub max_parallelism: u32,
    /// The instance keeps at most this many entries in memory before spilling.
    pub cache_entries: usize,
    /// Key expressions of each input port (the route's `keyBy`), for operators that buffer
    /// rows rather than keys.
    pub route_keys: Vec<Option<Arc<Vec<crate::expr::Compiled>>>>,
}

impl Keyed {
    /// The key group of canonical key bytes.
    pub fn kg(&self, key_bytes: &[u8]) -> u32 {
        crate::exchange::key_group(key_bytes, self.max_parallelism)
    }

    /// Deletes every entry of state kind `tag` in this instance's key groups.
    pub fn clear_tag(&self, tag: u8) -> Result<(), StateError> {
        let mut b = rocksdb::WriteBatch::default();
        for kg in self.store.range.0..=self.store.range.1 {
            let p = crate::state::kg_prefix(kg);
            b.delete_range([p[0], p[1], tag], [p[0], p[1], tag + 1]);
        }
        self.store.write(b)
    }

    /// The key group of `row` by the route keys of `port` (0 when the input is not keyed).
    pub fn kg_of_row(&self, port: usize, row: &[Value], buf: &mut Vec<u8>) -> u32 {
        buf.clear();
        let Some(Some(keys)) = self.route_keys.get(port) else {
            return 0;
        };
        for k in keys.iter() {
            match k.eval(&[row]) {
                Ok(v) => crate::exchange::canonical_bytes(&v, buf),
                Err(_) => buf.push(0),
            }
        }
        self.kg(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{JsonLines, Type, encode_string};

    /// Lines mode writes exactly what encoding the batches of batch mode would, in the same
    /// order, across row pushes, whole batches and flushes, and counts every row.
    #[test]
    fn lines_mode_equals_encoded_batches() {
        let schema = Arc::new(Schema::new([("k", Type::String), ("n", Type::Int)]));
        let drive = |emit: &mut Emit| {
            for i in 0..3000i64 {
                match i % 7 {
                    0 => emit.push([Value::from(format!("k{i}").as_str()), Value::Int(i)], i),
                    1 if i % 5 == 0 => {
                        let mut b = Batch::new(schema.clone());
                        b.push([Value::from("whole"), Value::Int(-i)], i);
                        emit.batch(b);
                    }
                    2 if i % 11 == 0 => emit.flush(),
                    _ => emit.push_with(|v| {
                        v.push(Value::from("\"quoted\""));
                        v.push(Value::Int(i / 100));
                        i
                    }),
                }
            }
        };
        let mut batches = Emit::new("s".into(), schema.clone());
        drive(&mut batches);
        let expected: String = batches.take().iter().map(encode_string).collect();

        let mut lines = Emit::new("s".into(), schema.clone());
        lines.encode_lines(JsonLines::new(&schema));
        drive(&mut lines);
        let chunks = lines.take_lines();
        assert!(lines.take().is_empty());
        let rows: usize = chunks.iter().map(|(_, n)| n).sum();
        let got: Vec<u8> = chunks.into_iter().flat_map(|(b, _)| b).collect();
        assert_eq!(String::from_utf8(got).expect("utf-8"), expected);
        assert_eq!(rows, expected.lines().count());
        assert_eq!(lines.take_emitted(), rows as u64);
        assert_eq!(batches.take_emitted(), rows as u64);
    }
}
