//! Keyed windowed aggregation: tumbling, sliding and session windows, on event or processing
//! time, with allowed lateness and a late-data side output.
//!
//! Aligned windows keep their state in *slices* (as Flink SQL's window slicing does): a slice
//! is `gcd(size, slide)` wide, every window is a union of whole slices, and a record updates
//! the one slice holding it however many sliding windows hold it (a 10 s / 2 s window was five
//! updates per record, now one, plus a merge of five slices per key when a window fires).
//! Tumbling windows are their own single slice. Each slice holds a map from key to
//! accumulators, so firing on a watermark merges whole slices instead of scanning keys.
//! Whether a window has fired follows from the watermark alone (`end - 1 <= watermark`).
//! Sessions keep a list per key and a timer map ordered by session end.

use super::aggregate::{Acc, Accs, AggKind, apply, eval_args, init_accs};
use super::window::WindowKind;
use super::{Emit, Operator};
use crate::expr::{Compiled, V};
use crate::job::graph::WindowAggSpec;
use crate::record::{Batch, Schema, Value};
use crate::state::StateError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A key; a single-field key (the common case) lives inline, without an allocation.
pub(super) type Key = smallvec::SmallVec<[Value; 1]>;
pub(super) type Map<K, T> = hashbrown::HashMap<K, T, foldhash::fast::RandomState>;

/// One key's accumulators in one slice.
pub(super) struct Entry {
    pub(super) accs: Accs,
    /// Changed since it was last written to the store.
    pub(super) dirty: bool,
}

/// One slice's state, keyed in `WindowAgg::panes` by `(end, start)`.
#[derive(Default)]
pub(super) struct Pane {
    pub(super) keys: super::slice_map::SliceMap,
    /// Some entry was written to the store (so firing and dropping must look there too).
    pub(super) persisted: bool,
    /// Some entries live only in the store (evicted from memory).
    pub(super) spilled: bool,
}

pub(super) struct Sess {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) accs: Accs,
    pub(super) fired: bool,
}

pub struct WindowAgg {
    pub(super) spec: Arc<WindowAggSpec>,
    input: Arc<Schema>,
    has_late_output: bool,
    pub(super) wm: i64,
    /// Windows ending at or before `fired_to + 1` have fired.
    fired_to: i64,
    /// Window size and slide (equal for tumbling windows), and the slice width.
    size: i64,
    slide: i64,
    slice: i64,
    /// Slices by `(end, start)`.
    pub(super) panes: BTreeMap<(i64, i64), Pane>,
    pub(super) sessions: Map<Key, Vec<Sess>>,
    pub(super) timers: BTreeMap<i64, Vec<Key>>,
    /// Session keys changed since the last snapshot.
    pub(super) dirty_sessions: std::collections::HashSet<Key, foldhash::fast::RandomState>,
    /// Some keys' sessions live only in the store (their timers stay in memory).
    pub(super) sessions_spilled: bool,
    /// The first state-store failure, for the task to stop on (`Operator::failed`).
    pub(super) failure: Option<StateError>,
    /// Pane entries in memory, against `Keyed::cache_entries`.
    pub(super) cached: usize,
    pub(super) state: Option<super::Keyed>,
    pub(super) key_buf: Vec<Value>,
    /// Keys in the most recently fired pane, to size new panes.
    last_pane_keys: usize,
    /// Emptied maps of dropped panes, reused for new ones: a fresh map of thousands of keys
    /// is cold memory (page faults, then cache misses on every insert), a reused one is warm.
    spare: Vec<super::slice_map::SliceMap>,
    /// The slice the last record fell in.
    cur: SliceBounds,
    /// A sliding window's result, merged from its slices when it fires: a slice map, so each
    /// merged key is 24 bytes appended to one vector (merging into a hash map of `SmallVec`
    /// keys, each key cloned into a new one, was a sixth of q5).
    merged: super::slice_map::SliceMap,
    ends: Vec<i64>,
    /// Some aggregate is a `sum`, whose merge can fail (overflow, a string).
    sum: bool,
}

/// A slice `[start, end)` and the ends of the last and first windows holding it.
#[derive(Clone, Copy)]
struct SliceBounds {
    start: i64,
    end: i64,
    last_end: i64,
    first_end: i64,
}

pub(super) fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl WindowAgg {
    pub fn new(spec: Arc<WindowAggSpec>, input: Arc<Schema>, has_late_output: bool) -> WindowAgg {
        let (size, slide) = match spec.window.kind {
            WindowKind::Tumbling { size } => (size, size),
            WindowKind::Sliding { size, slide } => (size, slide),
            WindowKind::Session { gap } => (gap, gap),
        };
        WindowAgg {
            sum: spec.aggs.iter().any(|a| matches!(a.kind, AggKind::Sum)),
            spec,
            input,
            has_late_output,
            wm: i64::MIN,
            fired_to: i64::MIN,
            size,
            slide,
            slice: gcd(size, slide).max(1),
            panes: BTreeMap::new(),
            sessions: Map::default(),
            timers: BTreeMap::new(),
            dirty_sessions: Default::default(),
            sessions_spilled: false,
            failure: None,
            cached: 0,
            state: None,
            key_buf: Vec::new(),
            last_pane_keys: 0,
            spare: Vec::new(),
            merged: Default::default(),
            ends: Vec::new(),
            // Empty: the first record computes its slice.
            cur: SliceBounds {
                start: 0,
                end: 0,
                last_end: 0,
                first_end: 0,
            },
        }
    }

    pub(super) fn emit_row(out: &mut Emit, key: &[Value], start: i64, end: i64, accs: &[Acc]) {
        // Values pushed one by one: a chained iterator here compiled to a per-value loop that
        // cost as much as encoding the row.
        out.push_with(|values| {
            values.extend_from_slice(key);
            values.push(Value::Int(start));
            values.push(Value::Int(end));
            for a in accs {
                values.push(a.result());
            }
            end - 1
        });
    }

    fn fire(&mut self, w: i64, out: &mut Emit) {
        let window = self.spec.window;
        if let WindowKind::Session { .. } = window.kind {
            self.fire_sessions(w, out);
            return;
        }
        self.fire_aligned(w, out);
    }

    /// The end of the last window holding time `t` (and so the whole slice holding it: a
    /// slice can go once that window is late).
    fn last_end(&self, t: i64) -> i64 {
        (t - t.rem_euclid(self.slide)).saturating_add(self.size)
    }

    /// Fires the windows whose end the watermark `w` passed since the last call, then drops
    /// the slices no window can use any more.
    fn fire_aligned(&mut self, w: i64, out: &mut Emit) {
        let (lo, hi) = (self.fired_to.saturating_add(1), w.saturating_add(1));
        self.fired_to = self.fired_to.max(w);
        // Ends of the windows holding each slice with data, in (lo, hi].
        let mut ends = std::mem::take(&mut self.ends);
        ends.clear();
        // Only slices of windows ending in (lo, hi]: their ends are above `lo - size`.
        let from = (lo.saturating_sub(self.size), i64::MAX);
        for &(end, start) in self
            .panes
            .range((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
        {
            if start >= hi {
                break;
            }
            let mut e = self.last_end(start);
            while e >= end && e > lo {
                if e <= hi {
                    ends.push(e);
                }
                e -= self.slide;
            }
        }
        ends.sort_unstable();
        ends.dedup();
        for &e in &ends {
            if let Err(err) = self.fire_window(e - self.size, e, out) {
                self.failure.get_or_insert(err);
            }
        }
        self.ends = ends;
        while let Some((&(end, start), _)) = self.panes.first_key_value() {
            if !self.spec.window.is_late(self.last_end(start), w) {
                break;
            }
            let Some(mut pane) = self.panes.remove(&(end, start)) else {
                break;
            };
            self.cached -= pane.keys.len();
            if pane.persisted
                && let Err(e) = self.forget((end, start))
            {
                self.failure.get_or_insert(e);
            }
            if self.spare.len() < 2 {
                pane.keys.clear();
                self.spare.push(pane.keys);
            }
        }
    }

    /// Emits every key's result of window `[start, end)`: straight from its slice when it has
    /// one, else merged over its slices (in memory, and in the store for spilled slices).
    fn fire_window(
        &mut self,
        start: i64,
        end: i64,
        out: &mut Emit,
    ) -> Result<(), crate::state::StateError> {
        let range = (start.saturating_add(1), i64::MIN)..=(end, i64::MAX);
        if self.size == self.slice {
            let Some(pane) = self.panes.get(&(end, start)) else {
                return Ok(());
            };
            for (key, e) in pane.keys.iter() {
                Self::emit_row(out, key, start, end, &e.accs);
            }
            self.last_pane_keys = pane.keys.len();
            if pane.spilled
                && let Some(st) = &self.state
            {
                let all = st.store.range.0..=st.store.range.1;
                self.for_each_spilled((end, start), all, |key, accs| {
                    Self::emit_row(out, &key, start, end, &accs);
                    Ok(())
                })?;
            }
            return Ok(());
        }
        let mut merged = std::mem::take(&mut self.merged);
        merged.clear();
        let mut spilled = Vec::new();
        for (&slice, pane) in self.panes.range(range) {
            for (key, e) in pane.keys.iter() {
                merge_into(&mut merged, key, &e.accs)?;
            }
            if pane.spilled {
                spilled.push(slice);
            }
        }
        if !spilled.is_empty()
            && let Some(st) = &self.state
        {
            // Stored entries are read one key group at a time, so a window far larger than
            // the cache never sits in memory whole: a key also held in memory merges into
            // `merged`; the others are emitted with their key group.
            let (first, last) = st.store.range;
            let mut extra = super::slice_map::SliceMap::default();
            for kg in first..=last {
                for &slice in &spilled {
                    self.for_each_spilled(slice, kg..=kg, |key, accs| {
                        match merged.get_mut(&key) {
                            Some(a) => merge_accs(&mut a.accs, &accs),
                            None => merge_into(&mut extra, &key, &accs),
                        }
                    })?;
                }
                for (key, e) in extra.iter() {
                    Self::emit_row(out, key, start, end, &e.accs);
                }
                extra.clear();
            }
        }
        for (key, e) in merged.iter() {
            Self::emit_row(out, key, start, end, &e.accs);
        }
        merged.clear();
        self.merged = merged;
        Ok(())
    }

    /// A record landed in windows that already fired (within the allowed lateness): emits
    /// the key's updated result of each of them now, as Flink's event-time trigger does.
    fn refire(
        &mut self,
        ts: i64,
        key: &[Value],
        out: &mut Emit,
    ) -> Result<(), crate::state::StateError> {
        let mut e = self.last_end(ts);
        while e > ts {
            if e - 1 <= self.wm && !self.spec.window.is_late(e, self.wm) {
                let start = e - self.size;
                let mut accs: Option<Accs> = None;
                let range = (start.saturating_add(1), i64::MIN)..=(e, i64::MAX);
                for (&(end, s), pane) in self.panes.range(range) {
                    let found = match (pane.keys.get(key), &self.state) {
                        (Some(en), _) => Some(en.accs.clone()),
                        (None, Some(st)) if pane.spilled => {
                            super::window_store::load(st, end, s, key)?.map(|en| en.accs)
                        }
                        _ => None,
                    };
                    if let Some(f) = found {
                        match &mut accs {
                            None => accs = Some(f),
                            Some(a) => merge_accs(a, &f)?,
                        }
                    }
                }
                if let Some(a) = accs {
                    Self::emit_row(out, key, start, e, &a);
                }
            }
            e -= self.slide;
        }
        Ok(())
    }

    /// Adds a row of key `key` to its slice (tumbling and sliding windows).
    fn on_row(
        &mut self,
        ts: i64,
        key: &[Value],
        args: &[V<'_>],
        aggs: &[super::aggregate::AggSpec],
        out: &mut Emit,
    ) -> Result<bool, String> {
        let window = self.spec.window;
        // Every time in a slice has the same windows: work them out once per slice (three
        // divisions were a tenth of a record's cost).
        if !(self.cur.start <= ts && ts < self.cur.end) {
            let start = ts - ts.rem_euclid(self.slice);
            self.cur = SliceBounds {
                start,
                end: start.saturating_add(self.slice),
                last_end: self.last_end(ts),
                first_end: self.earliest_end(ts),
            };
        }
        let SliceBounds {
            start,
            end,
            last_end,
            first_end,
        } = self.cur;
        // The latest window holding `ts` is the last to expire: if it is late, all are.
        if window.is_late(last_end, self.wm) {
            return Ok(false);
        }
        let entry = self.entry(start, end, key)?;
        apply(aggs, &mut entry.accs, args, ts).map_err(|e| e.to_string())?;
        entry.dirty = true;
        // Some window holding `ts` fired already: the earliest holding it fires first.
        if first_end - 1 <= self.wm {
            self.refire(ts, key, out)
                .map_err(|e| format!("state store: {e}"))?;
        }
        Ok(true)
    }

    /// `key`'s entry in slice `[start, end)`, created (from the store if it spilled there)
    /// when absent.
    fn entry(&mut self, start: i64, end: i64, key: &[Value]) -> Result<&mut Entry, String> {
        // Size a new slice like the last one: growing a map of thousands of keys rehashes
        // (and moves) it many times.
        let hint = self.last_pane_keys;
        let spare = &mut self.spare;
        let pane = self.panes.entry((end, start)).or_insert_with(|| Pane {
            keys: spare
                .pop()
                .unwrap_or_else(|| super::slice_map::SliceMap::with_capacity(hint)),
            ..Pane::default()
        });
        let (state, aggs) = (&self.state, &self.spec.aggs);
        let (entry, inserted) = pane.keys.get_or_try_insert(key, |fresh| {
            let restored = match (state, pane.spilled) {
                (Some(st), true) => super::window_store::load(st, end, start, key)
                    .map_err(|e| format!("state store: {e}"))?,
                _ => None,
            };
            match restored {
                Some(r) => *fresh = r,
                None => init_accs(aggs, &mut fresh.accs),
            }
            Ok::<_, String>(())
        })?;
        if inserted {
            self.cached += 1;
        }
        Ok(entry)
    }

    /// Merges a sender's partial aggregate of `key` in slice `[start, end)` (see
    /// `combiner`): as if its records had arrived one by one.
    fn merge_partial(
        &mut self,
        (start, end): (i64, i64),
        key: &[Value],
        (accs, records): (&[Acc], u64),
        out: &mut Emit,
    ) -> Result<(), String> {
        // Partials precede the watermark their sender sends next, but this window may be
        // further on (after a restore, or once a sender comes back from idle): its records are
        // then late, and counted as dropped as they would have been one by one. (A window with
        // a late output gets no partials.)
        if self.spec.window.is_late(self.last_end(start), self.wm) {
            out.dropped_late += records;
            return Ok(());
        }
        let all_or_none = self.sum;
        let entry = self.entry(start, end, key)?;
        if all_or_none {
            // A sum overflowing after the count merged would leave the entry half-updated.
            let mut merged = entry.accs.clone();
            merge_accs(&mut merged, accs).map_err(|e| e.to_string())?;
            entry.accs = merged;
        } else {
            // Nothing else fails to merge (accumulators of one spec are of the same kinds):
            // cloning the entry's accumulators to merge into was a tenth of a P=2 q5's window.
            merge_accs(&mut entry.accs, accs).map_err(|e| e.to_string())?;
        }
        entry.dirty = true;
        if self.earliest_end(start) - 1 <= self.wm {
            self.refire(start, key, out)
                .map_err(|e| format!("state store: {e}"))?;
        }
        Ok(())
    }

    /// Spills entries to the store once the cache holds more than it may.
    fn bound_cache(&mut self) {
        if let Some(st) = &self.state
            && self.cached + self.sessions.len() > st.cache_entries
            && let Err(e) = self.evict()
        {
            self.failure.get_or_insert(e);
        }
    }

    /// The end of the earliest window holding `ts`.
    fn earliest_end(&self, ts: i64) -> i64 {
        earliest_end(ts, self.size, self.slide)
    }
}

/// The end of the earliest window of `size` and `slide` holding `ts`.
pub(super) fn earliest_end(ts: i64, size: i64, slide: i64) -> i64 {
    // Window starts are multiples of the slide; the earliest holding `ts` is the first start
    // above `ts - size`.
    let lowest = ts - size + 1;
    let start = lowest + (slide - lowest.rem_euclid(slide)) % slide;
    start.saturating_add(size)
}

/// A batch's key when it needs no evaluation per row: one field of the row, looked up in
/// place (cloning it into a buffer and dropping it again cost as much as the lookup when the
/// key exists), or a key that reads no field (`keyBy: {all: ...}`), evaluated once per batch
/// (it was a tenth of q7). On an error the caller evaluates, and dead-letters, row by row.
#[derive(Default)]
pub(super) struct FixedKey {
    field: Option<usize>,
    constant: Option<Vec<Value>>,
}

impl FixedKey {
    pub(super) fn of(spec: &WindowAggSpec, batch: &Batch) -> FixedKey {
        let field = match spec.key.as_slice() {
            [k] => k.field.filter(|&(v, _)| v == 0).map(|(_, f)| f),
            _ => None,
        };
        let constant = match batch.rows().next() {
            Some((first, _)) if spec.key.iter().all(Compiled::is_constant) => spec
                .key
                .iter()
                .map(|k| k.eval_value(&[first]).ok())
                .collect(),
            _ => None,
        };
        FixedKey { field, constant }
    }

    /// `row`'s key, unless it must be evaluated.
    #[inline]
    pub(super) fn get<'a>(&'a self, row: &'a [Value]) -> Option<&'a [Value]> {
        match (&self.constant, self.field.and_then(|f| row.get(f))) {
            (Some(k), _) => Some(k),
            (None, Some(v)) => Some(std::slice::from_ref(v)),
            (None, None) => None,
        }
    }
}

fn merge_accs(into: &mut Accs, from: &[Acc]) -> Result<(), crate::state::StateError> {
    for (a, b) in into.iter_mut().zip(from) {
        a.merge(b)
            .map_err(|e| crate::state::StateError::Corrupt(e.to_string()))?;
    }
    Ok(())
}

fn merge_into(
    merged: &mut super::slice_map::SliceMap,
    key: &[Value],
    accs: &[Acc],
) -> Result<(), crate::state::StateError> {
    let (into, inserted) = merged.get_or_try_insert(key, |fresh| {
        fresh.accs.extend(accs.iter().cloned());
        Ok::<_, StateError>(())
    })?;
    if !inserted {
        merge_accs(&mut into.accs, accs)?;
    }
    Ok(())
}

impl WindowAgg {
    /// What became of a row: late rows to the late output, failures to the dead letters.
    fn added(&mut self, added: Result<bool, String>, row: &[Value], time: i64, out: &mut Emit) {
        match added {
            Ok(true) => {}
            Ok(false) => out.late_row(&self.input, row, time, self.has_late_output),
            Err(e) => out.dead_row(&self.input, row, format!("aggregate: {e}")),
        }
    }
}

impl Operator for WindowAgg {
    fn on_batch(&mut self, _port: usize, batch: Batch, out: &mut Emit) {
        let spec = self.spec.clone();
        let now = if spec.window.processing_time {
            // Always after the clock this operator already fired to: a batch arriving in the
            // same millisecond as the tick that fired its window (or after the wall clock
            // stepped back) was late, so records went missing from processing-time windows.
            crate::connectors::now_ms().max(self.wm.saturating_add(1))
        } else {
            0
        };
        let mut args = Vec::with_capacity(spec.aggs.len());
        // Aggregates that read no field (`count()`) take the same arguments on every row:
        // rebuilding them per row stalled on reading back what was just written.
        let argless = spec.aggs.iter().all(|a| a.arg.is_none());
        if argless {
            args.extend(spec.aggs.iter().map(|_| V::Null));
        }
        let session = matches!(spec.window.kind, WindowKind::Session { .. });
        let fixed_key = if session {
            FixedKey::default()
        } else {
            FixedKey::of(&spec, &batch)
        };
        'rows: for (row, time) in batch.rows() {
            let ts = if spec.window.processing_time {
                now
            } else {
                time
            };
            if let Some(key) = fixed_key.get(row) {
                if !argless && let Err(e) = eval_args(&spec.aggs, &[row], &mut args) {
                    out.dead_row(&self.input, row, format!("aggregate: {e}"));
                    continue;
                }
                let added = self.on_row(ts, key, &args, &spec.aggs, out);
                self.added(added, row, time, out);
                continue;
            }
            self.key_buf.clear();
            for k in &spec.key {
                match k.eval_value(&[row]) {
                    Ok(v) => self.key_buf.push(v),
                    Err(e) => {
                        out.dead_row(&self.input, row, format!("key: {e}"));
                        continue 'rows;
                    }
                }
            }
            if !argless && let Err(e) = eval_args(&spec.aggs, &[row], &mut args) {
                out.dead_row(&self.input, row, format!("aggregate: {e}"));
                continue;
            }
            let added = if session {
                self.add_session(ts, &args, out)
            } else {
                let key = std::mem::take(&mut self.key_buf);
                let added = self.on_row(ts, &key, &args, &spec.aggs, out);
                self.key_buf = key;
                added
            };
            self.added(added, row, time, out);
        }
        self.bound_cache();
    }

    fn on_partials(&mut self, _port: usize, p: super::combiner::Partials, out: &mut Emit) {
        let n = self.spec.aggs.len();
        for (i, &(start, end)) in p.slices.iter().enumerate() {
            let key = super::combiner::partial_key(&p, i);
            let accs = super::combiner::partial_accs(&p, i, n);
            let records = p.records.get(i).copied().unwrap_or(0);
            if let Err(e) = self.merge_partial((start, end), key, (accs, records), out) {
                out.dead_raw(String::new(), format!("aggregate: {e}"));
            }
        }
        self.bound_cache();
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Emit) {
        if self.spec.window.processing_time && wm != i64::MAX {
            return;
        }
        self.wm = self.wm.max(wm);
        self.fire(self.wm, out);
        // Firing reloads spilled sessions.
        self.bound_cache();
    }

    fn on_tick(&mut self, now: i64, out: &mut Emit) {
        self.wm = self.wm.max(now);
        self.fire(self.wm, out);
        self.bound_cache();
    }

    fn failed(&mut self) -> Option<StateError> {
        self.failure.take()
    }

    fn wants_ticks(&self) -> bool {
        self.spec.window.processing_time
    }

    fn checkpoint_watermark(&self, input: i64) -> i64 {
        if self.spec.window.processing_time {
            // What fired follows this clock, not the input's event time (restored as
            // `fired_to`; windows that ended while the job was down fire on the first tick).
            self.wm
        } else {
            input
        }
    }

    fn stateful(&self) -> bool {
        true
    }

    fn open_state(
        &mut self,
        store: super::Keyed,
        restored: Option<i64>,
    ) -> Result<(), crate::state::StateError> {
        self.state = Some(store);
        if let Some(wm) = restored {
            self.wm = wm;
            // Windows the watermark passed fired before the checkpoint.
            self.fired_to = wm;
            self.restore()?;
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<&crate::state::StateStore>, crate::state::StateError> {
        self.write_dirty(false)?;
        Ok(self.state.as_ref().map(|s| &s.store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record that opens a key in a slice writes an entry, and most records of a keyed
    /// count do: 112 bytes (1.75 cache lines) before a count-distinct's set was boxed, 96
    /// before first/last's time and value were.
    #[test]
    fn a_slice_entry_stays_small() {
        assert!(std::mem::size_of::<Acc>() <= 32, "accumulator");
        assert!(std::mem::size_of::<Entry>() <= 80, "entry");
    }

    /// A batch processed after a tick that fired up to a later time than the batch's own
    /// clock reading (the same millisecond as the tick, or a clock stepped back) is counted in
    /// a window still open, not dropped as late.
    #[test]
    fn processing_time_rows_after_a_tick_are_never_late() {
        let yaml = "sources:\n  - { name: c, generator: { keys: 10 } }\nsteps:\n  - { name: w, from: c, keyBy: event.user, window: { tumbling: 50ms, time: processing }, aggregate: { n: count() } }\nsinks:\n  - { name: o, from: w, stdout: {} }\n";
        let (_, graph) = crate::plan::compile(yaml).expect("plan");
        let (spec, input, schema) = graph.first_window().expect("window node");
        let full = crate::connectors::generator::ClickConfig::schema();
        let mut op = WindowAgg::new(spec, input.clone(), false);
        let mut out = Emit::new("w".into(), schema);
        // A tick ahead of the wall clock: it fires every window ending by then.
        let ahead = crate::connectors::now_ms() + 60_000;
        op.on_tick(ahead - ahead.rem_euclid(50) + 49, &mut out);
        let config = crate::connectors::generator::ClickConfig::default();
        let mut batch = Batch::new(input.clone());
        for i in 0..5 {
            let seed_mix = crate::connectors::generator::mix64(config.seed);
            batch.push(input.project(&full, &config.record(seed_mix, i)), 0);
        }
        op.on_batch(0, batch, &mut out);
        op.on_watermark(i64::MAX, &mut out);
        let counted: i64 = out
            .take()
            .iter()
            .flat_map(|b| (0..b.len()).map(move |i| b.row(i)[3].clone()))
            .map(|v| match v {
                Value::Int(n) => n,
                other => panic!("count is {other:?}"),
            })
            .sum();
        assert_eq!(out.dropped_late, 0, "rows dropped as late");
        assert_eq!(counted, 5);
    }

    /// A partial for windows this window already closed (its watermark ran ahead of the
    /// sender's, after a restore or an idle spell) counts its records as dropped late, as they
    /// would have been one by one; one in time merges as if its records had come.
    #[test]
    fn late_partials_count_their_records_as_dropped() {
        let yaml = "sources:\n  - { name: c, generator: { keys: 10 } }\nsteps:\n  - { name: w, from: c, keyBy: event.user, window: { tumbling: 10ms }, aggregate: { n: count() } }\nsinks:\n  - { name: o, from: w, stdout: {} }\n";
        let (_, graph) = crate::plan::compile(yaml).expect("plan");
        let (spec, input, schema) = graph.first_window().expect("window node");
        let mut op = WindowAgg::new(spec, input, false);
        let mut out = Emit::new("w".into(), schema);
        op.on_watermark(25, &mut out);
        let partials = |start: i64, n: i64| super::super::combiner::Partials {
            width: 1,
            keys: vec![Value::from("u1")],
            slices: vec![(start, start + 10)],
            accs: vec![super::super::aggregate::Acc::Count(n)],
            records: vec![n as u64],
        };
        op.on_partials(0, partials(0, 4), &mut out);
        assert_eq!(out.dropped_late, 4);
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        op.on_partials(0, partials(30, 3), &mut out);
        op.on_partials(0, partials(30, 2), &mut out);
        op.on_watermark(i64::MAX, &mut out);
        let counts: Vec<Value> = out
            .take()
            .iter()
            .flat_map(|b| (0..b.len()).map(move |i| b.row(i)[3].clone()))
            .collect();
        assert_eq!(counts, vec![Value::Int(5)]);
    }
}
