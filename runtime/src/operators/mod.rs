//! Operators: each turns input batches and watermarks into output batches behind the small
//! [`Operator`] trait, so the task that runs them (`job`) knows nothing of what they compute.

pub mod aggregate;
pub mod join;
pub mod stateless;
pub mod top;
pub mod window;
pub mod window_agg;

use crate::record::{BATCH_SIZE, Batch, Schema, Value, row_json};
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
}

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
        }
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Emits a whole batch (after flushing rows pushed one by one, to keep order).
    pub fn batch(&mut self, b: Batch) {
        self.flush();
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
        if self.cur.len() >= BATCH_SIZE {
            self.flush();
        }
    }

    /// Room for `rows` more rows in the batch being built (sources know their batch size).
    pub fn reserve(&mut self, rows: usize) {
        self.cur.reserve(rows);
    }

    pub fn flush(&mut self) {
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
    /// The minimum watermark over all inputs advanced to `wm` (`i64::MAX` at end of input).
    fn on_watermark(&mut self, wm: i64, out: &mut Emit);
    /// Wall-clock tick for processing-time windows, in ms since the epoch.
    fn on_tick(&mut self, _now: i64, _out: &mut Emit) {}
    /// Whether `on_tick` must be called periodically.
    fn wants_ticks(&self) -> bool {
        false
    }
}
