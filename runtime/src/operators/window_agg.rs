//! Keyed windowed aggregation: tumbling, sliding and session windows, on event or processing
//! time, with allowed lateness and a late-data side output.
//!
//! Aligned windows keep one pane per window (ordered by end) holding a map from key to
//! accumulators, so firing on a watermark pops whole panes instead of scanning keys. Sessions
//! keep a list per key and a timer map ordered by session end.

use super::aggregate::{Acc, Accs, apply, eval_args, new_accs};
use super::window::WindowKind;
use super::{Emit, Operator};
use crate::expr::V;
use crate::job::graph::WindowAggSpec;
use crate::record::{Batch, Schema, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A key; a single-field key (the common case) lives inline, without an allocation.
pub(super) type Key = smallvec::SmallVec<[Value; 1]>;
pub(super) type Map<K, T> = HashMap<K, T, foldhash::fast::RandomState>;

/// One key's accumulators in one window.
pub(super) struct Entry {
    pub(super) accs: Accs,
    /// Emitted already (later updates re-emit, within the allowed lateness).
    pub(super) fired: bool,
    /// Changed since it was last written to the store.
    pub(super) dirty: bool,
}

#[derive(Default)]
pub(super) struct Pane {
    pub(super) keys: Map<Key, Entry>,
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
    pub(super) panes: BTreeMap<(i64, i64), Pane>,
    pub(super) sessions: Map<Key, Vec<Sess>>,
    pub(super) timers: BTreeMap<i64, Vec<Key>>,
    /// Session keys changed since the last snapshot.
    pub(super) dirty_sessions: std::collections::HashSet<Key, foldhash::fast::RandomState>,
    /// Pane entries in memory, against `Keyed::cache_entries`.
    pub(super) cached: usize,
    pub(super) state: Option<super::Keyed>,
    key_buf: Vec<Value>,
    /// Keys in the most recently fired pane, to size new panes.
    last_pane_keys: usize,
    win_buf: Vec<(i64, i64)>,
    /// Emptied maps of dropped panes, reused for new ones: a fresh map of thousands of keys
    /// is cold memory (page faults, then cache misses on every insert), a reused one is warm.
    spare: Vec<Map<Key, Entry>>,
}

impl WindowAgg {
    pub fn new(spec: Arc<WindowAggSpec>, input: Arc<Schema>, has_late_output: bool) -> WindowAgg {
        WindowAgg {
            spec,
            input,
            has_late_output,
            wm: i64::MIN,
            panes: BTreeMap::new(),
            sessions: Map::default(),
            timers: BTreeMap::new(),
            dirty_sessions: Default::default(),
            cached: 0,
            state: None,
            key_buf: Vec::new(),
            last_pane_keys: 0,
            win_buf: Vec::new(),
            spare: Vec::new(),
        }
    }

    pub(super) fn emit_row(out: &mut Emit, key: &[Value], start: i64, end: i64, accs: &[Acc]) {
        let row = key
            .iter()
            .cloned()
            .chain([Value::Int(start), Value::Int(end)])
            .chain(accs.iter().map(Acc::result));
        out.push(row, end - 1);
    }

    fn fire(&mut self, w: i64, out: &mut Emit) {
        let window = self.spec.window;
        if let WindowKind::Session { .. } = window.kind {
            let mut keep: Vec<(i64, Key)> = Vec::new();
            while let Some(entry) = self.timers.first_entry() {
                if *entry.key() - 1 > w {
                    break;
                }
                let (end, keys) = entry.remove_entry();
                for key in keys {
                    let Some(list) = self.sessions.get_mut(&key) else {
                        continue;
                    };
                    let Some(pos) = list.iter().position(|s| s.end == end) else {
                        continue;
                    };
                    let s = &mut list[pos];
                    if !s.fired {
                        Self::emit_row(out, &key, s.start, s.end, &s.accs);
                        s.fired = true;
                    }
                    self.dirty_sessions.insert(key.clone());
                    if window.is_late(end, w) {
                        list.swap_remove(pos);
                        if list.is_empty() {
                            self.sessions.remove(&key);
                        }
                    } else {
                        keep.push((end, key));
                    }
                }
            }
            for (end, key) in keep {
                self.timers.entry(end).or_default().push(key);
            }
            return;
        }
        let mut done = Vec::new();
        let mut spilled = Vec::new();
        for (&(end, start), pane) in self.panes.range_mut(..=(w.saturating_add(1), i64::MAX)) {
            for (key, e) in pane.keys.iter_mut() {
                if !e.fired {
                    Self::emit_row(out, key, start, end, &e.accs);
                    e.fired = true;
                    e.dirty = true;
                }
            }
            self.last_pane_keys = pane.keys.len();
            if pane.spilled {
                spilled.push((end, start));
            }
            if window.is_late(end, w) {
                done.push((end, start));
            }
        }
        for (end, start) in spilled {
            let late = window.is_late(end, w);
            if let Err(e) = self.fire_spilled(end, start, late, out) {
                out.dead_raw(String::new(), format!("state store: {e}"));
            }
        }
        for k in done {
            if let Some(mut pane) = self.panes.remove(&k) {
                self.cached -= pane.keys.len();
                if pane.persisted
                    && let Err(e) = self.forget(k)
                {
                    out.dead_raw(String::new(), format!("state store: {e}"));
                }
                if self.spare.len() < 2 {
                    pane.keys.clear();
                    self.spare.push(pane.keys);
                }
            }
        }
    }

    fn add_session(&mut self, ts: i64, args: &[V<'_>], out: &mut Emit) -> Result<bool, String> {
        let window = self.spec.window;
        let WindowKind::Session { gap } = window.kind else {
            return Ok(true);
        };
        let (mut start, mut end) = (ts, ts.saturating_add(gap));
        let list = self.sessions.get(&self.key_buf[..]);
        // Flink merges sessions that overlap or touch.
        if let Some(list) = list {
            for s in list {
                if s.start <= end && s.end >= start {
                    start = start.min(s.start);
                    end = end.max(s.end);
                }
            }
        }
        if window.is_late(end, self.wm) {
            return Ok(false);
        }
        let key: Key = self.key_buf.iter().cloned().collect::<Key>();
        let list = self.sessions.entry(key.clone()).or_default();
        let mut accs = new_accs(&self.spec.aggs);
        let mut i = 0;
        while i < list.len() {
            if list[i].start <= end && list[i].end >= start {
                let old = list.swap_remove(i);
                for (a, b) in accs.iter_mut().zip(old.accs.iter()) {
                    a.merge(b).map_err(|e| e.to_string())?;
                }
            } else {
                i += 1;
            }
        }
        apply(&self.spec.aggs, &mut accs, args, ts).map_err(|e| e.to_string())?;
        let mut s = Sess {
            start,
            end,
            accs,
            fired: false,
        };
        if end - 1 <= self.wm {
            Self::emit_row(out, &key, start, end, &s.accs);
            s.fired = true;
        }
        list.push(s);
        self.dirty_sessions.insert(key.clone());
        self.timers.entry(end).or_default().push(key);
        Ok(true)
    }

    fn on_row(&mut self, ts: i64, args: &[V<'_>], out: &mut Emit) -> Result<bool, String> {
        if let WindowKind::Session { .. } = self.spec.window.kind {
            return self.add_session(ts, args, out);
        }
        let window = self.spec.window;
        self.win_buf.clear();
        let buf = &mut self.win_buf;
        window.assign(ts, |s, e| buf.push((s, e)));
        let mut any = false;
        for &(start, end) in &self.win_buf {
            if window.is_late(end, self.wm) {
                continue;
            }
            any = true;
            // A window the watermark already passed (within the allowed lateness) fires on
            // every record, as Flink's event-time trigger does.
            let wm = self.wm;
            // Size a new pane like the last one: growing a map of thousands of keys rehashes
            // (and moves) it many times.
            let hint = self.last_pane_keys;
            let spare = &mut self.spare;
            let pane = self.panes.entry((end, start)).or_insert_with(|| Pane {
                keys: spare
                    .pop()
                    .unwrap_or_else(|| Map::with_capacity_and_hasher(hint, Default::default())),
                ..Pane::default()
            });
            let entry = match pane.keys.get_mut(&self.key_buf[..]) {
                Some(e) => e,
                None => {
                    let restored = match (&self.state, pane.spilled) {
                        (Some(st), true) => {
                            super::window_store::load(st, end, start, &self.key_buf)
                                .map_err(|e| format!("state store: {e}"))?
                        }
                        _ => None,
                    };
                    self.cached += 1;
                    pane.keys
                        .entry(self.key_buf.iter().cloned().collect::<Key>())
                        .or_insert_with(|| {
                            restored.unwrap_or_else(|| Entry {
                                accs: new_accs(&self.spec.aggs),
                                fired: end - 1 <= wm,
                                dirty: true,
                            })
                        })
                }
            };
            apply(&self.spec.aggs, &mut entry.accs, args, ts).map_err(|e| e.to_string())?;
            entry.dirty = true;
            if entry.fired {
                // A late record within the allowed lateness: emit the updated result now.
                Self::emit_row(out, &self.key_buf, start, end, &entry.accs);
            }
        }
        Ok(any)
    }
}

impl Operator for WindowAgg {
    fn on_batch(&mut self, _port: usize, batch: Batch, out: &mut Emit) {
        let spec = self.spec.clone();
        let now = if spec.window.processing_time {
            crate::connectors::now_ms()
        } else {
            0
        };
        let mut args = Vec::with_capacity(spec.aggs.len());
        'rows: for (row, time) in batch.rows() {
            let ts = if spec.window.processing_time {
                now
            } else {
                time
            };
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
            if let Err(e) = eval_args(&spec.aggs, &[row], &mut args) {
                out.dead_row(&self.input, row, format!("aggregate: {e}"));
                continue;
            }
            match self.on_row(ts, &args, out) {
                Ok(true) => {}
                Ok(false) => {
                    let input = self.input.clone();
                    out.late_row(&input, row, time, self.has_late_output)
                }
                Err(e) => out.dead_row(&self.input, row, format!("aggregate: {e}")),
            }
        }
        if let Some(st) = &self.state
            && self.cached > st.cache_entries
            && let Err(e) = self.evict()
        {
            out.dead_raw(String::new(), format!("state store: {e}"));
        }
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Emit) {
        if self.spec.window.processing_time && wm != i64::MAX {
            return;
        }
        self.wm = self.wm.max(wm);
        self.fire(self.wm, out);
    }

    fn on_tick(&mut self, now: i64, out: &mut Emit) {
        self.wm = self.wm.max(now);
        self.fire(self.wm, out);
    }

    fn wants_ticks(&self) -> bool {
        self.spec.window.processing_time
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
            self.restore()?;
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<&crate::state::StateStore>, crate::state::StateError> {
        self.write_dirty(false)?;
        Ok(self.state.as_ref().map(|s| &s.store))
    }
}
