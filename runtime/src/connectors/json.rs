//! JSON-object records decoded into rows of a schema, shared by every source of JSON records
//! (local files, object-store files, Kafka values).
//!
//! [`RowDecoder`] first tries a byte scanner for the common shape, a flat object of strings
//! without escapes, small integers, booleans and nulls. Anything else it meets (nested values,
//! escapes, fractions, huge numbers, malformed text, a type mismatch) makes it give up on the
//! record, which is then decoded again from scratch by the serde path ([`RowSeed`]). The serde
//! path is the reference: the fast path only accepts records it decodes to the very same row,
//! and every error message comes from serde.

use super::TimeField;
use crate::operators::Emit;
use crate::record::{Schema, Type, Value};
use compact_str::CompactString;
use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use shape::Shape;
use std::cell::RefCell;
use std::sync::Arc;

/// Decodes JSON-object records (a file's lines, a Kafka value) into rows of a schema, with
/// their event time; shared by every source of JSON records.
pub struct JsonRecords {
    decoder: RowDecoder,
    time: TimeField,
}

impl JsonRecords {
    pub fn new(schema: Arc<Schema>, mask: Option<Arc<[bool]>>, time: TimeField) -> JsonRecords {
        JsonRecords {
            decoder: RowDecoder::new(schema, mask),
            time,
        }
    }

    /// Decodes `text` and pushes its row to `out`, returning its event time. A record that
    /// does not decode or has no usable event time is dead-lettered instead, its reason led by
    /// `at()` (where it came from), and `None` is returned. `record_time` is the record's own
    /// timestamp, for sources that have one.
    pub fn push(
        &mut self,
        text: &str,
        at: &dyn Fn() -> String,
        now: i64,
        record_time: Option<i64>,
        out: &mut Emit,
    ) -> Option<i64> {
        let (decoder, time) = (&self.decoder, self.time);
        let width = decoder.schema.len();
        let mut failure = None;
        // The row is decoded straight into the batch: decoding into a row of its own and
        // moving it over cost a copy of every value.
        let t = out.try_push_with(|values| {
            let start = values.len();
            values.resize_with(start + width, || Value::Null);
            let row = &mut values[start..];
            if let Err(e) = decoder.decode_nulled(text, row) {
                failure = Some(e.to_string());
                return None;
            }
            let f = match time {
                TimeField::Processing => return Some(now),
                TimeField::Record => return Some(record_time.unwrap_or(now)),
                TimeField::Field(f) | TimeField::Taken(f) => f,
            };
            let t = match row[f] {
                Value::Int(t) => t,
                ref other => {
                    failure = Some(format!(
                        "event time field `{}` is {}, not an int (ms since epoch)",
                        decoder.schema.fields[f].name,
                        other.type_name()
                    ));
                    return None;
                }
            };
            if let TimeField::Taken(_) = time {
                // An int, nothing to drop; last in the read schema (`sources::narrowed`).
                if start + f + 1 == values.len() {
                    values.truncate(start + f);
                } else {
                    values.remove(start + f);
                }
            }
            Some(t)
        });
        if let Some(why) = failure {
            out.dead_raw(text.to_string(), format!("{}: {why}", at()));
        }
        t
    }
}

/// Decodes one JSON object into a row of a schema: the fast scanner, else the serde path.
pub struct RowDecoder {
    schema: Arc<Schema>,
    mask: Option<Arc<[bool]>>,
    keys: KeyTable,
    /// The last record's layout, which the next one most likely repeats.
    shape: RefCell<Shape>,
}

impl RowDecoder {
    /// `mask`: the fields to decode (`None`: all); the others are skipped like unknown keys.
    pub fn new(schema: Arc<Schema>, mask: Option<Arc<[bool]>>) -> RowDecoder {
        let keys = KeyTable::new(&schema, mask.as_deref());
        RowDecoder {
            schema,
            mask,
            keys,
            shape: RefCell::default(),
        }
    }

    /// Decodes `text` into `row`, which ends up with the schema's width: decoded fields set,
    /// the others null. On error the row's content is unspecified.
    pub fn decode(&self, text: &str, row: &mut Vec<Value>) -> Result<(), serde_json::Error> {
        let width = self.schema.len();
        if row.len() != width {
            row.clear();
            row.resize_with(width, || Value::Null);
        } else {
            clear(row);
        }
        self.decode_nulled(text, row)
    }

    /// Decodes `text` into `row`, which has the schema's width and only nulls. On error the
    /// row's content is unspecified.
    pub fn decode_nulled(&self, text: &str, row: &mut [Value]) -> Result<(), serde_json::Error> {
        let mut shape = self.shape.borrow_mut();
        if shape.decode(text, row).is_some() {
            return Ok(());
        }
        // Each attempt may have filled some fields before giving up.
        clear(row);
        if self.fast(text, row, Some(&mut shape)).is_some() {
            return Ok(());
        }
        clear(row);
        let mut de = serde_json::Deserializer::from_str(text);
        RowSeed {
            schema: &self.schema,
            row,
            mask: self.mask.as_deref(),
        }
        .deserialize(&mut de)?;
        de.end()
    }

    /// The scanner: `None` when the record needs the serde path (which may or may not accept
    /// it). Duplicate keys overwrite, last one wins, as in the serde path. A record it takes
    /// becomes `learn`'s shape.
    fn fast(&self, text: &str, row: &mut [Value], mut learn: Option<&mut Shape>) -> Option<()> {
        let b = text.as_bytes();
        if let Some(shape) = learn.as_deref_mut() {
            shape.start();
        }
        let mut i = ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let mut sep = i;
        i = ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                if b.get(i) != Some(&b'"') {
                    return None;
                }
                let (start, end) = (i + 1, string_end(b, i + 1)?);
                i = ws(b, end + 1);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                let colon = i;
                i = ws(b, i + 1);
                let key = self.keys.find(b, start, end);
                let value = i;
                i = match key {
                    Some(k) => put(text, i, k.ty, row.get_mut(k.slot)?)?,
                    None => skip(b, i)?,
                };
                if let Some(shape) = learn.as_deref_mut() {
                    shape.step(b, sep, start, colon, value, i, key);
                }
                i = ws(b, i);
                sep = i;
                match b.get(i) {
                    Some(b',') => i = ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if ws(b, i) != b.len() {
            return None;
        }
        if let Some(shape) = learn {
            shape.finish(b, sep);
        }
        Some(())
    }
}

fn clear(row: &mut [Value]) {
    for v in row {
        if !matches!(v, Value::Null) {
            *v = Value::Null;
        }
    }
}

/// The first byte at or after `i` that is not JSON whitespace (the set serde_json skips).
#[inline]
pub(super) fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The position of the quote closing a string whose content starts at `i`; `None` for an
/// escape, a control character (an error for serde) or a missing quote.
#[inline(always)]
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    // Eight bytes at a time: each test below flags the bytes that are a quote, a backslash or
    // below 0x20 (bytes of multi-byte characters are all >= 0x80, never flagged). A test can
    // also flag bytes above a true hit (its borrow), never below, so the lowest flag is the
    // first stop.
    while let Some(&word) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let v = u64::from_le_bytes(word);
        let quote = v ^ (ONES * b'"' as u64);
        let slash = v ^ (ONES * b'\\' as u64);
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (v.wrapping_sub(ONES * 0x20) & !v))
            & HIGHS;
        if hits != 0 {
            let j = i + (hits.trailing_zeros() / 8) as usize;
            return (b[j] == b'"').then_some(j);
        }
        i += 8;
    }
    let rest = b.get(i..)?;
    let n = rest
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (rest[n] == b'"').then_some(i + n)
}

/// Decodes the value at `i` into `slot` as the serde path's `coerce` would type it, returning
/// the position after it; `None` for values the scanner does not take and for type mismatches
/// (left to serde for its message). The value goes straight into its slot: building a
/// [`Value`] first and matching on it made the compiler shuffle it through the stack.
#[inline(always)]
pub(super) fn put(text: &str, i: usize, ty: Type, slot: &mut Value) -> Option<usize> {
    let b = text.as_bytes();
    match (*b.get(i)?, ty) {
        (b'"', Type::String | Type::Any) => {
            let end = string_end(b, i + 1)?;
            // The quotes are ASCII, so both ends are character boundaries.
            *slot = Value::Str(CompactString::new(text.get(i + 1..end)?));
            Some(end + 1)
        }
        (b'-' | b'0'..=b'9', Type::Int | Type::Any) => {
            let (n, next) = int(b, i)?;
            *slot = Value::Int(n);
            Some(next)
        }
        (b'-' | b'0'..=b'9', Type::Double) => {
            let (n, next) = int(b, i)?;
            *slot = Value::Double(n as f64);
            Some(next)
        }
        (b't', Type::Bool | Type::Any) => {
            let next = literal(b, i, b"true")?;
            *slot = Value::Bool(true);
            Some(next)
        }
        (b'f', Type::Bool | Type::Any) => {
            let next = literal(b, i, b"false")?;
            *slot = Value::Bool(false);
            Some(next)
        }
        (b'n', _) => {
            let next = literal(b, i, b"null")?;
            *slot = Value::Null;
            Some(next)
        }
        _ => None,
    }
}

#[inline]
fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// At most this many digits cannot overflow an i64 (10^18 - 1 < 2^63); longer integers, which
/// serde turns into errors or doubles, go to the serde path.
const MAX_DIGITS: usize = 18;

/// An integer without fraction or exponent. `None` also for `-0`, which serde reads as the
/// double -0.0, and for leading zeros (a serde error).
#[inline(always)]
fn int(b: &[u8], i: usize) -> Option<(i64, usize)> {
    let neg = b[i] == b'-';
    let start = i + neg as usize;
    let mut j = start;
    let mut n: i64 = 0;
    // Timestamps in ms have 13 digits: eight at a time, then one by one.
    while j - start + 8 <= MAX_DIGITS {
        let Some(eight) = eight_digits(b, j) else {
            break;
        };
        n = n * 100_000_000 + eight;
        j += 8;
    }
    while let Some(&c @ b'0'..=b'9') = b.get(j) {
        if j - start == MAX_DIGITS {
            return None;
        }
        n = n * 10 + (c - b'0') as i64;
        j += 1;
    }
    let digits = j - start;
    if digits == 0
        || (digits > 1 && b[start] == b'0')
        || matches!(b.get(j), Some(b'.' | b'e' | b'E'))
    {
        return None;
    }
    if neg {
        if n == 0 {
            return None;
        }
        n = -n;
    }
    Some((n, j))
}

/// The value of the eight bytes at `j` if they are all digits (the SWAR steps of simdjson's
/// `parse_eight_digits_unrolled`: pairs, then quads, then the whole word).
#[inline(always)]
fn eight_digits(b: &[u8], j: usize) -> Option<i64> {
    let v = u64::from_le_bytes(*b.get(j..)?.first_chunk::<8>()?);
    let high = v & 0xF0F0_F0F0_F0F0_F0F0;
    let carried = (v.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4;
    if high | carried != 0x3333_3333_3333_3333 {
        return None;
    }
    let v = (v & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561) >> 8;
    let v = (v & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
    let v = (v & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32;
    Some(v as u32 as i64)
}

/// Skips a value the row does not take, checking its syntax as serde's skipping does.
#[inline]
pub(super) fn skip(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i + 1).map(|end| end + 1),
        b'-' | b'0'..=b'9' => skip_number(b, i),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        _ => None,
    }
}

/// A JSON number's grammar; skipped numbers are not range-checked by serde either.
#[inline]
fn skip_number(b: &[u8], i: usize) -> Option<usize> {
    // The usual number, an integer, is its digits counted eight at a time; the byte-by-byte
    // loop below was two-thirds of skipping a record's unused fields.
    let start = i + (b.get(i) == Some(&b'-')) as usize;
    let run = digit_run(b, start);
    match b.get(start + run) {
        _ if run == 0 => None,
        Some(b'.' | b'e' | b'E') => skip_number_slow(b, i),
        // A leading zero is an error, as in `int`.
        _ if run > 1 && b[start] == b'0' => None,
        _ => Some(start + run),
    }
}

/// How many ASCII digits `b[i..]` starts with.
#[inline(always)]
fn digit_run(b: &[u8], i: usize) -> usize {
    const LOW: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let mut n = 0;
    while let Some(&word) = b.get(i + n..).and_then(|r| r.first_chunk::<8>()) {
        // A digit is 0x30-0x39: zero high nibble after the xor, and a low one that 6 does not
        // carry past 0xF. No carry crosses a byte: a low nibble plus 6 is at most 0x15.
        let x = u64::from_le_bytes(word) ^ (ONES * 0x30);
        let other = (x & HIGH) | (((x & LOW) + ONES * 6) & HIGH);
        if other != 0 {
            return n + (other.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while let Some(b'0'..=b'9') = b.get(i + n) {
        n += 1;
    }
    n
}

fn skip_number_slow(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while let Some(b'0'..=b'9') = b.get(i) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => {
            i += 1;
            if let Some(b'0'..=b'9') = b.get(i) {
                return None;
            }
        }
        _ => i = digits(b, i)?,
    }
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// A decoded field: where it goes and its type.
#[derive(Clone, Copy)]
pub(super) struct Key {
    slot: usize,
    ty: Type,
}

/// The decoded fields by name: an open-addressing table hashed on a key's length and first and
/// last bytes, so a key costs one probe and one short compare rather than a compare per field.
struct KeyTable {
    /// Indexes into `keys`, [`EMPTY`] for none.
    slots: Box<[usize]>,
    keys: Vec<(Name, Key)>,
}

/// A field name, with its first eight bytes as a word so that short names compare at once.
struct Name {
    bytes: Box<[u8]>,
    head: u64,
}

impl Name {
    fn new(name: &str) -> Name {
        let bytes: Box<[u8]> = name.as_bytes().into();
        Name {
            head: head(&bytes, 0, bytes.len()),
            bytes,
        }
    }

    /// Whether `b[start..end]` is this name.
    #[inline(always)]
    fn is(&self, b: &[u8], start: usize, end: usize) -> bool {
        let len = end - start;
        len == self.bytes.len()
            && head(b, start, len) == self.head
            && (len <= 8 || b.get(start + 8..end) == self.bytes.get(8..))
    }
}

/// The first `min(len, 8)` bytes of `b[start..]` as a little-endian word, zero-padded.
#[inline(always)]
fn head(b: &[u8], start: usize, len: usize) -> u64 {
    let keep = match len {
        0 => return 0,
        1..8 => u64::MAX >> (64 - 8 * len),
        _ => u64::MAX,
    };
    // Usually the line goes on past the key (`":` at least), so one load does.
    if let Some(&word) = b.get(start..).and_then(|r| r.first_chunk::<8>()) {
        return u64::from_le_bytes(word) & keep;
    }
    let mut word = [0u8; 8];
    let n = len.min(8);
    if let (Some(to), Some(from)) = (word.get_mut(..n), b.get(start..start + n)) {
        to.copy_from_slice(from);
    }
    u64::from_le_bytes(word)
}

const EMPTY: usize = usize::MAX;

impl KeyTable {
    fn new(schema: &Schema, mask: Option<&[bool]>) -> KeyTable {
        let mut keys: Vec<(Name, Key)> = Vec::new();
        for (i, f) in schema.fields.iter().enumerate() {
            // A name given twice resolves to its first field, as `Schema::index_of` does; a
            // field left out by the mask is then skipped, even if a later twin is not.
            if schema.index_of(&f.name) != Some(i) || !mask.is_none_or(|m| m[i]) {
                continue;
            }
            keys.push((Name::new(&f.name), Key { slot: i, ty: f.ty }));
        }
        let size = (keys.len() * 4).next_power_of_two().max(16);
        let mut slots = vec![EMPTY; size].into_boxed_slice();
        for (k, (name, _)) in keys.iter().enumerate() {
            let mut h = hash(&name.bytes) & (size - 1);
            while slots[h] != EMPTY {
                h = (h + 1) & (size - 1);
            }
            slots[h] = k;
        }
        KeyTable { slots, keys }
    }

    /// The field named `b[start..end]`.
    #[inline(always)]
    fn find(&self, b: &[u8], start: usize, end: usize) -> Option<Key> {
        let mask = self.slots.len() - 1;
        let mut h = hash(b.get(start..end)?) & mask;
        loop {
            let k = *self.slots.get(h)?;
            let (name, key) = self.keys.get(k)?;
            if name.is(b, start, end) {
                return Some(*key);
            }
            h = (h + 1) & mask;
        }
    }
}

#[inline]
fn hash(name: &[u8]) -> usize {
    let (first, last) = match name {
        [] => (0, 0),
        [f, .., l] => (*f, *l),
        [f] => (*f, *f),
    };
    let h = (name.len() as u32).wrapping_mul(0x9E37_79B1)
        ^ (first as u32).wrapping_mul(0x85EB_CA6B)
        ^ (last as u32).wrapping_mul(0xC2B2_AE35);
    (h ^ (h >> 15)) as usize
}

/// Decodes one JSON object into `row` (already sized and nulled) by the schema: the serde
/// path, the reference for [`RowDecoder`].
pub struct RowSeed<'s> {
    pub schema: &'s Schema,
    pub row: &'s mut [Value],
    /// Fields to decode (`None`: all); the others are skipped like unknown keys.
    pub mask: Option<&'s [bool]>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.schema.index_of(&key) {
                Some(i) if self.mask.is_none_or(|m| m[i]) => {
                    let ty = self.schema.fields[i].ty;
                    let v = map.next_value_seed(ValueSeed)?;
                    self.row[i] = coerce(v, ty).map_err(|got| {
                        de::Error::custom(format!("field `{key}`: expected {ty:?}, got {got}"))
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

fn coerce(v: Value, ty: Type) -> Result<Value, &'static str> {
    Ok(match (ty, v) {
        (_, Value::Null) => Value::Null,
        (Type::Any, v) => v,
        (Type::Int, v @ Value::Int(_)) => v,
        (Type::Double, Value::Int(i)) => Value::Double(i as f64),
        (Type::Double, v @ Value::Double(_)) => v,
        (Type::String, v @ Value::Str(_)) => v,
        (Type::Bool, v @ Value::Bool(_)) => v,
        (_, other) => return Err(other.type_name()),
    })
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Double(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(CompactString::from(s)))
    }
    // Nested values are kept as their JSON text; a field of a nested object is not addressable.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Value::Str(CompactString::from(v.to_string())))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Value::Str(CompactString::from(v.to_string())))
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;

#[path = "json_shape.rs"]
mod shape;
