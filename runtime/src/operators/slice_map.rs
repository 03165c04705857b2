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
use super::window_agg::{Entry, Key};
use crate::record::Value;
use hashbrown::HashTable;
use std::hash::BuildHasher as _;

#[derive(Default)]
pub(super) struct SliceMap {
    index: HashTable<u32>,
    keys: Vec<Key>,
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

    fn find(&self, key: &[Value]) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&i| self.keys[i as usize][..] == *key)
            .map(|&i| i as usize)
    }

    pub(super) fn get(&self, key: &[Value]) -> Option<&Entry> {
        self.find(key).map(|i| &self.entries[i])
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
        if let Some(i) = self.last
            && self.keys[i][..] == *key
        {
            return Ok((&mut self.entries[i], false));
        }
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        let hasher = &self.hasher;
        let found = self
            .index
            .find(hash, |&i| keys[i as usize][..] == *key)
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
                // A one-value key is built whole: an empty key pushed, then filled, was read
                // back before its first write had reached the cache (a stalled load). Built
                // whole it still passes through the stack, and one such load is left.
                self.keys.push(match key {
                    [one] => Key::from_buf([one.clone()]),
                    _ => key.iter().cloned().collect(),
                });
                let keys = &self.keys;
                self.index
                    .insert_unique(hash, i as u32, |&j| hasher.hash_one(&keys[j as usize][..]));
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
            self.keys.pop();
            self.last = None;
        }
    }

    /// Takes every key and entry out, leaving the map empty with its memory.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (Key, Entry)> + '_ {
        self.index.clear();
        self.last = None;
        self.keys.drain(..).zip(self.entries.drain(..))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.keys.iter().zip(&self.entries)
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&Key, &mut Entry)> {
        self.keys.iter().zip(&mut self.entries)
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
        let drained: Vec<Key> = m.drain().map(|(k, _)| k).collect();
        assert_eq!(drained.len(), 2);
        assert_eq!(m.len(), 0);
        assert!(!m.contains_key(&[Value::Int(1)]));
        let failed = m.get_or_try_insert(&[Value::Int(1)], |_| Err("no"));
        assert!(failed.is_err());
        assert_eq!(m.len(), 0);
    }
}
