//! Two-phase window aggregation: before the keyed exchange, each sending worker folds its
//! records into per-slice partial accumulators and sends those instead of the records, as
//! Flink SQL's local-global window aggregation does.
//!
//! A record crossing to another core costs more than aggregating it (on this machine's two
//! vCPUs, moving a row to the other worker's batch took ~70 ns against ~25 ns on one core), so
//! a window whose keys repeat within a slice (q5's hot auctions, q7's one global key) moves a
//! few partials per slice instead of every record.
//!
//! Partials for a slice go out before any watermark that could fire a window holding it, and
//! all of them before a checkpoint barrier and at the end, so the window sees the same
//! records before each watermark as without combining: nothing is in the combiner at a
//! checkpoint, and which records are late does not change. Records the combiner cannot fold
//! go on as they are, and the window treats them as always: those for windows this sender's
//! watermark may already have fired (late data, refires), and those whose key or arguments
//! fail to evaluate (dead-lettered downstream, with the record).

use super::aggregate::{Acc, AggKind, eval_args, init_accs};
use super::slice_map::SliceMap;
use super::window::WindowKind;
use super::window_agg::{FixedKey, earliest_end};
use crate::expr::V;
use crate::job::graph::WindowAggSpec;
use crate::record::{Batch, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Partial aggregates on the wire: row `i` is key `keys[i*w..(i+1)*w]` of slice `slices[i]`
/// (`(start, end)`) with accumulators `accs[i*n..(i+1)*n]`.
#[derive(Debug, Default)]
pub struct Partials {
    pub width: usize,
    pub keys: Vec<Value>,
    pub slices: Vec<(i64, i64)>,
    pub accs: Vec<Acc>,
    /// Records folded into each row: what the window counts if the row comes too late.
    pub records: Vec<u64>,
}

impl Partials {
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }
}

/// Entries held before everything is sent regardless of watermarks: bounds the combiner's
/// memory when keys hardly repeat.
const MAX_ENTRIES: usize = 1 << 16;

/// Records passed on unfolded after combining was found not to pay, before trying again.
/// Folding records whose keys do not repeat within a slice costs a map update each and saves
/// no hop: the keyed count (10,000 keys, ~1.3 records per key and window on each worker) took
/// 40 % more CPU combined.
const BYPASS: u64 = 1 << 20;

/// Records folded before deciding whether combining pays.
const TRIAL: u64 = 4096;

pub struct Combiner {
    spec: Arc<WindowAggSpec>,
    size: i64,
    slide: i64,
    slice: i64,
    /// The last watermark sent on the edge (`IDLE` included).
    sent: i64,
    /// Slices by `(end, start)`.
    panes: BTreeMap<(i64, i64), SliceMap>,
    /// Records still to pass on unfolded (see [`BYPASS`]).
    bypass: u64,
    /// Records folded and partials sent since the last decision whether combining pays: a
    /// worker reading fewer records than a slice's [`TRIAL`] (the one that also runs the
    /// sink) never decided per take, and folded every record of a keyed count.
    trial: (u64, u64),
    entries: usize,
    spare: Vec<SliceMap>,
    key_buf: Vec<Value>,
    /// Some aggregate's update can fail (`sum`, `avg`).
    fallible: bool,
    /// The slice the last record fell in: `(start, end, end of the first window holding it)`.
    cur: (i64, i64, i64),
}

impl Combiner {
    /// A combiner for the records going to `spec`'s window, if it can have one: event-time
    /// tumbling or sliding windows (sessions merge by gap, not by slice; processing time is
    /// decided by the window's own clock).
    pub fn for_window(spec: &Arc<WindowAggSpec>) -> Option<Combiner> {
        if spec.window.processing_time {
            return None;
        }
        let (size, slide) = match spec.window.kind {
            WindowKind::Tumbling { size } => (size, size),
            WindowKind::Sliding { size, slide } => (size, slide),
            WindowKind::Session { .. } => return None,
        };
        Some(Combiner {
            spec: spec.clone(),
            size,
            slide,
            slice: super::window_agg::gcd(size, slide).max(1),
            sent: i64::MIN,
            panes: BTreeMap::new(),
            bypass: 0,
            trial: (0, 0),
            entries: 0,
            spare: Vec::new(),
            key_buf: Vec::new(),
            fallible: spec
                .aggs
                .iter()
                .any(|a| matches!(a.kind, AggKind::Sum | AggKind::Avg)),
            cur: (0, 0, 0),
        })
    }

    /// Folds `batch` in; returns the rows to send as they are (see the module doc).
    pub fn add(&mut self, batch: Batch) -> Batch {
        if self.bypass > 0 {
            self.bypass = self.bypass.saturating_sub(batch.len() as u64);
            return batch;
        }
        if self.sent == crate::exchange::IDLE {
            // Downstream leaves an idle sender out of its watermark: its records may be late
            // there already, and only the window can tell.
            return batch;
        }
        let mut raw = Batch::new(batch.schema.clone());
        let spec = self.spec.clone();
        let mut args: Vec<V<'_>> = Vec::with_capacity(spec.aggs.len());
        // As in the window: arguments of `count()` alone are the same on every row, and
        // rebuilding them per row was a sixth of a P=2 q5's combining.
        let argless = spec.aggs.iter().all(|a| a.arg.is_none());
        if argless {
            args.extend(spec.aggs.iter().map(|_| V::Null));
        }
        let fixed_key = FixedKey::of(&spec, &batch);
        let mut key_buf = std::mem::take(&mut self.key_buf);
        for (row, ts) in batch.rows() {
            let key: &[Value] = match fixed_key.get(row) {
                Some(k) => k,
                None => {
                    key_buf.clear();
                    let evaluated: Result<(), ()> = spec.key.iter().try_for_each(|k| {
                        key_buf.push(k.eval_value(&[row]).map_err(|_| ())?);
                        Ok(())
                    });
                    if evaluated.is_err() {
                        raw.push(row.iter().cloned(), ts);
                        continue;
                    }
                    &key_buf
                }
            };
            let folded = (argless || eval_args(&spec.aggs, &[row], &mut args).is_ok())
                && self.fold(ts, key, &args);
            if !folded {
                raw.push(row.iter().cloned(), ts);
            }
        }
        self.key_buf = key_buf;
        raw
    }

    /// Adds one record to its slice; `false` if a window holding it may have fired already.
    fn fold(&mut self, ts: i64, key: &[Value], args: &[V<'_>]) -> bool {
        let (mut start, mut end, mut first_end) = self.cur;
        if !(start <= ts && ts < end) {
            start = ts - ts.rem_euclid(self.slice);
            end = start.saturating_add(self.slice);
            first_end = earliest_end(ts, self.size, self.slide);
            self.cur = (start, end, first_end);
        }
        if first_end - 1 <= self.sent {
            return false;
        }
        let spare = &mut self.spare;
        let pane = self
            .panes
            .entry((end, start))
            .or_insert_with(|| spare.pop().unwrap_or_default());
        let aggs = &self.spec.aggs;
        let Ok((entry, inserted)) = pane.get_or_try_insert(key, |fresh| {
            init_accs(aggs, &mut fresh.accs);
            // One more, after the aggregates': the records folded in (see `Partials::records`).
            fresh.accs.push(Acc::Count(0));
            Ok::<_, ()>(())
        }) else {
            return false;
        };
        // A failing update (a sum that overflows or meets a string) must leave the entry as
        // it was, so the record can go on whole and fail at the window, dead-lettered there.
        if self.fallible && !entry.accs.iter().zip(args).all(|(a, v)| a.accepts(v)) {
            if inserted {
                pane.remove_last(key);
            }
            return false;
        }
        if inserted {
            self.entries += 1;
        }
        for ((s, acc), v) in aggs.iter().zip(entry.accs.iter_mut()).zip(args) {
            // Cannot fail: checked above where it could.
            let _ = acc.update(v.clone(), ts, s.arg.is_none());
        }
        if let Some(Acc::Count(n)) = entry.accs.last_mut() {
            *n += 1;
        }
        true
    }

    /// Whether it holds enough to send everything now.
    pub fn full(&self) -> bool {
        self.entries >= MAX_ENTRIES
    }

    /// Watermark `wm` is about to be sent: takes the partials of every slice a window it
    /// fires may hold (all of them when going idle or at the end), by target worker.
    pub fn before_watermark(
        &mut self,
        wm: i64,
        owner: impl FnMut(&[Value]) -> usize,
        targets: usize,
    ) -> Vec<Partials> {
        self.sent = wm;
        let all = wm == crate::exchange::IDLE || wm == i64::MAX;
        // A window holding slice `[s, e)` ends at `e` or later: one firing at `wm` holds
        // only slices with `e - 1 <= wm`.
        let upto = if all { i64::MAX } else { wm.saturating_add(1) };
        self.take(upto, owner, targets)
    }

    /// Takes every partial (before a barrier, at the end, or when full), by target worker.
    pub fn take_all(
        &mut self,
        owner: impl FnMut(&[Value]) -> usize,
        targets: usize,
    ) -> Vec<Partials> {
        self.take(i64::MAX, owner, targets)
    }

    fn take(
        &mut self,
        upto: i64,
        mut owner: impl FnMut(&[Value]) -> usize,
        targets: usize,
    ) -> Vec<Partials> {
        let width = self.spec.key.len();
        let mut out: Vec<Partials> = (0..targets)
            .map(|_| Partials {
                width,
                ..Default::default()
            })
            .collect();
        let (mut folded, mut sent) = (0u64, 0u64);
        while let Some(entry) = self.panes.first_entry() {
            let (end, start) = *entry.key();
            if end > upto {
                break;
            }
            let mut pane = entry.remove();
            self.entries -= pane.len();
            sent += pane.len() as u64;
            let mut drain = pane.drain();
            while let Some((mut e, key)) = drain.next_entry() {
                self.key_buf.clear();
                self.key_buf.extend(key);
                let p = &mut out[owner(&self.key_buf).min(targets - 1)];
                p.keys.append(&mut self.key_buf);
                p.slices.push((start, end));
                let records = match e.accs.pop() {
                    Some(Acc::Count(n)) => n.max(0) as u64,
                    _ => 0,
                };
                folded += records;
                p.records.push(records);
                p.accs.extend(e.accs);
            }
            drop(drain);
            if self.spare.len() < 2 {
                self.spare.push(pane);
            }
        }
        let (trial_folded, trial_sent) = (self.trial.0 + folded, self.trial.1 + sent);
        self.trial = (trial_folded, trial_sent);
        if trial_folded >= TRIAL {
            // Less than halving what crosses does not pay for the folding.
            if trial_sent * 2 > trial_folded {
                self.bypass = BYPASS;
            }
            self.trial = (0, 0);
        }
        out
    }
}

/// Accumulators of a partial row, for the window merging it.
pub fn partial_accs(p: &Partials, i: usize, n: usize) -> &[Acc] {
    &p.accs[i * n..(i + 1) * n]
}

/// Key of a partial row.
pub fn partial_key(p: &Partials, i: usize) -> &[Value] {
    &p.keys[i * p.width..(i + 1) * p.width]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Schema;

    fn setup(window: &str, aggregate: &str) -> (Combiner, Arc<Schema>) {
        // Any existing file: the plan is compiled, not run.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/lines.jsonl");
        let yaml = format!(
            "sources:\n  - {{ name: in, file: {{ path: '{path}', schema: {{ k: int, v: int, ts: int }} }}, eventTime: {{ field: ts }} }}\nsteps:\n  - {{ name: w, from: in, keyBy: event.k, window: {window}, aggregate: {aggregate} }}\nsinks:\n  - {{ name: o, from: w, stdout: {{}} }}\n"
        );
        let (_, graph) = crate::plan::compile(&yaml).unwrap_or_else(|e| panic!("{e}"));
        let (spec, input, _) = graph.first_window().expect("window");
        (Combiner::for_window(&spec).expect("combinable"), input)
    }

    fn batch(schema: &Arc<Schema>, rows: &[(i64, i64, i64)]) -> Batch {
        let mut b = Batch::new(schema.clone());
        for &(k, v, ts) in rows {
            // The narrowed schema holds what the window reads: k, v (if read) and ts.
            let row: Vec<Value> = schema
                .fields
                .iter()
                .map(|f| match f.name.as_str() {
                    "k" => Value::Int(k),
                    "v" => Value::Int(v),
                    _ => Value::Int(ts),
                })
                .collect();
            b.push(row, ts);
        }
        b
    }

    /// Per worker of two, (key, start, end, accumulator results).
    fn rows(parts: &[Partials]) -> Vec<(usize, i64, i64, i64, Vec<Value>)> {
        let mut out = Vec::new();
        for (w, p) in parts.iter().enumerate() {
            let n = p.accs.len() / p.len().max(1);
            for i in 0..p.len() {
                let key = match partial_key(p, i) {
                    [Value::Int(k)] => *k,
                    other => panic!("key {other:?}"),
                };
                let (s, e) = p.slices[i];
                let accs = partial_accs(p, i, n).iter().map(Acc::result).collect();
                out.push((w, key, s, e, accs));
            }
        }
        out.sort_by_key(|r| (r.1, r.2));
        out
    }

    fn by_key(key: &[Value]) -> usize {
        match key {
            [Value::Int(k)] => (*k % 2) as usize,
            _ => 0,
        }
    }

    #[test]
    fn slices_go_out_before_the_watermark_that_fires_them_and_late_rows_stay_raw() {
        let (mut c, schema) = setup("{ tumbling: 10ms }", "{ n: count(), s: sum(event.v) }");
        let raw = c.add(batch(
            &schema,
            &[(1, 5, 1), (1, 6, 2), (2, 7, 3), (1, 1, 12)],
        ));
        assert!(raw.is_empty(), "all folded");
        // Window [0, 10) fires at watermark 9; [10, 20) stays.
        let parts = c.before_watermark(8, by_key, 2);
        assert!(rows(&parts).is_empty(), "nothing fires at 8");
        let parts = c.before_watermark(9, by_key, 2);
        let folded: u64 = parts.iter().flat_map(|p| p.records.iter()).sum();
        assert_eq!(folded, 3, "records folded into the partials sent");
        let got = rows(&parts);
        assert_eq!(
            got,
            vec![
                (1, 1, 0, 10, vec![Value::Int(2), Value::Int(11)]),
                (0, 2, 0, 10, vec![Value::Int(1), Value::Int(7)]),
            ]
        );
        // A record for the window the sent watermark fired goes on raw, for the window to
        // judge (late, or a refire within allowed lateness).
        let raw = c.add(batch(&schema, &[(1, 9, 4), (1, 2, 13)]));
        assert_eq!(raw.len(), 1);
        assert_eq!(raw.times(), &[4]);
        // Everything else goes before a barrier or the end.
        let got = rows(&c.take_all(by_key, 2));
        assert_eq!(
            got,
            vec![(1, 1, 10, 20, vec![Value::Int(2), Value::Int(3)])]
        );
        assert!(rows(&c.take_all(by_key, 2)).is_empty());
    }

    #[test]
    fn a_sum_that_would_fail_leaves_its_row_whole_and_the_entry_untouched() {
        let (mut c, schema) = setup("{ tumbling: 10ms }", "{ n: count(), s: sum(event.v) }");
        let raw = c.add(batch(&schema, &[(1, i64::MAX, 1), (1, 1, 2), (3, 1, 3)]));
        assert_eq!(raw.times(), &[2], "the overflowing row goes on as it is");
        let got = rows(&c.take_all(by_key, 2));
        assert_eq!(
            got,
            vec![
                (1, 1, 0, 10, vec![Value::Int(1), Value::Int(i64::MAX)]),
                (1, 3, 0, 10, vec![Value::Int(1), Value::Int(1)]),
            ]
        );
        // After a take the same key starts afresh.
        let raw = c.add(batch(
            &schema,
            &[(1, i64::MAX, 1), (5, 1, 2), (5, i64::MAX, 3)],
        ));
        assert_eq!(raw.times(), &[3]);
        let got = rows(&c.take_all(by_key, 2));
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn sliding_windows_fold_per_slice_and_keys_that_do_not_repeat_are_passed_on() {
        let (mut c, schema) = setup("{ sliding: { size: 10ms, slide: 5ms } }", "{ n: count() }");
        assert!(c.add(batch(&schema, &[(1, 0, 1), (1, 0, 6)])).is_empty());
        // Window [-5, 5) holds slice [0, 5) and fires at 4; slice [5, 10) first fires at 9.
        let got = rows(&c.before_watermark(4, by_key, 2));
        assert_eq!(got, vec![(1, 1, 0, 5, vec![Value::Int(1)])]);
        let got = rows(&c.before_watermark(i64::MAX, by_key, 2));
        assert_eq!(got, vec![(1, 1, 5, 10, vec![Value::Int(1)])]);
        // 5,000 distinct keys in one slice: folding halves nothing, so it stops for a while.
        let (mut c, schema) = setup("{ tumbling: 1h }", "{ n: count() }");
        let many: Vec<(i64, i64, i64)> = (0..5000).map(|k| (k, 0, 1)).collect();
        assert!(c.add(batch(&schema, &many)).is_empty());
        assert_eq!(rows(&c.take_all(by_key, 2)).len(), 5000);
        let again = c.add(batch(&schema, &many[..10]));
        assert_eq!(again.len(), 10, "passed on unfolded");
        // The same found over several takes of fewer records each.
        let (mut c, schema) = setup("{ tumbling: 10ms }", "{ n: count() }");
        let mut taken = 0;
        for slice in 0..5 {
            let rows: Vec<(i64, i64, i64)> = (0..1000).map(|k| (k, 0, slice * 10)).collect();
            assert!(c.add(batch(&schema, &rows)).is_empty(), "slice {slice}");
            taken += c
                .before_watermark(slice * 10 + 9, by_key, 2)
                .iter()
                .map(Partials::len)
                .sum::<usize>();
        }
        assert_eq!(taken, 5000);
        let again = c.add(batch(&schema, &many[..10]));
        assert_eq!(
            again.len(),
            10,
            "passed on unfolded after several small takes"
        );
    }
}
