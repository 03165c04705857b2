//! Windowed inner join: records of the left and right inputs with equal keys in the same
//! (tumbling or sliding) window are paired when the window fires; a late record within the
//! allowed lateness is paired at once with what the other side holds, so every pair is
//! emitted exactly once.

use super::join_rows::Rows;
use super::join_store as store;
use super::{Emit, Operator};
use crate::job::graph::JoinSpec;
use crate::record::{Batch, Schema, Value};
use crate::state::{StateError, StateStore};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    /// The first state-store failure, for the task to stop on (`Operator::failed`).
    failure: Option<StateError>,
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
            failure: None,
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

/// Writes the rows of `pane` the store lacks, and its "fired" markers; only once the write
/// succeeded are they counted as stored (a failed write leaves them to the next attempt).
fn write_dirty(
    st: &super::Keyed,
    window: (i64, i64),
    pane: &mut Pane,
    seq: &mut u64,
    buf: &mut Vec<u8>,
) -> Result<(), StateError> {
    let mut batch = rocksdb::WriteBatch::default();
    let mut kgs = BTreeSet::new();
    for (key, b) in pane.keys.iter() {
        if b.clean[0] == b.rows[0].len() && b.clean[1] == b.rows[1].len() {
            continue;
        }
        let kg = store::key_bytes(st, key, buf);
        for side in 0..2 {
            if b.rows[side].len() > b.clean[side] {
                let new = b.rows[side].iter_from(b.clean[side]);
                store::put_rows(&mut batch, (kg, window, buf), side, new, seq);
                kgs.insert(kg);
            }
        }
    }
    let marks: Vec<u32> = if pane.fired {
        pane.stored
            .union(&kgs)
            .filter(|kg| !pane.marked.contains(kg))
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    for &kg in &marks {
        store::put_fired(&mut batch, kg, window);
    }
    st.store.write(batch)?;
    for b in pane.keys.values_mut() {
        b.clean = [b.rows[0].len(), b.rows[1].len()];
    }
    pane.stored.extend(kgs);
    pane.marked.extend(marks);
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
        for (&window, pane) in self.panes.iter_mut().rev() {
            if self.resident <= target {
                break;
            }
            if pane.keys.is_empty() {
                continue;
            }
            write_dirty(st, window, pane, &mut self.seq, &mut self.key_buf)?;
            let rows: usize = pane
                .keys
                .values()
                .map(|b| b.rows[0].len() + b.rows[1].len())
                .sum();
            pane.keys.clear();
            pane.spilled = true;
            self.resident -= rows;
        }
        Ok(())
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
                if pane.stored.contains(&kg) {
                    store::load_side(
                        st,
                        (kg, window, &self.key_buf),
                        other,
                        self.inputs[other].len(),
                    )?
                } else {
                    Rows::new()
                }
            }
            _ => Rows::new(),
        };
        // In a spilled window, the rows before `clean` are among the stored ones.
        let fresh = pane.keys.get(key).into_iter().flat_map(|b| {
            let from = if pane.spilled { b.clean[other] } else { 0 };
            b.rows[other].iter_from(from)
        });
        let (start, end) = (window.1, window.0);
        for o in stored.iter().chain(fresh) {
            let (l, r) = if port == 0 { (row, o) } else { (o, row) };
            Self::emit_pair(&self.spec, &self.inputs, out, start, end, l, r);
        }
        Ok(())
    }

    /// Emits every pair of window `window`, reading back what it spilled one key at a time.
    /// Reads come before any pair is emitted for a key, and the stored keys before the
    /// memory-only ones; a failure may still leave the window half emitted, so the caller
    /// fails the task (a restore then starts from the last checkpoint).
    fn fire(&self, window: (i64, i64), pane: &Pane, out: &mut Emit) -> Result<(), StateError> {
        let (start, end) = (window.1, window.0);
        let pairs = |l: &Rows, r: &Rows, out: &mut Emit| {
            for a in l.iter() {
                for b in r.iter() {
                    Self::emit_pair(&self.spec, &self.inputs, out, start, end, a, b);
                }
            }
        };
        match (&self.state, pane.spilled) {
            (Some(st), true) => {
                // Keys found in the store, whose rows in memory were paired with theirs.
                let mut done = HashSet::new();
                store::for_each_stored_key(
                    st,
                    window,
                    &pane.stored,
                    self.widths(),
                    |key, mut rows| {
                        if let Some(b) = pane.keys.get(&key) {
                            for ((to, mem), clean) in rows.iter_mut().zip(&b.rows).zip(b.clean) {
                                to.extend_from(mem, clean);
                            }
                            done.insert(key);
                        }
                        pairs(&rows[0], &rows[1], out);
                    },
                )?;
                for (key, b) in &pane.keys {
                    if !done.contains(key) {
                        pairs(&b.rows[0], &b.rows[1], out);
                    }
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
                    self.failure.get_or_insert(e);
                    return;
                }
                if let Some(pane) = self.panes.get_mut(&(end, start)) {
                    pane.keys.entry(key.clone()).or_default().rows[port].push(row);
                    self.resident += 1;
                }
            }
            if !any {
                out.late_row(&input, row, ts, self.has_late_output);
            }
        }
        self.win_buf = wins;
        if let Err(e) = self.bound_memory() {
            self.failure.get_or_insert(e);
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
                self.failure.get_or_insert(e);
                return;
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
                    self.failure.get_or_insert(e);
                }
            }
        }
    }

    fn stateful(&self) -> bool {
        true
    }

    fn failed(&mut self) -> Option<StateError> {
        self.failure.take()
    }

    fn open_state(&mut self, st: super::Keyed, restored: Option<i64>) -> Result<(), StateError> {
        if let Some(wm) = restored {
            self.wm = wm;
            let (windows, next) = store::restore(&st)?;
            self.seq = next;
            // Everything stays in the store until its window fires or a late row needs it.
            for (window, w) in windows {
                // Every instance of the join sees the same watermarks before a barrier (each
                // gets every sender's, in order), so a window fired in one old instance fired
                // in all: key groups that disagree mean a damaged or foreign checkpoint.
                if !w.fired.is_empty() && w.fired != w.kgs {
                    tracing::warn!(
                        window_end = window.0,
                        "join state: a window is marked fired in some key groups only; treating it as fired"
                    );
                }
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
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        for (&window, pane) in self.panes.iter_mut() {
            write_dirty(st, window, pane, &mut self.seq, &mut self.key_buf)?;
        }
        let mut batch = rocksdb::WriteBatch::default();
        store::put_next_seq(&mut batch, st, self.seq);
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

    fn keyed(dir: &Path, name: &str, range: (u32, u32), from: &[PathBuf]) -> super::super::Keyed {
        let opts = StateOptions::default();
        let path = dir.join(name);
        let store = if from.is_empty() {
            StateStore::create(&path, range, &opts)
        } else {
            StateStore::restore(&path, range, from, &opts)
        }
        .expect("store");
        super::super::Keyed {
            store,
            max_parallelism: 128,
            cache_entries: 20,
            route_keys: Vec::new(),
        }
    }

    use std::path::{Path, PathBuf};

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

    /// Which rare paths a run took.
    #[derive(Default)]
    struct Seen {
        late_to_spilled_fired: bool,
        fired_spilled_with_clean_rows: bool,
    }

    impl Seen {
        fn before(&mut self, j: &Join, step: &Step) {
            match step {
                Step::Rows(_, rows) => {
                    for &(_, _, ts) in rows {
                        let start = ts - ts.rem_euclid(10_000);
                        if let Some(p) = j.panes.get(&(start + 10_000, start)) {
                            self.late_to_spilled_fired |= p.fired && p.spilled;
                        }
                    }
                }
                Step::Watermark(w) => {
                    for (&(end, _), p) in &j.panes {
                        self.fired_spilled_with_clean_rows |= end - 1 <= *w
                            && !p.fired
                            && p.spilled
                            && p.keys.values().any(|b| b.clean.iter().any(|&c| c > 0));
                    }
                }
            }
        }
    }

    /// The key group of a row of key `k`, as the exchange routes it.
    fn kg(k: i64) -> u32 {
        let mut b = Vec::new();
        crate::exchange::canonical_value_bytes(&Value::Int(k), &mut b);
        crate::exchange::key_group(&b, 128)
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

        // Two instances (key groups 0..=63 and 64..=127) with a cache of 20 rows each, so
        // windows spill all the time, snapshotting often (spilled windows then also hold rows
        // in memory that the store has). Halfway, a checkpoint of both; then more input,
        // whose output the "crash" loses; then one instance restored from both.
        let ranges = [(0u32, 63u32), (64, 127)];
        let mut seen = Seen::default();
        let mut split: Vec<Join> = ranges
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let (mut j, _) = join();
                j.open_state(keyed(dir.path(), &format!("db{i}"), r, &[]), None)
                    .expect("open");
                j
            })
            .collect();
        let route = |split: &mut Vec<Join>, s: &Step, out: &mut Emit, seen: &mut Seen| match s {
            Step::Rows(side, rows) => {
                let i = usize::from(kg(rows[0].0) > 63);
                seen.before(&split[i], s);
                feed(&mut split[i], &Step::Rows(*side, rows.clone()), out);
            }
            Step::Watermark(_) => {
                for j in split.iter_mut() {
                    seen.before(j, s);
                    feed(j, s, out);
                }
            }
        };
        let half = steps.len() / 2;
        for (i, s) in steps[..half].iter().enumerate() {
            route(&mut split, s, &mut out, &mut seen);
            for j in &mut split {
                assert!(j.resident <= 20, "{} rows in memory", j.resident);
                if i % 7 == 0 {
                    j.snapshot().expect("snapshot");
                }
            }
        }
        let mut got = lines(&mut out);
        let mut cps = Vec::new();
        for (i, j) in split.iter_mut().enumerate() {
            let cp = dir.path().join(format!("cp{i}"));
            j.snapshot()
                .expect("snapshot")
                .expect("store")
                .checkpoint(&cp)
                .expect("checkpoint");
            cps.push(cp);
        }
        assert_eq!(split[0].wm, split[1].wm);
        let wm = split[0].wm;
        let numbered = split.iter().map(|j| j.seq).max().unwrap_or(0);
        for s in &steps[half..half + 300] {
            route(&mut split, s, &mut out, &mut seen);
        }
        drop(out.take());
        drop(split);

        let (mut merged, _) = join();
        merged
            .open_state(keyed(dir.path(), "merged", (0, 127), &cps), Some(wm))
            .expect("restore");
        // New rows are numbered past every stored one (a reused number would overwrite one).
        assert!(merged.seq >= numbered, "{} < {numbered}", merged.seq);
        for (i, s) in steps[half..].iter().enumerate() {
            seen.before(&merged, s);
            feed(&mut merged, s, &mut out);
            assert!(merged.failed().is_none());
            if i % 7 == 0 {
                merged.snapshot().expect("snapshot");
            }
        }
        got.extend(lines(&mut out));
        got.sort();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "spilled and restored pairs differ");
        assert!(
            seen.late_to_spilled_fired,
            "no late row met a spilled, fired window"
        );
        assert!(
            seen.fired_spilled_with_clean_rows,
            "no spilled window fired with stored rows also in memory"
        );
    }
}
