//! How the join's buffered rows live in its store: appended row by row (a snapshot writes only
//! the rows that arrived since the last one), read back when a spilled window fires or a late
//! row needs the other side, and dropped with the window.
//!
//! Keys: `kg | 3 | end | start | key | side | seq` for a row (value: its fields),
//! `kg | 4 | end | start` marking a window whose pairs were emitted, and `kg | 5` holding the
//! next free `seq`. Times are order-preserving
//! and the key is self-delimiting, so one window of one key group, and one key's side in it,
//! are each one prefix. `seq` (big-endian, unique per instance and never reused after a
//! restore) keeps a side's rows in arrival order.

use super::Keyed;
use crate::record::Value;
use crate::state::codec::{Reader, put_value, put_values};
use crate::state::{StateError, kg_prefix, window_prefix};
use rocksdb::WriteBatch;
use std::collections::{BTreeMap, BTreeSet};

const ROW: u8 = 3;
const FIRED: u8 = 4;
/// `kg | 5`: the instance's next free row number when it last snapshotted.
const NEXT: u8 = 5;

use super::join_rows::Rows;

/// The canonical bytes of a join key and its key group.
pub(super) fn key_bytes(st: &Keyed, key: &Value, buf: &mut Vec<u8>) -> u32 {
    buf.clear();
    put_value(key, buf);
    st.kg(buf)
}

fn side_prefix(kg: u32, (end, start): (i64, i64), key: &[u8], side: usize) -> Vec<u8> {
    let mut k = window_prefix(kg, ROW, end, start);
    k.extend_from_slice(key);
    k.push(side as u8);
    k
}

/// Queues rows `rows` of one key's side for writing, numbered from `*seq`.
pub(super) fn put_rows<'a>(
    batch: &mut WriteBatch,
    (kg, window, key): (u32, (i64, i64), &[u8]),
    side: usize,
    rows: impl Iterator<Item = &'a [Value]>,
    seq: &mut u64,
) {
    let prefix = side_prefix(kg, window, key, side);
    let mut v = Vec::new();
    for row in rows {
        let mut k = Vec::with_capacity(prefix.len() + 8);
        k.extend_from_slice(&prefix);
        k.extend_from_slice(&seq.to_be_bytes());
        *seq += 1;
        v.clear();
        put_values(row, &mut v);
        batch.put(k, &v);
    }
}

/// Queues the marker saying window `window`'s pairs were emitted, for key group `kg`.
pub(super) fn put_fired(batch: &mut WriteBatch, kg: u32, (end, start): (i64, i64)) {
    batch.put(window_prefix(kg, FIRED, end, start), []);
}

/// The stored rows of one key's side in a window, in arrival order.
pub(super) fn load_side(
    st: &Keyed,
    (kg, window, key): (u32, (i64, i64), &[u8]),
    side: usize,
    width: usize,
) -> Result<Rows, StateError> {
    let prefix = side_prefix(kg, window, key, side);
    st.store
        .scan(&prefix)
        .try_fold(Rows::new(), |mut rows, item| {
            let (_, v) = item?;
            rows.push_owned(Reader::new(&v).values(width)?);
            Ok(rows)
        })
}

/// Calls `f` with each key's stored rows of a window in key groups `kgs`, one key at a time
/// (rows of a key are adjacent in the store: `key | side | seq`), so firing a spilled window
/// holds one key's rows, not the window's.
pub(super) fn for_each_stored_key(
    st: &Keyed,
    window: (i64, i64),
    kgs: &BTreeSet<u32>,
    widths: [usize; 2],
    mut f: impl FnMut(Value, [Rows; 2]),
) -> Result<(), StateError> {
    for &kg in kgs {
        let prefix = window_prefix(kg, ROW, window.0, window.1);
        let mut cur: Option<(Value, [Rows; 2])> = None;
        for item in st.store.scan(&prefix) {
            let (k, v) = item?;
            let (key, side, _) = parse_row_key(&k[prefix.len()..])?;
            let row = Reader::new(&v).values(widths[side])?;
            match &mut cur {
                Some((c, rows)) if *c == key => rows[side].push_owned(row),
                _ => {
                    if let Some((c, rows)) = cur.take() {
                        f(c, rows);
                    }
                    let mut rows: [Rows; 2] = Default::default();
                    rows[side].push_owned(row);
                    cur = Some((key, rows));
                }
            }
        }
        if let Some((c, rows)) = cur {
            f(c, rows);
        }
    }
    Ok(())
}

/// `key | side | seq` after a window's prefix.
fn parse_row_key(rest: &[u8]) -> Result<(Value, usize, u64), StateError> {
    let mut r = Reader::new(rest);
    let key = r.value()?;
    let side = r.u8()? as usize;
    let seq = r.rest();
    if side > 1 || seq.len() != 8 {
        return Err(StateError::Corrupt("join row key".into()));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(seq);
    Ok((key, side, u64::from_be_bytes(b)))
}

/// Deletes window `window`'s rows and marker in key groups `kgs`.
pub(super) fn drop_window(
    st: &Keyed,
    (end, start): (i64, i64),
    kgs: &BTreeSet<u32>,
) -> Result<(), StateError> {
    let mut b = WriteBatch::default();
    for &kg in kgs {
        for tag in [ROW, FIRED] {
            let from = window_prefix(kg, tag, end, start);
            let mut to = from.clone();
            // The next start after this one: the prefix's last 8 bytes are the start.
            let next = start.checked_add(1).map(|s| window_prefix(kg, tag, end, s));
            match next {
                Some(n) => to = n,
                None => to.push(0xff),
            }
            b.delete_range(from, to);
        }
    }
    st.store.write(b)
}

/// A window as restored: the key groups holding its rows, and those marked fired.
#[derive(Default)]
pub(super) struct Restored {
    pub kgs: BTreeSet<u32>,
    pub fired: BTreeSet<u32>,
}

/// Restored windows by `(end, start)`.
pub(super) type Windows = BTreeMap<(i64, i64), Restored>;

/// Queues, in every key group of the instance, the next free row number: a restore then
/// numbers new rows past every stored one without reading them.
pub(super) fn put_next_seq(batch: &mut WriteBatch, st: &Keyed, seq: u64) {
    for kg in st.store.range.0..=st.store.range.1 {
        let p = kg_prefix(kg);
        batch.put([p[0], p[1], NEXT], seq.to_le_bytes());
    }
}

/// What the store holds for this instance's key groups: its windows (found by seeking from
/// one window to the next, not by reading rows), and the next free row number.
pub(super) fn restore(st: &Keyed) -> Result<(Windows, u64), StateError> {
    let mut windows = Windows::new();
    let mut next = 0u64;
    for kg in st.store.range.0..=st.store.range.1 {
        let p = kg_prefix(kg);
        let counter = st.store.get(&[p[0], p[1], NEXT])?;
        if let Some(v) = &counter {
            let b: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| StateError::Corrupt("join row counter".into()))?;
            next = next.max(u64::from_le_bytes(b));
        }
        let rows = [p[0], p[1], ROW];
        if counter.is_none() {
            // Rows without a counter (written before it was kept): number past each of them.
            for item in st.store.scan(&rows) {
                let (k, _) = item?;
                let mut r = Reader::new(&k[3..]);
                r.ordered_i64()?;
                r.ordered_i64()?;
                let (_, _, seq) = parse_row_key(r.rest())?;
                next = next.max(seq + 1);
            }
        }
        let mut from = rows.to_vec();
        loop {
            let Some(item) = st.store.scan_from(&rows, &from).next() else {
                break;
            };
            let (k, _) = item?;
            let mut r = Reader::new(&k[3..]);
            let (end, start) = (r.ordered_i64()?, r.ordered_i64()?);
            windows.entry((end, start)).or_default().kgs.insert(kg);
            from = match start.checked_add(1) {
                Some(s) => window_prefix(kg, ROW, end, s),
                None => match end.checked_add(1) {
                    Some(e) => window_prefix(kg, ROW, e, i64::MIN),
                    None => break,
                },
            };
        }
        for item in st.store.scan(&[p[0], p[1], FIRED]) {
            let (k, _) = item?;
            let mut r = Reader::new(&k[3..]);
            let window = (r.ordered_i64()?, r.ordered_i64()?);
            let w = windows.entry(window).or_default();
            w.fired.insert(kg);
            w.kgs.insert(kg);
        }
    }
    Ok((windows, next))
}
