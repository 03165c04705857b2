//! The exchange: how batches, watermarks and end-of-input reach an operator instance on some
//! worker. Operators and tasks only see [`Exchange::endpoint`], a bounded channel end; the
//! local implementation hands out in-process channels, and a network one can forward the same
//! envelopes over TCP without operators changing. Bounded channels give backpressure: a slow
//! worker makes its senders wait, so memory stays bounded.
//!
//! Key groups (DESIGN.md section 4): a key's group is `xxh3_64(canonical bytes) mod M` where the
//! canonical bytes of each key value, concatenated, are: null `00`; false `01`; true `02`;
//! int `03` + 8 bytes little-endian; double `04` + its IEEE-754 bits as 8 bytes little-endian;
//! string `05` + byte length as 4 bytes little-endian + UTF-8 bytes. Group `g` belongs to
//! worker `g * P / M`. This hash is fixed forever: state and savepoints depend on it.

use crate::expr::V;
use crate::job::graph::NodeId;
use crate::record::{Batch, Value};
use std::collections::HashMap;
use tokio::sync::mpsc;

/// A watermark meaning "this sender is idle": leave it out of the minimum until it sends a
/// real watermark again (Flink's idle watermark status), so a source split that gets no data
/// does not stall every window downstream.
pub const IDLE: i64 = i64::MAX - 1;

/// Records watermark `w` from one sender: watermarks only advance, except into and out of
/// [`IDLE`].
#[inline]
pub fn update_mark(mark: &mut i64, w: i64) {
    *mark = if w == IDLE || *mark == IDLE {
        w
    } else {
        (*mark).max(w)
    };
}

/// A task's input watermark from its senders' latest: the minimum over the senders that are
/// not idle; `None` while all are idle, or while only ended ones are not (an idle sender may
/// still send records).
pub fn combine_marks(marks: impl Iterator<Item = i64>) -> Option<i64> {
    let mut min = None::<i64>;
    let mut idle = false;
    for m in marks {
        if m == IDLE {
            idle = true;
        } else {
            min = Some(min.map_or(m, |x| x.min(m)));
        }
    }
    match min {
        Some(i64::MAX) if idle => None,
        other => other,
    }
}

/// What travels on an edge.
#[derive(Debug)]
pub enum Msg {
    Data(Batch),
    /// Rows already encoded as JSON lines by the sender, for a sink: encoding in the sending
    /// workers keeps a single sink instance from serialising every result alone.
    Encoded {
        lines: Vec<u8>,
        rows: usize,
    },
    /// Partial window aggregates from a sender's combiner (`operators::combiner`).
    Partials(crate::operators::combiner::Partials),
    /// No record older than this will follow from this sender.
    Watermark(i64),
    /// Checkpoint barrier: everything before it from this sender belongs to checkpoint n.
    Barrier(u64),
    /// This sender is done.
    End,
}

#[derive(Debug)]
pub struct Envelope {
    /// Input port of the receiving node (a join has two).
    pub port: u8,
    /// Index of the sending instance, so watermarks are tracked per sender.
    pub from: u32,
    pub msg: Msg,
}

/// Delivers envelopes to operator instances wherever they run.
pub trait Exchange: Send + Sync {
    /// The sending end for instance `worker` of node `node`.
    fn endpoint(&self, node: NodeId, worker: usize) -> mpsc::Sender<Envelope>;
}

/// All workers in this process: one bounded channel per operator instance.
pub struct LocalExchange {
    senders: HashMap<(NodeId, usize), mpsc::Sender<Envelope>>,
}

impl LocalExchange {
    /// Creates the inboxes of `instances` (node, worker) pairs; returns the receivers to hand
    /// to the tasks that run them.
    pub fn new(
        instances: impl IntoIterator<Item = (NodeId, usize)>,
        capacity: usize,
    ) -> (
        LocalExchange,
        HashMap<(NodeId, usize), mpsc::Receiver<Envelope>>,
    ) {
        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        for inst in instances {
            let (tx, rx) = mpsc::channel(capacity);
            senders.insert(inst, tx);
            receivers.insert(inst, rx);
        }
        (LocalExchange { senders }, receivers)
    }
}

impl Exchange for LocalExchange {
    fn endpoint(&self, node: NodeId, worker: usize) -> mpsc::Sender<Envelope> {
        match self.senders.get(&(node, worker)) {
            Some(s) => s.clone(),
            None => {
                panic!("no inbox for node {node} worker {worker}: the graph and exchange disagree")
            }
        }
    }
}

/// Appends the canonical bytes of `v` (see the module docs).
pub fn canonical_bytes(v: &V<'_>, out: &mut Vec<u8>) {
    match v {
        V::Null => out.push(0),
        V::Bool(false) => out.push(1),
        V::Bool(true) => out.push(2),
        V::Int(i) => tagged(3, i.to_le_bytes(), out),
        V::Double(d) => tagged(4, d.to_bits().to_le_bytes(), out),
        V::Str(_) | V::Owned(_) => str_bytes(v.str().unwrap_or_default(), out),
    }
}

/// [`canonical_bytes`] of a stored value. Going through [`V::from_value`] built the view on
/// the stack and read it back in pieces that defeat store forwarding (a tenth of the keyed
/// exchange's time).
#[inline]
pub fn canonical_value_bytes(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Str(s) => str_bytes(s, out),
        Value::Null => out.push(0),
        Value::Bool(b) => out.push(1 + *b as u8),
        Value::Int(i) => tagged(3, i.to_le_bytes(), out),
        Value::Double(d) => tagged(4, d.to_bits().to_le_bytes(), out),
    }
}

#[inline]
fn tagged(tag: u8, bytes: [u8; 8], out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&bytes);
}

#[inline]
fn str_bytes(s: &str, out: &mut Vec<u8>) {
    out.push(5);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The key group of canonical key bytes.
#[inline]
pub fn key_group(bytes: &[u8], max_parallelism: u32) -> u32 {
    group_of(xxhash_rust::xxh3::xxh3_64(bytes), max_parallelism)
}

/// The key group of a key's hash (`xxh3_64` of its canonical bytes).
#[inline]
pub fn group_of(h: u64, max_parallelism: u32) -> u32 {
    let m = max_parallelism as u64;
    // `h % m` either way; a mask when `m` is a power of two (the default 128) saves a 64-bit
    // division on every record that crosses a keyed exchange.
    (if m.is_power_of_two() {
        h & (m - 1)
    } else {
        h % m
    }) as u32
}

/// `xxh3_64` of a one-value key's canonical bytes without writing them, for the usual keys:
/// an int, or a string of 4 to 11 bytes (9 to 16 canonical bytes, which xxh3 reads as their
/// first and last 8). Writing the bytes and hashing them in a second pass was two thirds of
/// a P=2 keyed count's routing. `None` for other values: hash [`canonical_value_bytes`].
#[inline]
pub fn short_key_hash(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => {
            let i = *i as u64;
            Some(xxh3_9to16(9, 3 | i << 8, i))
        }
        Value::Str(s) => {
            let b = s.as_bytes();
            let l = b.len();
            if !(4..=11).contains(&l) {
                return None;
            }
            // Canonical bytes: 05, the length as 4 bytes, the string.
            let header = 5 | (l as u64) << 8;
            let first = header | (b[0] as u64) << 40 | (b[1] as u64) << 48 | (b[2] as u64) << 56;
            let last = if l >= 8 {
                u64::from_le_bytes(b[l - 8..].try_into().ok()?)
            } else {
                // The header's last 8 - l bytes, then the whole string (as two overlapping
                // 4-byte loads).
                let lo = u32::from_le_bytes(b[..4].try_into().ok()?) as u64;
                let hi = u32::from_le_bytes(b[l - 4..].try_into().ok()?) as u64;
                let string = lo | hi << (8 * (l - 4));
                header >> (8 * (l - 3)) | string << (8 * (8 - l))
            };
            Some(xxh3_9to16(5 + l as u64, first, last))
        }
        _ => None,
    }
}

/// XXH3-64 (seed 0, default secret) of `len` bytes, 9 to 16, whose first and last 8 bytes
/// (little-endian) are `first` and `last`: the reference's `XXH3_len_9to16_64b`.
#[inline]
fn xxh3_9to16(len: u64, first: u64, last: u64) -> u64 {
    // The default secret's words at bytes 24, 32, 40 and 48.
    const FLIP1: u64 = 0x1f67_b3b7_a4a4_4072 ^ 0x78e5_c0cc_4ee6_79cb;
    const FLIP2: u64 = 0x2172_ffcc_7dd0_5a82 ^ 0x8e24_43f7_7446_08b8;
    let (lo, hi) = (first ^ FLIP1, last ^ FLIP2);
    let product = lo as u128 * hi as u128;
    let folded = product as u64 ^ (product >> 64) as u64;
    let mut h = len
        .wrapping_add(lo.swap_bytes())
        .wrapping_add(hi)
        .wrapping_add(folded);
    h ^= h >> 37;
    h = h.wrapping_mul(0x1656_6791_9e37_79f9);
    h ^ h >> 32
}

/// The worker that owns key group `kg` (Flink's formula).
#[inline]
pub fn owner(kg: u32, parallelism: usize, max_parallelism: u32) -> usize {
    let (x, m) = (kg as u64 * parallelism as u64, max_parallelism as u64);
    // A shift for a power-of-two `m`, as in `key_group`.
    (if m.is_power_of_two() {
        x >> m.trailing_zeros()
    } else {
        x / m
    }) as usize
}

/// The contiguous key-group range `[first, last]` that worker `i` owns.
pub fn key_group_range(i: usize, parallelism: usize, max_parallelism: u32) -> (u32, u32) {
    let (i, p, m) = (i as u64, parallelism as u64, max_parallelism as u64);
    let first = (i * m).div_ceil(p);
    let last = ((i + 1) * m - 1) / p;
    (first as u32, last as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_key_hashes_equal_xxh3_of_the_canonical_bytes() {
        let mut values = vec![
            Value::Int(0),
            Value::Int(-1),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(Value::Int(x as i64));
            let len = (x >> 59) as usize; // 0..=31: every length the fast path takes and more
            let s: String = (0..len)
                .map(|i| char::from(b'!' + ((x >> (i % 8 * 7)) as u8 % 90)))
                .collect();
            values.push(Value::from(s.as_str()));
            values.push(Value::from(format!("é{s}").as_str()));
        }
        let mut fast = 0;
        for v in &values {
            let mut bytes = Vec::new();
            canonical_value_bytes(v, &mut bytes);
            if let Some(h) = short_key_hash(v) {
                fast += 1;
                assert_eq!(h, xxhash_rust::xxh3::xxh3_64(&bytes), "{v:?}");
            }
        }
        assert!(
            fast > values.len() / 3,
            "the fast path was taken {fast} times"
        );
    }

    #[test]
    fn power_of_two_shortcuts_equal_the_documented_formulas() {
        for m in [1u32, 2, 64, 100, 128, 4096, 32_768] {
            for i in 0..2000u64 {
                let bytes = i.to_le_bytes();
                let h = xxhash_rust::xxh3::xxh3_64(&bytes);
                let kg = key_group(&bytes, m);
                assert_eq!(kg as u64, h % m as u64, "m={m} i={i}");
                for p in [1usize, 2, 3, 7] {
                    let want = (kg as u64 * p as u64 / m as u64) as usize;
                    assert_eq!(owner(kg, p, m), want, "m={m} kg={kg} p={p}");
                }
            }
        }
    }

    #[test]
    fn stored_values_have_the_bytes_of_their_views() {
        let long = "a string longer than twenty-four bytes";
        for v in [
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(-7),
            Value::Double(2.5),
            Value::from("u42"),
            Value::from(""),
            Value::from(long),
        ] {
            let (mut a, mut b) = (vec![9], vec![9]);
            canonical_value_bytes(&v, &mut a);
            canonical_bytes(&V::from_value(&v), &mut b);
            assert_eq!(a, b, "{v:?}");
        }
    }

    #[test]
    fn ranges_agree_with_owner_formula() {
        for m in [1u32, 7, 128, 1000] {
            for p in 1..=9usize.min(m as usize) {
                for kg in 0..m {
                    let o = owner(kg, p, m);
                    let (a, b) = key_group_range(o, p, m);
                    assert!(
                        a <= kg && kg <= b,
                        "m={m} p={p} kg={kg} owner={o} range={a}..={b}"
                    );
                }
            }
        }
    }

    #[test]
    fn key_group_of_a_string_is_fixed() {
        // Changing this value would silently reshuffle every saved state: never do it.
        let mut b = Vec::new();
        canonical_bytes(&V::Str("user-42"), &mut b);
        assert_eq!(b[0], 5);
        assert_eq!(
            key_group(&b, 128),
            (xxhash_rust::xxh3::xxh3_64(&b) % 128) as u32
        );
        let mut c = Vec::new();
        canonical_bytes(&V::Int(7), &mut c);
        assert_eq!(c, [3, 7, 0, 0, 0, 0, 0, 0, 0]);
    }
}

#[cfg(test)]
mod idle_tests {
    use super::*;

    #[test]
    fn idle_senders_are_left_out_until_they_send_again() {
        let mut marks = [i64::MIN, 10];
        assert_eq!(combine_marks(marks.iter().copied()), Some(i64::MIN));
        update_mark(&mut marks[0], IDLE);
        assert_eq!(combine_marks(marks.iter().copied()), Some(10));
        update_mark(&mut marks[1], IDLE);
        assert_eq!(combine_marks(marks.iter().copied()), None);
        // Back from idle with an older watermark: it counts again, lower than before.
        update_mark(&mut marks[0], 5);
        assert_eq!(combine_marks(marks.iter().copied()), Some(5));
        update_mark(&mut marks[0], 3);
        assert_eq!(marks[0], 5, "watermarks never go back");
        // An ended sender does not release everything while another is only idle.
        let ended_and_idle = [i64::MAX, IDLE];
        assert_eq!(combine_marks(ended_and_idle.iter().copied()), None);
    }
}
