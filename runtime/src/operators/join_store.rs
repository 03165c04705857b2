//! How the join's buffered rows live in its store: appended row by row (a snapshot writes only
//! the rows that arrived since the last one), read back when a spilled window fires or a late
//! row needs the other side, and dropped with the window.
//!
//! Keys: `kg | 3 | end | start | key | side | seq` for a row (value: its fields), and
//! `kg | 4 | end | start` marking a window whose pairs were emitted. Times are order-preserving
//! and the key is self-delimiting, so one window of one key group, and one key's side in it,
//! are each one prefix. `seq` (big-endian, unique per instance and never reused after a
//! restore) keeps a side's rows in arrival order.

use super::Keyed;
use crate::record::Value;
use crate::state::codec::{Reader, put_value, put_values};
use crate::state::{StateError, kg_prefix, window_prefix};
use rocksdb::WriteBatch;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const ROW: u8 = 3;
const FIRED: u8 = 4;

pub(super) type Rows = Vec<Box<[Value]>>;

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
pub(super) fn put_rows(
    batch: &mut WriteBatch,
    (kg, window, key): (u32, (i64, i64), &[u8]),
    side: usize,
    rows: &[Box<[Value]>],
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
        .map(|item| {
            let (_, v) = item?;
            Ok(Reader::new(&v).values(width)?.into_boxed_slice())
        })
        .collect()
}

/// Every stored row of a window in key groups `kgs`, by key.
pub(super) fn load_window(
    st: &Keyed,
    window: (i64, i64),
    kgs: &BTreeSet<u32>,
    widths: [usize; 2],
) -> Result<HashMap<Value, [Rows; 2]>, StateError> {
    let mut out: HashMap<Value, [Rows; 2]> = HashMap::new();
    for &kg in kgs {
        let prefix = window_prefix(kg, ROW, window.0, window.1);
        for item in st.store.scan(&prefix) {
            let (k, v) = item?;
            let (key, side, _) = parse_row_key(&k[prefix.len()..])?;
            let row = Reader::new(&v).values(widths[side])?.into_boxed_slice();
            out.entry(key).or_default()[side].push(row);
        }
    }
    Ok(out)
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

/// What the store holds for this instance's key groups: its windows, and the next free row
/// number (past every stored one).
pub(super) fn restore(st: &Keyed) -> Result<(Windows, u64), StateError> {
    let mut windows: BTreeMap<(i64, i64), Restored> = BTreeMap::new();
    let mut next = 0u64;
    for kg in st.store.range.0..=st.store.range.1 {
        let p = kg_prefix(kg);
        for item in st.store.scan(&[p[0], p[1], ROW]) {
            let (k, _) = item?;
            let mut r = Reader::new(&k[3..]);
            let window = (r.ordered_i64()?, r.ordered_i64()?);
            let (_, _, seq) = parse_row_key(r.rest())?;
            next = next.max(seq + 1);
            windows.entry(window).or_default().kgs.insert(kg);
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
