//! A slice's keys and their accumulators: a hash table of 4-byte indices over vectors of keys
//! and of entries in insertion order.
//!
//! A map holding `(key, accumulators)` in its buckets was ~150 bytes a bucket: a slice of a
//! few thousand keys outgrew this machine's 1 MiB L2, and every new key's insert missed the
//! cache (a third of the window operator's time at P=2). Here the randomly probed part is 4
//! bytes a key and new entries are appended, so inserts stay in cache. Keys (32 bytes) are
//! kept apart from their accumulators (112): a lookup compares keys only, and loading a
//! key from a 144-byte `(key, entry)` pair was the hottest instruction of a keyed count.

use super::aggregate::Accs;
use super::window_agg::Entry;
use crate::record::{Value, keys_eq};
use hashbrown::HashTable;
use std::hash::BuildHasher as _;

#[derive(Default)]
pub(super) struct SliceMap {
    index: HashTable<u32>,
    /// Key `i` is `keys[i * width..][..width]`: one vector of values rather than a vector
    /// per key, whose header made a key 32 bytes and whose copy into place went through the
    /// stack in pieces (a stalled load per new key).
    keys: Vec<Value>,
    /// Values per key, set by the first insert into an empty map (a window's keys all have
    /// the width of its `keyBy`).
    width: usize,
    entries: Vec<Entry>,
    hasher: foldhash::fast::RandomState,
    /// The entry the last lookup found: runs of one key (a global key, as in `keyBy: {all:
    /// ...}`, or bursts) skip hashing.
    last: Option<usize>,
}

impl SliceMap {
    pub(super) fn with_capacity(n: usize) -> SliceMap {
        SliceMap {
            index: HashTable::with_capacity(n),
            keys: Vec::with_capacity(n),
            width: 0,
            entries: Vec::with_capacity(n),
            hasher: Default::default(),
            last: None,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Empties the map, keeping its memory for reuse.
    pub(super) fn clear(&mut self) {
        self.index.clear();
        self.keys.clear();
        self.entries.clear();
        self.last = None;
    }

    /// Key `i`.
    #[inline]
    fn key(keys: &[Value], width: usize, i: usize) -> &[Value] {
        &keys[i * width..(i + 1) * width]
    }

    fn find(&self, key: &[Value]) -> Option<usize> {
        if key.len() != self.width {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&i| {
                keys_eq(Self::key(&self.keys, self.width, i as usize), key)
            })
            .map(|&i| i as usize)
    }

    pub(super) fn get(&self, key: &[Value]) -> Option<&Entry> {
        self.find(key).map(|i| &self.entries[i])
    }

    pub(super) fn get_mut(&mut self, key: &[Value]) -> Option<&mut Entry> {
        self.find(key).map(|i| &mut self.entries[i])
    }

    pub(super) fn contains_key(&self, key: &[Value]) -> bool {
        self.find(key).is_some()
    }

    /// The entry of `key`; if absent, a new entry (no accumulators, dirty) is added and
    /// filled by `init` (whose failure removes it again). Returns whether it was inserted.
    ///
    /// New entries and keys are built where they will live: returning a 112-byte entry from a
    /// closure and cloning the key into a temporary made the compiler copy both through the
    /// stack with overlapping moves that defeat store forwarding (a quarter of the window's
    /// time in a keyed count, where most records open a new entry).
    pub(super) fn get_or_try_insert<E>(
        &mut self,
        key: &[Value],
        init: impl FnOnce(&mut Entry) -> Result<(), E>,
    ) -> Result<(&mut Entry, bool), E> {
        if self.entries.is_empty() {
            self.width = key.len();
        }
        let width = self.width;
        assert_eq!(key.len(), width, "a slice's keys all have one width");
        if let Some(i) = self.last
            && keys_eq(Self::key(&self.keys, width, i), key)
        {
            return Ok((&mut self.entries[i], false));
        }
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        let hasher = &self.hasher;
        let found = self
            .index
            .find(hash, |&i| keys_eq(Self::key(keys, width, i as usize), key))
            .copied();
        let (i, inserted) = match found {
            Some(i) => (i as usize, false),
            None => {
                let i = self.entries.len();
                self.entries.push(Entry {
                    accs: Accs::new(),
                    dirty: true,
                });
                if let Err(e) = init(&mut self.entries[i]) {
                    self.entries.pop();
                    return Err(e);
                }
                match key {
                    [one] => self.keys.push(one.clone()),
                    _ => self.keys.extend(key.iter().cloned()),
                }
                let keys = &self.keys;
                self.index.insert_unique(hash, i as u32, |&j| {
                    hasher.hash_one(Self::key(keys, width, j as usize))
                });
                (i, true)
            }
        };
        self.last = Some(i);
        Ok((&mut self.entries[i], inserted))
    }

    /// Removes the entry just inserted for `key` (the last one).
    pub(super) fn remove_last(&mut self, key: &[Value]) {
        let hash = self.hasher.hash_one(key);
        let last = self.entries.len().wrapping_sub(1) as u32;
        if let Ok(slot) = self.index.find_entry(hash, |&i| i == last) {
            slot.remove();
            self.entries.pop();
            self.keys.truncate(self.entries.len() * self.width);
            self.last = None;
        }
    }

    /// Takes every key and entry out, leaving the map empty with its memory: the keys' values
    /// in order (`width` per entry) and the entries.
    pub(super) fn drain(&mut self) -> Drain<'_> {
        self.index.clear();
        self.last = None;
        Drain {
            width: self.width,
            keys: self.keys.drain(..),
            entries: self.entries.drain(..),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[Value], &Entry)> {
        let (keys, width) = (&self.keys, self.width);
        (self.entries.iter().enumerate()).map(move |(i, e)| (Self::key(keys, width, i), e))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&[Value], &mut Entry)> {
        let (keys, width) = (&self.keys, self.width);
        (self.entries.iter_mut().enumerate()).map(move |(i, e)| (Self::key(keys, width, i), e))
    }
}

/// A drained map's keys and entries.
pub(super) struct Drain<'a> {
    width: usize,
    keys: std::vec::Drain<'a, Value>,
    entries: std::vec::Drain<'a, Entry>,
}

impl Drain<'_> {
    /// The next entry, and its key's values.
    pub(super) fn next_entry(&mut self) -> Option<(Entry, impl Iterator<Item = Value> + '_)> {
        let e = self.entries.next()?;
        Some((e, self.keys.by_ref().take(self.width)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: i64) -> impl FnOnce(&mut Entry) -> Result<(), ()> {
        move |e| {
            e.accs.push(crate::operators::aggregate::Acc::Count(n));
            Ok(())
        }
    }

    #[test]
    fn finds_what_it_inserted_across_growth_and_clear() {
        let mut m = SliceMap::with_capacity(2);
        for round in 0..2 {
            for i in 0..5000i64 {
                let key = [Value::Int(i % 2500), Value::from("k")];
                let (_, inserted) = m.get_or_try_insert(&key, count(i)).expect("inserts");
                assert_eq!(inserted, i < 2500, "round {round} key {i}");
            }
            assert_eq!(m.len(), 2500);
            assert!(m.contains_key(&[Value::Int(7), Value::from("k")]));
            assert!(!m.contains_key(&[Value::Int(7), Value::from("x")]));
            assert!(m.get(&[Value::Int(2500), Value::from("k")]).is_none());
            m.clear();
            assert_eq!(m.len(), 0);
        }
        // Taking back the entry just inserted (the combiner's failed first update) leaves
        // the others findable.
        m.get_or_try_insert(&[Value::Int(1)], count(1))
            .expect("inserts");
        m.get_or_try_insert(&[Value::Int(2)], count(2))
            .expect("inserts");
        m.remove_last(&[Value::Int(2)]);
        assert_eq!(m.len(), 1);
        assert!(!m.contains_key(&[Value::Int(2)]));
        assert!(m.contains_key(&[Value::Int(1)]));
        let (_, inserted) = m
            .get_or_try_insert(&[Value::Int(2)], count(3))
            .expect("inserts");
        assert!(inserted);
        let mut drained = Vec::new();
        let mut d = m.drain();
        while let Some((_, key)) = d.next_entry() {
            drained.push(key.collect::<Vec<_>>());
        }
        drop(d);
        assert_eq!(drained, [vec![Value::Int(1)], vec![Value::Int(2)]]);
        assert_eq!(m.len(), 0);
        assert!(!m.contains_key(&[Value::Int(1)]));
        let failed = m.get_or_try_insert(&[Value::Int(1)], |_| Err("no"));
        assert!(failed.is_err());
        assert_eq!(m.len(), 0);
    }
}
