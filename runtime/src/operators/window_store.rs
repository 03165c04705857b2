//! How the window operator's state lives in its store: spilling panes past the cache,
//! snapshots of what changed, firing and dropping panes that live partly in the store, and
//! restoring.
//!
//! Keys: `kg | 1 | end | start | key` for a slice entry (value: a reserved byte, then the
//! accumulators; the byte was a "fired" flag, which the watermark now implies) and
//! `kg | 2 | key` for a key's sessions (value: count, then start, end, fired, accumulators
//! each). Times are order-preserving, so one pane of one key group is one prefix.

use super::Keyed;
use super::aggregate::Accs;
use super::window_agg::{Entry, Key, Sess, WindowAgg};
use crate::exchange::canonical_value_bytes;
use crate::record::Value;
use crate::state::codec::{Reader, put_acc, put_ordered_i64, put_u64};
use crate::state::{StateError, kg_prefix, window_prefix};
use rocksdb::WriteBatch;

const PANE: u8 = 1;
const SESSION: u8 = 2;

fn key_bytes(key: &[Value]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    for v in key {
        canonical_value_bytes(v, &mut b);
    }
    b
}

fn pane_prefix(kg: u32, end: i64, start: i64) -> Vec<u8> {
    window_prefix(kg, PANE, end, start)
}

fn pane_key(st: &Keyed, end: i64, start: i64, key: &[Value]) -> Vec<u8> {
    let kb = key_bytes(key);
    let mut k = pane_prefix(st.kg(&kb), end, start);
    k.extend_from_slice(&kb);
    k
}

fn put_accs(accs: &Accs, out: &mut Vec<u8>) {
    for a in accs {
        put_acc(a, out);
    }
}

fn read_accs(r: &mut Reader<'_>, n: usize) -> Result<Accs, StateError> {
    (0..n).map(|_| r.acc()).collect()
}

fn entry_value(e: &Entry) -> Vec<u8> {
    let mut v = vec![0u8];
    put_accs(&e.accs, &mut v);
    v
}

/// An entry's accumulators run to the end of its value.
fn read_entry(v: &[u8]) -> Result<Entry, StateError> {
    let mut r = Reader::new(v);
    r.u8()?;
    let mut accs = Accs::new();
    while !r.is_empty() {
        accs.push(r.acc()?);
    }
    Ok(Entry { accs, dirty: false })
}

/// `kg | 2 | key`: where a key's sessions are stored.
fn session_key(st: &Keyed, key: &[Value]) -> Vec<u8> {
    let kb = key_bytes(key);
    let mut k = kg_prefix(st.kg(&kb)).to_vec();
    k.push(SESSION);
    k.extend_from_slice(&kb);
    k
}

/// A key's stored sessions: count, then start, end, fired and accumulators of each.
fn read_sessions(v: &[u8], n_aggs: usize) -> Result<Vec<Sess>, StateError> {
    let mut r = Reader::new(v);
    let n = r.u64()? as usize;
    let mut list = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let (start, end) = (r.ordered_i64()?, r.ordered_i64()?);
        let fired = r.u8()? != 0;
        let accs = read_accs(&mut r, n_aggs)?;
        list.push(Sess {
            start,
            end,
            accs,
            fired,
        });
    }
    Ok(list)
}

/// The stored entry of `key` in pane `(end, start)`, if it was spilled.
pub(super) fn load(
    st: &Keyed,
    end: i64,
    start: i64,
    key: &[Value],
) -> Result<Option<Entry>, StateError> {
    match st.store.get(&pane_key(st, end, start, key))? {
        Some(v) => {
            let mut e = read_entry(&v)?;
            // Back in memory and about to change: written again at the next snapshot.
            e.dirty = true;
            Ok(Some(e))
        }
        None => Ok(None),
    }
}

impl WindowAgg {
    /// Writes every changed entry and session to the store; with `evict`, also empties the
    /// panes with the latest ends (the ones least likely to fire soon) until the cache is half
    /// full.
    pub(super) fn write_dirty(&mut self, evict: bool) -> Result<(), StateError> {
        let Some(st) = &self.state else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        let target = st.cache_entries / 2;
        // Entries count as clean, and panes as evictable, only once their write succeeded: a
        // failed write leaves them dirty for the next attempt (the task stops on it anyway).
        for (&(end, start), pane) in self.panes.iter_mut().rev() {
            let mut wrote = false;
            for (key, e) in pane.keys.iter() {
                if e.dirty {
                    pane.persisted = true;
                    wrote = true;
                    batch.put(pane_key(st, end, start, key), entry_value(e));
                    st.store.write_when_full(&mut batch)?;
                }
            }
            st.store.write(std::mem::take(&mut batch))?;
            if wrote {
                for (_, e) in pane.keys.iter_mut() {
                    e.dirty = false;
                }
            }
            if evict && self.cached > target {
                self.cached -= pane.keys.len();
                pane.keys = Default::default();
                pane.spilled = true;
                pane.persisted = true;
            }
        }
        for key in self.dirty_sessions.iter() {
            let k = session_key(st, key);
            match self.sessions.get(key) {
                Some(list) if !list.is_empty() => {
                    let mut v = Vec::new();
                    put_u64(list.len() as u64, &mut v);
                    for s in list {
                        put_ordered_i64(s.start, &mut v);
                        put_ordered_i64(s.end, &mut v);
                        v.push(u8::from(s.fired));
                        put_accs(&s.accs, &mut v);
                    }
                    batch.put(k, v);
                }
                _ => batch.delete(k),
            }
            st.store.write_when_full(&mut batch)?;
        }
        st.store.write(batch)?;
        self.dirty_sessions.clear();
        // Every session is clean now: whichever go, the store has them. Their timers stay.
        if evict && self.cached + self.sessions.len() > target {
            let mut drop = (self.cached + self.sessions.len() - target).min(self.sessions.len());
            self.sessions.retain(|_, _| {
                let keep = drop == 0;
                drop = drop.saturating_sub(1);
                keep
            });
            self.sessions_spilled = true;
        }
        Ok(())
    }

    /// Brings `key`'s sessions back from the store if they were spilled.
    pub(super) fn load_sessions(&mut self, key: &[Value]) -> Result<(), StateError> {
        // A changed key missing from memory had its last session dropped: the store's copy
        // is stale until the next write deletes it.
        if !self.sessions_spilled
            || self.sessions.contains_key(key)
            || self.dirty_sessions.contains(key)
        {
            return Ok(());
        }
        let Some(st) = &self.state else {
            return Ok(());
        };
        if let Some(v) = st.store.get(&session_key(st, key))? {
            let list = read_sessions(&v, self.spec.aggs.len())?;
            self.sessions.insert(key.iter().cloned().collect(), list);
        }
        Ok(())
    }

    pub(super) fn evict(&mut self) -> Result<(), StateError> {
        tracing::debug!(cached = self.cached, "window state: spilling to the store");
        self.write_dirty(true)
    }

    /// Calls `f` with each stored entry of a spilled slice whose key is not in memory (the
    /// in-memory copy is the newer one).
    pub(super) fn for_each_spilled(
        &self,
        (end, start): (i64, i64),
        key_groups: std::ops::RangeInclusive<u32>,
        mut f: impl FnMut(Key, Accs) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let Some(st) = &self.state else {
            return Ok(());
        };
        let Some(pane) = self.panes.get(&(end, start)) else {
            return Ok(());
        };
        let n_keys = self.spec.key.len();
        for kg in key_groups {
            let prefix = pane_prefix(kg, end, start);
            for item in st.store.scan(&prefix) {
                let (k, v) = item?;
                let key: Key = Reader::new(&k[prefix.len()..]).values(n_keys)?.into();
                if pane.keys.contains_key(&key) {
                    continue;
                }
                f(key, read_entry(&v)?.accs)?;
            }
        }
        Ok(())
    }

    /// Removes a dropped pane's entries from the store.
    pub(super) fn forget(&mut self, (end, start): (i64, i64)) -> Result<(), StateError> {
        let Some(st) = &self.state else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        for kg in st.store.range.0..=st.store.range.1 {
            let from = pane_prefix(kg, end, start);
            let to = if start == i64::MAX {
                let mut t = pane_prefix(kg, end, start);
                t.push(0xff);
                t
            } else {
                pane_prefix(kg, end, start + 1)
            };
            batch.delete_range(from, to);
        }
        st.store.write(batch)
    }

    /// Rebuilds panes (left in the store, fetched on demand) and sessions from a restored store.
    pub(super) fn restore(&mut self) -> Result<(), StateError> {
        let Some(st) = &self.state else {
            return Ok(());
        };
        let n_keys = self.spec.key.len();
        let n_aggs = self.spec.aggs.len();
        for kg in st.store.range.0..=st.store.range.1 {
            let p = kg_prefix(kg);
            for item in st.store.scan(&[p[0], p[1], PANE]) {
                let (k, _) = item?;
                let mut r = Reader::new(&k[3..]);
                let (end, start) = (r.ordered_i64()?, r.ordered_i64()?);
                let pane = self.panes.entry((end, start)).or_default();
                pane.spilled = true;
                pane.persisted = true;
            }
            for item in st.store.scan(&[p[0], p[1], SESSION]) {
                let (k, v) = item?;
                let key: Key = Reader::new(&k[3..]).values(n_keys)?.into();
                let list = read_sessions(&v, n_aggs)?;
                for s in &list {
                    self.timers.entry(s.end).or_default().push(key.clone());
                }
                // Past half the cache, sessions stay in the store until a record or a timer
                // needs them.
                if self.cached + self.sessions.len() < st.cache_entries / 2 {
                    self.sessions.insert(key, list);
                } else {
                    self.sessions_spilled = true;
                }
            }
        }
        Ok(())
    }
}
