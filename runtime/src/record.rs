//! Records: typed values, schemas, and the row-major batches that move between operators.
//!
//! A batch holds its rows back to back in one `Vec<Value>` (width = schema length) plus one
//! event time per row, so moving a thousand records costs one allocation, and a row is a plain
//! slice that compiled expressions index by position (field names are resolved at plan time).

use compact_str::CompactString;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

mod lines;
pub use lines::{JsonLines, encode_string};

/// Rows per batch produced by sources. Small enough to stay in cache, large enough that a
/// channel hop costs about a nanosecond per record.
pub const BATCH_SIZE: usize = 1024;

/// One field value. Strings up to 24 bytes live inline (no allocation).
#[derive(Debug, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(CompactString),
}

impl Clone for Value {
    /// Everything but a heap string is copied as the value's 24 bytes, in one piece. The
    /// derived clone moved an inline string through the stack in pieces that defeat store
    /// forwarding, and rebuilding it from its bytes (`CompactString::new`) still wrote it to a
    /// stack buffer with a `memcpy` and read it back in words: either way a few nanoseconds
    /// every time a key is copied into state or a result row.
    #[inline]
    fn clone(&self) -> Value {
        match self {
            Value::Str(s) if s.is_heap_allocated() => Value::Str(s.clone()),
            // SAFETY: no other value owns anything outside its own bytes: scalars are plain
            // data, and a string that is not on the heap is inline or a `&'static str`, which
            // `CompactString`'s own clone copies bitwise in the same way.
            _ => unsafe { std::ptr::read(self) },
        }
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Double(_) => "double",
            Value::Str(_) => "string",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Double(_) => 2,
            Value::Str(_) => 3,
        }
    }

    /// A total order for sorting and min/max: null < bool < numbers < strings; ints and
    /// doubles compare numerically.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Double(a), Value::Double(b)) => a.total_cmp(b),
            (Value::Int(a), Value::Double(b)) => (*a as f64).total_cmp(b),
            (Value::Double(a), Value::Int(b)) => a.total_cmp(&(*b as f64)),
            (Value::Str(a), Value::Str(b)) => a.as_str().cmp(b.as_str()),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// Appends the value as JSON.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Value::Double(d) if d.is_finite() => {
                let a = d.abs();
                if a != 0.0 && !(1e-5..1e15).contains(&a) {
                    // Exponent form: plain `{d}` would print hundreds of digits (1e300 has
                    // 301), without a decimal point for whole numbers, so a reader took it
                    // for an integer or found it out of range.
                    let _ = write!(out, "{d:e}");
                } else if d.fract() == 0.0 {
                    // Keep a decimal point so a double stays a double when read back.
                    let _ = write!(out, "{d:.1}");
                } else {
                    let _ = write!(out, "{d}");
                }
            }
            Value::Double(_) => out.push_str("null"),
            Value::Str(s) => write_json_str(s, out),
        }
    }

    /// Converts a parsed JSON value; nested arrays and objects are kept as their JSON text.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(CompactString::from(s.as_str())),
            other => Value::Str(CompactString::from(other.to_string())),
        }
    }
}

pub fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    // Most strings need no escaping: copy runs of plain bytes at once.
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

// Equality and hashing are exact (an int never equals a double) because they define keys:
// `1` and `1.0` are different users of a map, as in most stream processors.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Double(a), Value::Double(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Value {
    /// `self == other`, inlined, with short strings compared in two overlapping word loads
    /// instead of a call to `memcmp`: a window compares each record's key with one or two
    /// stored keys, and the calls were a tenth of a keyed count.
    #[inline(always)]
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => bytes_eq(a.as_bytes(), b.as_bytes()),
            _ => self == other,
        }
    }
}

/// Whether two keys are equal (`==` on each value; see [`Value::same`]).
#[inline(always)]
pub fn keys_eq(a: &[Value], b: &[Value]) -> bool {
    match (a, b) {
        ([x], [y]) => x.same(y),
        _ => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y)),
    }
}

#[inline(always)]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // A length from w to 2w is covered by the first w bytes and the last w.
    fn word<const W: usize>(s: &[u8], at: usize) -> [u8; W] {
        s.get(at..at + W)
            .and_then(|w| w.try_into().ok())
            .unwrap_or([0; W])
    }
    match n {
        0 => true,
        1..4 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..8 => {
            u32::from_ne_bytes(word(a, 0)) == u32::from_ne_bytes(word(b, 0))
                && u32::from_ne_bytes(word(a, n - 4)) == u32::from_ne_bytes(word(b, n - 4))
        }
        8..=16 => {
            u64::from_ne_bytes(word(a, 0)) == u64::from_ne_bytes(word(b, 0))
                && u64::from_ne_bytes(word(a, n - 8)) == u64::from_ne_bytes(word(b, n - 8))
        }
        _ => a == b,
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => state.write_u8(if *b { 2 } else { 1 }),
            Value::Int(i) => state.write_i64(*i),
            Value::Double(d) => state.write_u64(d.to_bits()),
            Value::Str(s) => state.write(s.as_bytes()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Double(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(CompactString::from(v))
    }
}

/// Static type of a field as far as the plan knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Bool,
    Int,
    Double,
    String,
    /// Unknown until run time (a map output whose expression can yield several types).
    Any,
}

impl Type {
    pub fn parse(s: &str) -> Option<Type> {
        Some(match s {
            "bool" | "boolean" => Type::Bool,
            "int" | "long" | "integer" => Type::Int,
            "double" | "float" | "number" => Type::Double,
            "string" => Type::String,
            "any" => Type::Any,
            _ => return None,
        })
    }

    pub fn of(v: &Value) -> Type {
        match v {
            Value::Null => Type::Any,
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::Double(_) => Type::Double,
            Value::Str(_) => Type::String,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: Type,
}

/// Field names and types of a stream, fixed when the plan is compiled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Schema {
    pub fields: Vec<Field>,
}

impl Schema {
    pub fn new(fields: impl IntoIterator<Item = (impl Into<String>, Type)>) -> Schema {
        Schema {
            fields: fields
                .into_iter()
                .map(|(n, ty)| Field { name: n.into(), ty })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// `row`, of schema `from`, cut to this schema's fields (by name; null where `from` has
    /// no such field): a full record as a narrowed source would produce it.
    pub fn project(&self, from: &Schema, row: &[Value]) -> Vec<Value> {
        self.fields
            .iter()
            .map(|f| {
                from.index_of(&f.name)
                    .and_then(|i| row.get(i).cloned())
                    .unwrap_or(Value::Null)
            })
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }
}

/// Rows of one schema with their event times.
#[derive(Clone, Debug)]
pub struct Batch {
    pub schema: Arc<Schema>,
    values: Vec<Value>,
    times: Vec<i64>,
}

impl Batch {
    pub fn new(schema: Arc<Schema>) -> Batch {
        Batch::with_capacity(schema, 0)
    }

    pub fn with_capacity(schema: Arc<Schema>, rows: usize) -> Batch {
        let width = schema.len();
        Batch {
            schema,
            values: Vec::with_capacity(rows * width),
            times: Vec::with_capacity(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn width(&self) -> usize {
        self.schema.len()
    }

    pub fn row(&self, i: usize) -> &[Value] {
        let w = self.width();
        &self.values[i * w..(i + 1) * w]
    }

    pub fn time(&self, i: usize) -> i64 {
        self.times[i]
    }

    pub fn times(&self) -> &[i64] {
        &self.times
    }

    pub fn rows(&self) -> impl Iterator<Item = (&[Value], i64)> {
        let w = self.width().max(1);
        self.values.chunks(w).zip(self.times.iter().copied())
    }

    /// Appends a row; `row` must have exactly the schema's width.
    pub fn push(&mut self, row: impl IntoIterator<Item = Value>, time: i64) {
        let before = self.values.len();
        self.values.extend(row);
        debug_assert_eq!(self.values.len() - before, self.width());
        self.times.push(time);
    }

    /// Appends a row that `fill` writes straight into the batch (no row to build and move),
    /// `fill` returning the row's time.
    #[inline]
    pub fn push_with(&mut self, fill: impl FnOnce(&mut Vec<Value>) -> i64) {
        let before = self.values.len();
        let time = fill(&mut self.values);
        debug_assert_eq!(self.values.len() - before, self.width());
        self.times.push(time);
    }

    /// Like [`Batch::push_with`], but `fill` may refuse the row (returning `None`): whatever it
    /// wrote is removed and `None` returned; otherwise the row's time.
    #[inline]
    pub fn try_push_with(
        &mut self,
        fill: impl FnOnce(&mut Vec<Value>) -> Option<i64>,
    ) -> Option<i64> {
        let before = self.values.len();
        match fill(&mut self.values) {
            Some(time) => {
                debug_assert_eq!(self.values.len() - before, self.width());
                self.times.push(time);
                Some(time)
            }
            None => {
                self.values.truncate(before);
                None
            }
        }
    }

    /// Moves row `i` into `parts[owners[i]]`, dropping the rows whose owner is out of range.
    ///
    /// Rows move as their bytes: taking each value out of its slot (writing a null back) went
    /// through the stack in pieces the next load could not be forwarded from, a stall per
    /// value, and was most of a keyed exchange's cost per record.
    pub fn scatter(self, owners: &[usize], parts: &mut [Batch]) {
        assert_eq!(owners.len(), self.times.len(), "one owner per row");
        let w = self.width();
        let (mut values, times) = (self.values, self.times);
        assert_eq!(values.len(), w * times.len(), "rows of the schema's width");
        let src = values.as_mut_ptr();
        // SAFETY: from here `values` only owns its buffer; each row below is either copied
        // out bitwise (ownership moves to its part) or dropped in place, exactly once. Should
        // anything panic midway, the rows not yet handled leak instead of dropping twice.
        unsafe { values.set_len(0) };
        for (i, (&o, &t)) in owners.iter().zip(&times).enumerate() {
            // SAFETY: `i < times.len()`, so the row lies within the buffer's initialised part.
            let row = unsafe { src.add(i * w) };
            match parts.get_mut(o) {
                Some(p) => {
                    p.values.reserve(w);
                    let len = p.values.len();
                    // SAFETY: `reserve` made room for `w` values after `len`; source and
                    // destination are different buffers, and the source row is never used again.
                    unsafe {
                        let dst = p.values.as_mut_ptr().add(len);
                        match w {
                            1 => dst.write(row.read()),
                            2 => dst
                                .cast::<[Value; 2]>()
                                .write(row.cast::<[Value; 2]>().read()),
                            _ => std::ptr::copy_nonoverlapping(row, dst, w),
                        }
                        p.values.set_len(len + w);
                    }
                    p.times.push(t);
                }
                // SAFETY: the row is initialised and, with the length at 0, owned by nobody else.
                None => unsafe {
                    std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(row, w))
                },
            }
        }
    }

    /// Removes every row, keeping the memory.
    pub fn clear(&mut self) {
        self.values.clear();
        self.times.clear();
    }

    pub fn reserve(&mut self, rows: usize) {
        self.values.reserve(rows * self.schema.len());
        self.times.reserve(rows);
    }

    pub fn push_slice(&mut self, row: &[Value], time: i64) {
        self.values.extend_from_slice(row);
        self.times.push(time);
    }

    /// Keeps the rows for which `keep` is true, in place.
    pub fn retain(&mut self, keep: &[bool]) {
        let w = self.width();
        let mut out = 0;
        for (i, k) in keep.iter().enumerate() {
            if *k {
                if out != i {
                    for f in 0..w {
                        self.values.swap(out * w + f, i * w + f);
                    }
                    self.times[out] = self.times[i];
                }
                out += 1;
            }
        }
        self.values.truncate(out * w);
        self.times.truncate(out);
    }

    /// The row as a JSON object, fields in schema order.
    pub fn row_json(&self, i: usize, out: &mut String) {
        row_json(&self.schema, self.row(i), out);
    }
}

pub fn row_json(schema: &Schema, row: &[Value], out: &mut String) {
    out.push('{');
    for (i, (f, v)) in schema.fields.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(&f.name, out);
        out.push(':');
        v.write_json(out);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_agrees_with_eq_for_every_length_and_difference() {
        let mut values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(7),
            Value::Double(7.0),
            Value::Double(f64::NAN),
        ];
        let text = "abcdefghijklmnopqrstuvwxyz0123456789 and then some more for the heap";
        for n in 0..=text.len() {
            let base = &text[..n];
            values.push(Value::from(base));
            // One byte changed at each position: first, middle, last and all between.
            for at in 0..n {
                let mut b = base.as_bytes().to_vec();
                b[at] = b'#';
                values.push(Value::from(
                    String::from_utf8(b).unwrap_or_default().as_str(),
                ));
            }
        }
        // A short string on the heap equals the inline one with its text.
        let mut heap = CompactString::with_capacity(64);
        heap.push_str("abcde");
        values.push(Value::Str(heap));
        for a in &values {
            for b in &values {
                assert_eq!(a.same(b), a == b, "{a:?} vs {b:?}");
            }
        }
        let two = [Value::from("u1"), Value::Int(3)];
        assert!(keys_eq(&two, &two.clone()));
        assert!(!keys_eq(&two, &[Value::from("u1"), Value::Int(4)]));
        assert!(!keys_eq(&two, &two[..1]));
        assert!(keys_eq(&two[..1], &[Value::from("u1")]));
    }

    #[test]
    fn clones_equal_their_source_and_outlive_it() {
        let long = "a string too long to be stored inline, on the heap".to_string();
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Double(2.5),
            Value::Str(CompactString::new("")),
            Value::Str(CompactString::new("u5668")),
            Value::Str(CompactString::new("exactly 24 bytes long...")),
            Value::Str(CompactString::const_new("a static string")),
            Value::Str(CompactString::new(&long)),
        ];
        let clones: Vec<Value> = values.iter().map(Value::clone).collect();
        let texts: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        drop(values);
        let after: Vec<String> = clones.iter().map(|v| format!("{v:?}")).collect();
        assert_eq!(after, texts);
        assert!(matches!(&clones[8], Value::Str(s) if s.is_heap_allocated() && s == long.as_str()));
    }

    #[test]
    fn doubles_read_back_as_the_same_doubles() {
        for d in [
            1e300,
            -5e-324,
            f64::MAX,
            1e15,
            123_456.5,
            1.0,
            0.0,
            1e-7,
            -2.5e-5,
        ] {
            let mut s = String::new();
            Value::Double(d).write_json(&mut s);
            let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
            assert!(v.is_f64(), "{s} reads back as a non-double");
            assert_eq!(v.as_f64(), Some(d), "{s}");
        }
    }

    #[test]
    fn retain_keeps_selected_rows_in_order() {
        let schema = Arc::new(Schema::new([("a", Type::Int), ("b", Type::String)]));
        let mut b = Batch::new(schema);
        for i in 0..5 {
            b.push(
                [Value::Int(i), Value::from(format!("s{i}").as_str())],
                i * 10,
            );
        }
        b.retain(&[true, false, true, false, true]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.row(1), &[Value::Int(2), Value::from("s2")]);
        assert_eq!(b.times(), &[0, 20, 40]);
    }

    #[test]
    fn scatter_moves_each_row_to_its_owner_and_drops_the_rest() {
        let long = |i: i64| format!("row {i}: a string long enough to live on the heap");
        for width in 0..4usize {
            let fields: Vec<(String, Type)> =
                (0..width).map(|f| (format!("f{f}"), Type::Any)).collect();
            let schema = Arc::new(Schema::new(fields));
            let mut b = Batch::new(schema.clone());
            let row = |i: i64| -> Vec<Value> {
                (0..width)
                    .map(|f| match f {
                        0 => Value::Int(i),
                        1 => Value::from(long(i).as_str()),
                        _ => Value::from("inline"),
                    })
                    .collect()
            };
            for i in 0..100 {
                b.push(row(i), i * 10);
            }
            // Owner 3 is out of range: those rows are dropped (freeing a heap string twice
            // would abort the test in the allocator).
            let owners: Vec<usize> = (0..100).map(|i| (i * 7 % 4) as usize).collect();
            let mut parts: Vec<Batch> = (0..3).map(|_| Batch::new(schema.clone())).collect();
            b.scatter(&owners, &mut parts);
            for (p, part) in parts.iter().enumerate() {
                let want: Vec<i64> = (0..100).filter(|i| owners[*i as usize] == p).collect();
                assert_eq!(part.len(), want.len(), "width {width} part {p}");
                for (j, i) in want.iter().enumerate() {
                    assert_eq!(part.row(j), &row(*i)[..], "width {width} part {p} row {j}");
                    assert_eq!(part.time(j), i * 10);
                }
            }
        }
    }

    #[test]
    fn json_keeps_doubles_doubles_and_escapes_strings() {
        let schema = Schema::new([("x", Type::Double), ("s", Type::String)]);
        let mut out = String::new();
        row_json(
            &schema,
            &[Value::Double(2.0), Value::from("a\"b\n")],
            &mut out,
        );
        assert_eq!(out, r#"{"x":2.0,"s":"a\"b\n"}"#);
    }
}
