//! JSON-lines encoding of batches, the format every file, stdout and Kafka sink writes.
//!
//! A result row is a handful of short pieces (`{"user":`, a key, two timestamps, a count), and
//! appending each with `push_str` called `memcpy` about nine times a row, which cost more than
//! formatting the numbers. Here room is made ahead of the write position, so each piece is
//! copied with a few overlapping fixed-size moves the compiler inlines.

use super::{Batch, Schema, Value, write_json_str};

/// Encodes batches of one schema as JSON lines, with each field's `"name":` prepared once.
#[derive(Debug, Clone)]
pub struct JsonLines {
    prefixes: Vec<Vec<u8>>,
    /// The longest row without its values (prefixes, braces, newline).
    frame: usize,
}

impl JsonLines {
    pub fn new(schema: &Schema) -> JsonLines {
        let prefixes: Vec<Vec<u8>> = schema
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut p = String::from(if i == 0 { "{" } else { "," });
                write_json_str(&f.name, &mut p);
                p.push(':');
                p.into_bytes()
            })
            .collect();
        let frame = prefixes.iter().map(Vec::len).sum::<usize>() + 3;
        JsonLines { prefixes, frame }
    }

    /// Appends one line per row to `out`.
    pub fn encode(&self, batch: &Batch, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        // The last integer written in each column, already formatted: window bounds repeat
        // down a batch of results, and formatting a 13-digit time cost more than copying it.
        let mut last = vec![IntMemo::default(); self.prefixes.len()];
        w.room(batch.len() * (self.frame + 16 * self.prefixes.len()));
        if self.prefixes.is_empty() {
            // No fields: `rows()` yields nothing for a zero-width batch, but each row is `{}`.
            for _ in batch.times() {
                w.room(3);
                w.put(b"{}\n");
            }
            return w.finish();
        }
        for (row, _) in batch.rows() {
            for ((p, v), memo) in self.prefixes.iter().zip(row).zip(&mut last) {
                w.room(p.len() + max_len(v));
                w.put(p);
                match v {
                    Value::Int(i) => w.put(memo.digits(*i)),
                    _ => w.value(v),
                }
            }
            w.room(2);
            w.put(b"}\n");
        }
        w.finish()
    }
}

/// An integer and its decimal digits.
#[derive(Clone, Default)]
struct IntMemo {
    value: i64,
    digits: [u8; 20],
    len: u8,
}

impl IntMemo {
    #[inline]
    fn digits(&mut self, i: i64) -> &[u8] {
        if self.len == 0 || self.value != i {
            let mut buf = itoa::Buffer::new();
            let s = buf.format(i).as_bytes();
            self.digits[..s.len()].copy_from_slice(s);
            self.value = i;
            self.len = s.len() as u8;
        }
        &self.digits[..self.len as usize]
    }
}

/// Upper bound of a value's encoded length.
fn max_len(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Int(_) => 20,
        Value::Double(_) => 32,
        // Every byte may become `\u00XX`.
        Value::Str(s) => s.len() * 6 + 2,
    }
}

/// Appends to a vector by writing into its spare capacity, setting its length once at the
/// end. Growing its length ahead of the writes instead zeroed every byte before it was
/// written, and a chunk outgrowing its guess was copied whole to grow, then zeroed again:
/// a tenth of a keyed count's instructions went to `memset` and `memcpy`.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// `out[out.len()..pos]` is written but not yet inside `out`'s length.
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut Vec<u8>) -> Writer<'a> {
        let pos = out.len();
        Writer { out, pos }
    }

    /// Makes room for `n` more bytes.
    #[inline]
    fn room(&mut self, n: usize) {
        if self.pos + n > self.out.capacity() {
            // SAFETY: every byte up to `pos` was written (see `put`), and growing keeps only
            // the bytes inside the length.
            unsafe { self.out.set_len(self.pos) };
            self.out.reserve(n.max(self.out.capacity()));
        }
    }

    /// Appends `s`; the caller made room for it.
    #[inline]
    fn put(&mut self, s: &[u8]) {
        let n = s.len();
        assert!(self.pos + n <= self.out.capacity(), "room made first");
        let src = s.as_ptr();
        // SAFETY: `dst..dst + n` lies in `out`'s capacity (checked above) and not in `s`,
        // which the caller owns apart from `out`. Every copy below has a constant length and
        // writes inside those `n` bytes; overlapping copies write the same bytes twice.
        unsafe {
            let dst = self.out.as_mut_ptr().add(self.pos);
            let copy = |from: usize, len: usize| {
                std::ptr::copy_nonoverlapping(src.add(from), dst.add(from), len)
            };
            if n >= 16 {
                if n > 64 {
                    copy(0, n);
                } else {
                    let mut i = 0;
                    while i + 16 <= n {
                        copy(i, 16);
                        i += 16;
                    }
                    copy(n - 16, 16);
                }
            } else if n >= 8 {
                copy(0, 8);
                copy(n - 8, 8);
            } else if n >= 4 {
                copy(0, 4);
                copy(n - 4, 4);
            } else if n >= 2 {
                copy(0, 2);
                copy(n - 2, 2);
            } else if n == 1 {
                copy(0, 1);
            }
        }
        self.pos += n;
    }

    /// Takes the written bytes into the vector's length.
    fn finish(self) {
        // SAFETY: `put` wrote every byte from the old length up to `pos`, within capacity.
        unsafe { self.out.set_len(self.pos) };
    }

    #[inline]
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.put(b"null"),
            Value::Bool(true) => self.put(b"true"),
            Value::Bool(false) => self.put(b"false"),
            Value::Int(i) => self.put(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Str(s) if plain(s.as_bytes()) => {
                self.put(b"\"");
                self.put(s.as_bytes());
                self.put(b"\"");
            }
            other => {
                // Doubles (`1e300` prints 301 digits) and strings that need escaping: sized
                // exactly here instead of by `max_len`.
                let mut s = String::new();
                other.write_json(&mut s);
                self.room(s.len());
                self.put(s.as_bytes());
            }
        }
    }
}

/// Whether a string needs no escaping in JSON.
#[inline]
fn plain(s: &[u8]) -> bool {
    // `fold` instead of `all`: no early exit, so the loop vectorises.
    s.iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'))
}

/// The JSON-lines encoding of `batch` as text (tests and small paths).
pub fn encode_string(batch: &Batch) -> String {
    let mut out = Vec::new();
    JsonLines::new(&batch.schema).encode(batch, &mut out);
    // Every piece written is UTF-8, so the lossy branch never runs.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Type, row_json};
    use std::sync::Arc;

    fn old_encode(batch: &Batch) -> String {
        let mut out = String::new();
        for i in 0..batch.len() {
            row_json(&batch.schema, batch.row(i), &mut out);
            out.push('\n');
        }
        out
    }

    #[test]
    fn matches_field_by_field_encoding_for_every_length_and_escape() {
        let schema = Arc::new(Schema::new([
            ("s", Type::String),
            ("n", Type::Int),
            ("d", Type::Any),
            ("a long field name of more than sixteen bytes", Type::Any),
        ]));
        let mut b = Batch::new(schema);
        let pieces = [
            "",
            "a",
            "ab",
            "abc",
            "héllo",
            "q\"uote",
            "back\\slash",
            "tab\there",
        ];
        for len in 0..150usize {
            let s: String = (0..len)
                .map(|i| pieces[(i + len) % pieces.len()])
                .collect::<String>()
                .chars()
                .take(len)
                .collect();
            let other = match len % 5 {
                0 => Value::Null,
                1 => Value::Bool(len % 2 == 0),
                2 => Value::Double(len as f64 / 3.0),
                3 => Value::Double(len as f64),
                _ => Value::from("\u{1}ctl"),
            };
            b.push(
                [
                    Value::from(s.as_str()),
                    Value::Int(i64::MIN + len as i64 * 7919),
                    other,
                    Value::Int(len as i64),
                ],
                0,
            );
        }
        for d in [1e300, -5e-324, f64::MAX, 1.234_567_890_123_456_7e-16, -1e31] {
            b.push(
                [
                    Value::from("x"),
                    Value::Int(0),
                    Value::Double(d),
                    Value::Double(-d),
                ],
                0,
            );
        }
        let encoded = encode_string(&b);
        assert_eq!(encoded, old_encode(&b));
        for line in encoded.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("valid JSON");
        }
    }

    #[test]
    fn rows_without_fields_are_empty_objects() {
        let mut b = Batch::new(Arc::new(Schema::default()));
        b.push(std::iter::empty(), 1);
        b.push(std::iter::empty(), 2);
        assert_eq!(encode_string(&b), "{}\n{}\n");
    }

    #[test]
    fn appends_after_existing_bytes() {
        let schema = Arc::new(Schema::new([("x", Type::Int)]));
        let mut b = Batch::new(schema.clone());
        b.push([Value::Int(5)], 0);
        let mut out = b"keep\n".to_vec();
        JsonLines::new(&schema).encode(&b, &mut out);
        assert_eq!(out, b"keep\n{\"x\":5}\n");
    }
}
