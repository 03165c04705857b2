//! Windowed inner join: records of the left and right inputs with equal keys in the same
//! (tumbling or sliding) window are paired when the window fires; a late record within the
//! allowed lateness is paired at once with what the other side holds, so every pair is
//! emitted exactly once.

use super::join_store::{self as store, Rows};
use super::{Emit, Operator};
use crate::job::graph::JoinSpec;
use crate::record::{Batch, Schema, Value};
use crate::state::{StateError, StateStore};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

type Key = Value;

/// One key's rows in one window: each side's rows in memory, of which the first `clean[side]`
/// are in the store already.
#[derive(Default)]
struct Buffered {
    rows: [Rows; 2],
    clean: [usize; 2],
}

#[derive(Default)]
struct Pane {
    fired: bool,
    /// Rows went to the store and left memory (a spill, or a restore): the store holds them,
    /// `keys` only what came after.
    spilled: bool,
    keys: HashMap<Key, Buffered, foldhash::fast::RandomState>,
    /// Key groups the store holds rows of this window in.
    stored: BTreeSet<u32>,
    /// Key groups whose "fired" marker is stored.
    marked: BTreeSet<u32>,
}

pub struct Join {
    spec: Arc<JoinSpec>,
    inputs: [Arc<Schema>; 2],
    has_late_output: bool,
    wm: i64,
    panes: BTreeMap<(i64, i64), Pane>,
    win_buf: Vec<(i64, i64)>,
    state: Option<super::Keyed>,
    /// Rows held in memory, bounded by the state cache (`--state-cache-entries`).
    resident: usize,
    /// The next stored row's number.
    seq: u64,
    key_buf: Vec<u8>,
}

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
            resident: 0,
            seq: 0,
            key_buf: Vec::new(),
        }
    }

    fn widths(&self) -> [usize; 2] {
        [self.inputs[0].len(), self.inputs[1].len()]
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

/// Queues the rows of `pane` the store lacks, and its "fired" markers; returns nothing but
/// marks what it queued as clean.
fn write_dirty(
    st: &super::Keyed,
    window: (i64, i64),
    pane: &mut Pane,
    seq: &mut u64,
    batch: &mut rocksdb::WriteBatch,
    buf: &mut Vec<u8>,
) -> Result<(), StateError> {
    let Pane {
        keys,
        stored,
        marked,
        fired,
        ..
    } = pane;
    for (key, b) in keys.iter_mut() {
        let kg = store::key_bytes(st, key, buf);
        for side in 0..2 {
            if b.clean[side] < b.rows[side].len() {
                store::put_rows(
                    batch,
                    (kg, window, buf),
                    side,
                    &b.rows[side][b.clean[side]..],
                    seq,
                );
                b.clean[side] = b.rows[side].len();
                stored.insert(kg);
            }
        }
        st.store.write_when_full(batch)?;
    }
    if *fired {
        for &kg in stored.iter() {
            if marked.insert(kg) {
                store::put_fired(batch, kg, window);
            }
        }
    }
    Ok(())
}

impl Join {
    /// Spills windows, latest first (the furthest from firing), once memory holds more rows
    /// than the cache allows, down to half of it.
    fn bound_memory(&mut self) -> Result<(), StateError> {
        let Some(st) = &self.state else {
            return Ok(());
        };
        if self.resident <= st.cache_entries {
            return Ok(());
        }
        let target = st.cache_entries / 2;
        let mut batch = rocksdb::WriteBatch::default();
        for (&window, pane) in self.panes.iter_mut().rev() {
            if self.resident <= target {
                break;
            }
            if pane.keys.is_empty() {
                continue;
            }
            write_dirty(
                st,
                window,
                pane,
                &mut self.seq,
                &mut batch,
                &mut self.key_buf,
            )?;
            let rows: usize = pane
                .keys
                .values()
                .map(|b| b.rows[0].len() + b.rows[1].len())
                .sum();
            pane.keys.clear();
            pane.spilled = true;
            self.resident -= rows;
        }
        st.store.write(batch)
    }

    /// Pairs a row arriving for fired window `window` with what the other side holds.
    fn pair_late(
        &mut self,
        window: (i64, i64),
        port: usize,
        key: &Value,
        row: &[Value],
        out: &mut Emit,
    ) -> Result<(), StateError> {
        let other = 1 - port;
        let Some(pane) = self.panes.get(&window) else {
            return Ok(());
        };
        let stored = match (&self.state, pane.spilled) {
            (Some(st), true) => {
                let kg = store::key_bytes(st, key, &mut self.key_buf);
                store::load_side(
                    st,
                    (kg, window, &self.key_buf),
                    other,
                    self.inputs[other].len(),
                )?
            }
            _ => Rows::new(),
        };
        // In a spilled window, the rows before `clean` are among the stored ones.
        let fresh = pane.keys.get(key).map_or(&[][..], |b| {
            let from = if pane.spilled { b.clean[other] } else { 0 };
            &b.rows[other][from..]
        });
        let (start, end) = (window.1, window.0);
        for o in stored.iter().chain(fresh) {
            let (l, r) = if port == 0 {
                (row, &o[..])
            } else {
                (&o[..], row)
            };
            Self::emit_pair(&self.spec, &self.inputs, out, start, end, l, r);
        }
        Ok(())
    }

    /// Emits every pair of window `window`, reading back what it spilled.
    fn fire(&self, window: (i64, i64), pane: &Pane, out: &mut Emit) -> Result<(), StateError> {
        let (start, end) = (window.1, window.0);
        let pairs = |l: &[Box<[Value]>], r: &[Box<[Value]>], out: &mut Emit| {
            for a in l {
                for b in r {
                    Self::emit_pair(&self.spec, &self.inputs, out, start, end, a, b);
                }
            }
        };
        match (&self.state, pane.spilled) {
            (Some(st), true) => {
                let mut all = store::load_window(st, window, &pane.stored, self.widths())?;
                for (key, b) in &pane.keys {
                    let sides = all.entry(key.clone()).or_default();
                    for ((to, rows), clean) in sides.iter_mut().zip(&b.rows).zip(b.clean) {
                        to.extend(rows[clean..].iter().cloned());
                    }
                }
                for [l, r] in all.values() {
                    pairs(l, r, out);
                }
            }
            _ => {
                for b in pane.keys.values() {
                    pairs(&b.rows[0], &b.rows[1], out);
                }
            }
        }
        Ok(())
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
        let mut wins = std::mem::take(&mut self.win_buf);
        for (row, ts) in batch.rows() {
            let key = match key_expr.eval_value(&[row]) {
                Ok(v) => v,
                Err(e) => {
                    out.dead_row(&input, row, format!("join key: {e}"));
                    continue;
                }
            };
            wins.clear();
            spec.window.assign(ts, |s, e| wins.push((s, e)));
            let mut any = false;
            for &(start, end) in &wins {
                if spec.window.is_late(end, self.wm) {
                    continue;
                }
                any = true;
                let wm = self.wm;
                let pane = self.panes.entry((end, start)).or_insert_with(|| Pane {
                    fired: end - 1 <= wm,
                    ..Pane::default()
                });
                if pane.fired
                    && let Err(e) = self.pair_late((end, start), port, &key, row, out)
                {
                    out.dead_row(&input, row, format!("state store: {e}"));
                    continue;
                }
                if let Some(pane) = self.panes.get_mut(&(end, start)) {
                    pane.keys.entry(key.clone()).or_default().rows[port].push(row.into());
                    self.resident += 1;
                }
            }
            if !any {
                out.late_row(&input, row, ts, self.has_late_output);
            }
        }
        self.win_buf = wins;
        if let Err(e) = self.bound_memory() {
            out.dead_raw(String::new(), format!("state store: {e}"));
        }
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Emit) {
        self.wm = self.wm.max(wm);
        let due: Vec<(i64, i64)> = self
            .panes
            .range(..=(self.wm.saturating_add(1), i64::MAX))
            .filter(|(_, p)| !p.fired)
            .map(|(&w, _)| w)
            .collect();
        for window in due {
            if let Some(pane) = self.panes.get(&window)
                && let Err(e) = self.fire(window, pane, out)
            {
                out.dead_raw(String::new(), format!("state store: {e}"));
            }
            if let Some(pane) = self.panes.get_mut(&window) {
                pane.fired = true;
            }
        }
        let done: Vec<(i64, i64)> = self
            .panes
            .range(..=(self.wm.saturating_add(1), i64::MAX))
            .filter(|&(&(end, _), _)| self.spec.window.is_late(end, self.wm))
            .map(|(&w, _)| w)
            .collect();
        for window in done {
            let Some(pane) = self.panes.remove(&window) else {
                continue;
            };
            self.resident -= pane
                .keys
                .values()
                .map(|b| b.rows[0].len() + b.rows[1].len())
                .sum::<usize>();
            if let Some(st) = &self.state
                && !(pane.stored.is_empty() && pane.marked.is_empty())
            {
                let kgs: BTreeSet<u32> = pane.stored.union(&pane.marked).copied().collect();
                if let Err(e) = store::drop_window(st, window, &kgs) {
                    out.dead_raw(String::new(), format!("state store: {e}"));
                }
            }
        }
    }

    fn stateful(&self) -> bool {
        true
    }

    fn open_state(&mut self, st: super::Keyed, restored: Option<i64>) -> Result<(), StateError> {
        if let Some(wm) = restored {
            self.wm = wm;
            let (windows, next) = store::restore(&st)?;
            self.seq = next;
            // Everything stays in the store until its window fires or a late row needs it.
            for (window, w) in windows {
                self.panes.insert(
                    window,
                    Pane {
                        fired: !w.fired.is_empty(),
                        spilled: true,
                        stored: w.kgs,
                        marked: w.fired,
                        ..Pane::default()
                    },
                );
            }
        }
        self.state = Some(st);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<&StateStore>, StateError> {
        let Some(st) = &self.state else {
            return Ok(None);
        };
        let mut batch = rocksdb::WriteBatch::default();
        for (&window, pane) in self.panes.iter_mut() {
            write_dirty(
                st,
                window,
                pane,
                &mut self.seq,
                &mut batch,
                &mut self.key_buf,
            )?;
        }
        st.store.write(batch)?;
        Ok(Some(&st.store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::graph::NodeKind;
    use crate::state::{StateOptions, StateStore};

    /// A join of `a` and `b` on `k` in tumbling 10 s windows with 5 s of allowed lateness.
    fn join() -> (Join, Arc<Schema>) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/lines.jsonl");
        let yaml = format!(
            "sources:\n  - {{ name: a, file: {{ path: '{path}', schema: {{ k: int, x: int, ts: int }} }}, eventTime: {{ field: ts }} }}\n  - {{ name: b, file: {{ path: '{path}', schema: {{ k: int, y: int, ts: int }} }}, eventTime: {{ field: ts }} }}\nsteps:\n  - name: j\n    join:\n      left: {{ from: a, key: event.k }}\n      right: {{ from: b, key: event.k }}\n      window: {{ tumbling: 10s, allowedLateness: 5s }}\n      select: {{ k: left.k, x: left.x, y: right.y }}\nsinks:\n  - {{ name: o, from: j, stdout: {{}} }}\n"
        );
        let (_, graph) = crate::plan::compile(&yaml).unwrap_or_else(|e| panic!("{e}"));
        let node = graph
            .nodes
            .iter()
            .find(|n| matches!(n.kind, NodeKind::Join(_)))
            .expect("join node");
        let NodeKind::Join(spec) = &node.kind else {
            unreachable!()
        };
        let input = |p: usize| graph.nodes[node.inputs[p].from].schema_for(false);
        let j = Join::new(spec.clone(), input(0), input(1), false);
        (j, node.schema_for(false))
    }

    fn keyed(dir: &Path, name: &str, cache: usize, from: Option<&Path>) -> super::super::Keyed {
        let opts = StateOptions::default();
        let path = dir.join(name);
        let store = match from {
            Some(cp) => StateStore::restore(&path, (0, 127), &[cp.to_path_buf()], &opts),
            None => StateStore::create(&path, (0, 127), &opts),
        }
        .expect("store");
        super::super::Keyed {
            store,
            max_parallelism: 128,
            cache_entries: cache,
            route_keys: Vec::new(),
        }
    }

    use std::path::Path;

    /// A deterministic stream: rows for both sides over 60 s with 50 keys, a quarter of them
    /// up to 12 s behind (late ones, some beyond the lateness), watermarks every 40 rows.
    enum Step {
        Rows(usize, Vec<(i64, i64, i64)>),
        Watermark(i64),
    }

    fn stream() -> Vec<Step> {
        let mut seed = 11u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut steps = Vec::new();
        let mut max_ts = 0i64;
        for i in 0..2000i64 {
            let ts = i * 30;
            let ts = if next() % 4 == 0 {
                ts - (next() % 12_000) as i64
            } else {
                ts
            };
            max_ts = max_ts.max(ts);
            let side = (next() % 2) as usize;
            steps.push(Step::Rows(side, vec![((next() % 50) as i64, i, ts)]));
            if i % 40 == 39 {
                steps.push(Step::Watermark(max_ts - 1000));
            }
        }
        steps.push(Step::Watermark(i64::MAX - 2));
        steps
    }

    fn feed(j: &mut Join, step: &Step, out: &mut Emit) {
        match step {
            Step::Rows(side, rows) => {
                let schema = j.inputs[*side].clone();
                let mut b = Batch::new(schema.clone());
                for &(k, v, ts) in rows {
                    let row: Vec<Value> = schema
                        .fields
                        .iter()
                        .map(|f| match f.name.as_str() {
                            "k" => Value::Int(k),
                            "ts" => Value::Int(ts),
                            _ => Value::Int(v),
                        })
                        .collect();
                    b.push(row, ts);
                }
                j.on_batch(*side, b, out);
            }
            Step::Watermark(w) => j.on_watermark(*w, out),
        }
    }

    fn lines(out: &mut Emit) -> Vec<String> {
        let mut v = Vec::new();
        for b in out.take() {
            for (row, _) in b.rows() {
                v.push(format!("{row:?}"));
            }
        }
        assert!(out.dead.is_empty(), "dead letters: {:?}", out.dead);
        v
    }

    #[test]
    fn spilled_and_restored_buffers_pair_like_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let steps = stream();
        let (mut memory, schema) = join();
        let mut out = Emit::new("j".into(), schema);
        for s in &steps {
            feed(&mut memory, s, &mut out);
        }
        let mut expected = lines(&mut out);
        expected.sort();
        assert!(expected.len() > 1000, "pairs: {}", expected.len());

        // A cache of 20 rows: windows spill all the time. Halfway, a snapshot and a
        // checkpoint; then more input (whose output is lost in the "crash"), and a restore.
        let (mut spilling, _) = join();
        spilling
            .open_state(keyed(dir.path(), "db", 20, None), None)
            .expect("open");
        let half = steps.len() / 2;
        let mut got = Vec::new();
        // Snapshots between checkpoints too, so spilled windows also hold rows in memory
        // that the store has as well.
        for (i, s) in steps[..half].iter().enumerate() {
            feed(&mut spilling, s, &mut out);
            assert!(
                spilling.resident <= 20,
                "{} rows in memory",
                spilling.resident
            );
            if i % 7 == 0 {
                spilling.snapshot().expect("snapshot");
            }
        }
        got.extend(lines(&mut out));
        assert!(
            spilling.panes.values().any(|p| p.spilled),
            "nothing spilled"
        );
        let cp = dir.path().join("cp");
        spilling
            .snapshot()
            .expect("snapshot")
            .expect("store")
            .checkpoint(&cp)
            .expect("checkpoint");
        let wm = spilling.wm;
        for s in &steps[half..half + 300] {
            feed(&mut spilling, s, &mut out);
        }
        drop(out.take());
        drop(spilling);

        let (mut restored, _) = join();
        restored
            .open_state(keyed(dir.path(), "db2", 20, Some(&cp)), Some(wm))
            .expect("restore");
        for (i, s) in steps[half..].iter().enumerate() {
            feed(&mut restored, s, &mut out);
            if i % 7 == 0 {
                restored.snapshot().expect("snapshot");
            }
        }
        got.extend(lines(&mut out));
        got.sort();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "spilled and restored pairs differ");
    }
}
