//! The layout of the last record the scanner took, checked against the next one.
//!
//! Records of one source nearly always repeat their keys in the same order and spelling:
//! `{"id":`, `,"user":`, ... Finding each key's closing quote, hashing it and comparing it
//! with a field's name cost more than decoding its value. When the record before was compact
//! (no whitespace between its tokens), each key of the next one is checked with one masked
//! 16-byte compare against the token the last record had there, and its value goes where that
//! key's went. A record that differs anywhere falls back to the scanner, which learns its
//! shape instead.

use super::{Key, put, skip, ws};
use crate::record::Value;

/// Tokens (a separator, a quoted key, a colon) up to this long are checked in one compare;
/// longer ones byte by byte.
const TOKEN: usize = 16;

#[derive(Default)]
pub(super) struct Shape {
    steps: Vec<Step>,
    /// Whether `steps` is a whole record's layout (the last one the scanner took was compact).
    valid: bool,
    /// Where the scanner's record being learnt is expected to go on: the end of the last value.
    next: usize,
}

struct Step {
    /// The separator, quoted key and colon, zero-padded (the first 16 bytes of a longer one).
    token: u128,
    /// The token's bytes in `token`.
    mask: u128,
    len: usize,
    /// A token longer than [`TOKEN`], whole.
    long: Option<Box<[u8]>>,
    /// Where its value goes (`None`: skipped).
    key: Option<Key>,
}

impl Shape {
    /// Decodes `text` into `row` (all nulls) if it has the last record's layout; `None`
    /// otherwise, with `row` partly written.
    #[inline]
    pub(super) fn decode(&self, text: &str, row: &mut [Value]) -> Option<()> {
        if !self.valid {
            return None;
        }
        let b = text.as_bytes();
        let mut i = 0;
        for s in &self.steps {
            if !s.at(b, i) {
                return None;
            }
            i += s.len;
            i = match s.key {
                Some(k) => put(text, i, k.ty, row.get_mut(k.slot)?)?,
                None => skip(b, i)?,
            };
        }
        (b.get(i) == Some(&b'}') && ws(b, i + 1) == b.len()).then_some(())
    }

    /// The scanner starts a record.
    pub(super) fn start(&mut self) {
        self.steps.clear();
        self.valid = false;
        self.next = 0;
    }

    /// The scanner read the key `b[open..close]` (without its quotes) after the separator at
    /// `sep`, its colon at `colon`, and its value `b[value..end]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        b: &[u8],
        sep: usize,
        open: usize,
        colon: usize,
        value: usize,
        end: usize,
        key: Option<Key>,
    ) {
        let len = value - sep;
        // Compact: the separator right after the last value, the quote right after it, the
        // colon right after the key's closing quote and the value right after the colon.
        let tight = sep == self.next && open == sep + 2 && colon + 1 == value;
        if !tight {
            self.next = usize::MAX;
            return;
        }
        let short = len.min(TOKEN);
        let mut bytes = [0u8; TOKEN];
        bytes[..short].copy_from_slice(&b[sep..sep + short]);
        self.steps.push(Step {
            token: u128::from_le_bytes(bytes),
            mask: u128::MAX >> (128 - 8 * short),
            len,
            long: (len > TOKEN).then(|| b[sep..value].into()),
            key,
        });
        self.next = end;
    }

    /// The scanner took the record, whose closing brace is at `close`.
    pub(super) fn finish(&mut self, b: &[u8], close: usize) {
        self.valid = !self.steps.is_empty() && close == self.next && b.get(close) == Some(&b'}');
    }
}

impl Step {
    /// Whether `b[i..]` starts with this step's token.
    #[inline(always)]
    fn at(&self, b: &[u8], i: usize) -> bool {
        if let Some(long) = &self.long {
            return b.get(i..i + self.len) == Some(&long[..]);
        }
        match b.get(i..).and_then(|r| r.first_chunk::<TOKEN>()) {
            Some(w) => (u128::from_le_bytes(*w) ^ self.token) & self.mask == 0,
            None => {
                let token = self.token.to_le_bytes();
                b.get(i..i + self.len) == token.get(..self.len)
            }
        }
    }
}
