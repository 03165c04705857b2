//! Windowed inner join: records of the left and right inputs with equal keys in the same
//! (tumbling or sliding) window are paired when the window fires; a late record within the
//! allowed lateness is paired at once with what the other side holds, so every pair is
//! emitted exactly once.

use super::{Emit, Operator};
use crate::job::graph::JoinSpec;
use crate::record::{Batch, Schema, Value};
use crate::state::codec::{Reader, put_u64, put_value, put_values};
use crate::state::{StateError, StateStore, kg_prefix, window_prefix};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type Key = Value;
type Rows = Vec<Box<[Value]>>;

#[derive(Default)]
struct Pane {
    fired: bool,
    keys: HashMap<Key, [Rows; 2], foldhash::fast::RandomState>,
}

pub struct Join {
    spec: Arc<JoinSpec>,
    inputs: [Arc<Schema>; 2],
    has_late_output: bool,
    wm: i64,
    panes: BTreeMap<(i64, i64), Pane>,
    win_buf: Vec<(i64, i64)>,
    state: Option<super::Keyed>,
}

/// Stored join state: `kg | 3 | end | start | key` -> fired byte, then each side's row count
/// and rows. Buffers are rewritten whole at each snapshot (they are not incremental).
const JOIN: u8 = 3;

impl Join {
    pub fn new(
        spec: Arc<JoinSpec>,
        left: Arc<Schema>,
        right: Arc<Schema>,
        has_late_output: bool,
    ) -> Join {
        Join {
            spec,
            inputs: [left, right],
            has_late_output,
            wm: i64::MIN,
            panes: BTreeMap::new(),
            win_buf: Vec::new(),
            state: None,
        }
    }

    fn emit_pair(
        spec: &JoinSpec,
        schemas: &[Arc<Schema>; 2],
        out: &mut Emit,
        start: i64,
        end: i64,
        l: &[Value],
        r: &[Value],
    ) {
        let mut row = Vec::with_capacity(spec.select.len() + 2);
        row.push(Value::Int(start));
        row.push(Value::Int(end));
        for e in &spec.select {
            match e.eval_value(&[l, r]) {
                Ok(v) => row.push(v),
                Err(err) => {
                    let mut rec = String::from("{\"left\":");
                    crate::record::row_json(&schemas[0], l, &mut rec);
                    rec.push_str(",\"right\":");
                    crate::record::row_json(&schemas[1], r, &mut rec);
                    rec.push('}');
                    out.dead_raw(rec, format!("join.select: {err}"));
                    return;
                }
            }
        }
        out.push(row, end - 1);
    }
}

impl Operator for Join {
    fn on_batch(&mut self, port: usize, batch: Batch, out: &mut Emit) {
        let spec = self.spec.clone();
        let key_expr = if port == 0 {
            &spec.left_key
        } else {
            &spec.right_key
        };
        let input = self.inputs[port].clone();
        for (row, ts) in batch.rows() {
            let key = match key_expr.eval_value(&[row]) {
                Ok(v) => v,
                Err(e) => {
                    out.dead_row(&input, row, format!("join key: {e}"));
                    continue;
                }
            };
            self.win_buf.clear();
            let buf = &mut self.win_buf;
            spec.window.assign(ts, |s, e| buf.push((s, e)));
            let mut any = false;
            for &(start, end) in &self.win_buf {
                if spec.window.is_late(end, self.wm) {
                    continue;
                }
                any = true;
                let wm = self.wm;
                let pane = self.panes.entry((end, start)).or_insert_with(|| Pane {
                    fired: end - 1 <= wm,
                    ..Pane::default()
                });
                let sides = pane.keys.entry(key.clone()).or_default();
                if pane.fired {
                    for other in &sides[1 - port] {
                        let (l, r) = if port == 0 {
                            (row, &other[..])
                        } else {
                            (&other[..], row)
                        };
                        Self::emit_pair(&spec, &self.inputs, out, start, end, l, r);
                    }
                }
                sides[port].push(row.into());
            }
            if !any {
                out.late_row(&input, row, ts, self.has_late_output);
            }
        }
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Emit) {
        self.wm = self.wm.max(wm);
        let spec = self.spec.clone();
        let mut done = Vec::new();
        for (&(end, start), pane) in self
            .panes
            .range_mut(..=(self.wm.saturating_add(1), i64::MAX))
        {
            if !pane.fired {
                for [left, right] in pane.keys.values() {
                    for l in left {
                        for r in right {
                            Self::emit_pair(&spec, &self.inputs, out, start, end, l, r);
                        }
                    }
                }
                pane.fired = true;
            }
            if spec.window.is_late(end, self.wm) {
                done.push((end, start));
            }
        }
        for k in done {
            self.panes.remove(&k);
        }
    }

    fn stateful(&self) -> bool {
        true
    }

    fn open_state(&mut self, store: super::Keyed, restored: Option<i64>) -> Result<(), StateError> {
        if let Some(wm) = restored {
            self.wm = wm;
            let widths = [self.inputs[0].len(), self.inputs[1].len()];
            for kg in store.store.range.0..=store.store.range.1 {
                let p = kg_prefix(kg);
                for item in store.store.scan(&[p[0], p[1], JOIN]) {
                    let (k, v) = item?;
                    let mut r = Reader::new(&k[3..]);
                    let (end, start) = (r.ordered_i64()?, r.ordered_i64()?);
                    let key = r.value()?;
                    let mut r = Reader::new(&v);
                    let fired = r.u8()? != 0;
                    let pane = self.panes.entry((end, start)).or_default();
                    pane.fired |= fired;
                    let sides = pane.keys.entry(key).or_default();
                    for (side, width) in widths.iter().enumerate() {
                        for _ in 0..r.u64()? {
                            sides[side].push(r.values(*width)?.into_boxed_slice());
                        }
                    }
                }
            }
        }
        self.state = Some(store);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<&StateStore>, StateError> {
        let Some(st) = &self.state else {
            return Ok(None);
        };
        st.clear_tag(JOIN)?;
        let mut batch = rocksdb::WriteBatch::default();
        let mut kb = Vec::new();
        for (&(end, start), pane) in &self.panes {
            for (key, sides) in &pane.keys {
                kb.clear();
                put_value(key, &mut kb);
                let mut k = window_prefix(st.kg(&kb), JOIN, end, start);
                k.extend_from_slice(&kb);
                let mut v = vec![u8::from(pane.fired)];
                for rows in sides {
                    put_u64(rows.len() as u64, &mut v);
                    for row in rows {
                        put_values(row, &mut v);
                    }
                }
                batch.put(k, v);
                st.store.write_when_full(&mut batch)?;
            }
        }
        st.store.write(batch)?;
        Ok(Some(&st.store))
    }
}
