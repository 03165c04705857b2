//! JSON-lines files: one file, or every `*.json`/`*.jsonl` file of a directory (each file a
//! split; worker `w` of `W` reads the files whose sorted position is `≡ w (mod W)`).
//!
//! Lines are decoded straight into a row of the source's schema: keys are matched to field
//! positions and unknown keys skipped, so no per-record map is built.

use super::{ConnectorError, Source, TimeField};
use crate::operators::Emit;
use crate::record::{Schema, Type, Value};
use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct FileConfig {
    pub path: String,
}

/// The files a path names, sorted, so every worker agrees on the split numbering.
pub fn list_files(path: &str) -> Result<Vec<PathBuf>, ConnectorError> {
    let path = crate::objstore::local_path(path);
    let p = Path::new(path);
    let io = |e| ConnectorError::Io {
        path: path.to_string(),
        source: e,
    };
    let meta = std::fs::metadata(p).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(p).map_err(io)? {
        let entry = entry.map_err(io)?;
        let f = entry.path();
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if f.is_file() && (ext == "json" || ext == "jsonl") {
            files.push(f);
        }
    }
    files.sort();
    Ok(files)
}

/// Field names and types from the first non-empty line of the first file.
pub fn infer_schema(path: &str) -> Result<Schema, ConnectorError> {
    let files = list_files(path)?;
    for f in files {
        let io = |e| ConnectorError::Io {
            path: f.display().to_string(),
            source: e,
        };
        let reader = BufReader::new(File::open(&f).map_err(io)?);
        for line in reader.lines() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            return schema_of_line(&f.display().to_string(), &line);
        }
    }
    Err(ConnectorError::Config(format!(
        "{path}: no records to infer a schema from; declare `schema:`"
    )))
}

/// Field names and types of one JSON-lines line (the first of `name`).
pub fn schema_of_line(name: &str, line: &str) -> Result<Schema, ConnectorError> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        ConnectorError::Config(format!(
            "{name}: first line is not JSON ({e}); declare `schema:`"
        ))
    })?;
    let serde_json::Value::Object(map) = v else {
        return Err(ConnectorError::Config(format!(
            "{name}: first line is not a JSON object; declare `schema:`"
        )));
    };
    Ok(Schema::new(map.iter().map(|(k, v)| {
        let ty = match Value::from_json(v) {
            Value::Null => Type::Any,
            other => Type::of(&other),
        };
        (k.clone(), ty)
    })))
}

pub struct FileSource {
    files: Vec<PathBuf>,
    /// The file being read: name, reader, lines and bytes read so far.
    current: Option<(String, BufReader<File>, u64, u64)>,
    /// Files read to their end: name -> (bytes, lines).
    finished: std::collections::BTreeMap<String, (u64, u64)>,
    /// Where to start each file after a restore: name -> (byte offset, line number).
    resume_at: std::collections::BTreeMap<String, (u64, u64)>,
    line: String,
    records: JsonRecords,
}

impl FileSource {
    pub fn open(
        config: &FileConfig,
        schema: Arc<Schema>,
        worker: usize,
        workers: usize,
        time: TimeField,
        projection: Option<Arc<[bool]>>,
    ) -> Result<FileSource, ConnectorError> {
        let mut files: Vec<PathBuf> = list_files(&config.path)?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % workers.max(1) == worker)
            .map(|(_, f)| f)
            .collect();
        files.reverse();
        Ok(FileSource {
            files,
            current: None,
            finished: Default::default(),
            resume_at: Default::default(),
            line: String::new(),
            records: JsonRecords::new(schema, projection, time),
        })
    }
}

impl Source for FileSource {
    fn poll(&mut self, out: &mut Emit, max: usize) -> Result<bool, ConnectorError> {
        let mut n = 0;
        let now = super::now_ms();
        while n < max {
            if self.current.is_none() {
                let Some(f) = self.files.pop() else {
                    return Ok(false);
                };
                let name = f.display().to_string();
                let file = File::open(&f).map_err(|e| ConnectorError::Io {
                    path: name.clone(),
                    source: e,
                })?;
                let mut reader = BufReader::with_capacity(256 * 1024, file);
                let (offset, lines) = self.resume_at.get(&name).copied().unwrap_or((0, 0));
                if offset > 0 {
                    use std::io::Seek as _;
                    reader.seek(std::io::SeekFrom::Start(offset)).map_err(|e| {
                        ConnectorError::Io {
                            path: name.clone(),
                            source: e,
                        }
                    })?;
                }
                self.current = Some((name, reader, lines, offset));
            }
            let Some((name, reader, lineno, offset)) = self.current.as_mut() else {
                continue;
            };
            self.line.clear();
            let read = reader
                .read_line(&mut self.line)
                .map_err(|e| ConnectorError::Io {
                    path: name.clone(),
                    source: e,
                })?;
            if read == 0 {
                if let Some((name, _, lines, bytes)) = self.current.take() {
                    self.finished.insert(name, (bytes, lines));
                }
                continue;
            }
            *lineno += 1;
            *offset += read as u64;
            let text = self.line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            n += 1;
            let (name, lineno) = (name.as_str(), *lineno);
            self.records
                .push(text, &|| format!("{name}:{lineno}"), now, None, out);
        }
        Ok(true)
    }

    fn position(&self) -> serde_json::Value {
        let current = self.current.as_ref().map(|(n, _, l, b)| (n, *b, *l));
        position(&self.resume_at, &self.finished, current)
    }

    fn resume(&mut self, parts: &[serde_json::Value]) -> Result<(), ConnectorError> {
        merge_positions(&mut self.resume_at, parts)
    }
}

/// Read positions per file: name -> (bytes, lines).
type Positions = std::collections::BTreeMap<String, (u64, u64)>;

/// A file source's checkpoint position: `{"files": {name: [bytes, lines]}}`. It includes the
/// positions this worker restored from (files it has not reached yet would otherwise be read
/// again from the start after the next restore); those may overlap other workers' entries,
/// which [`merge_positions`] resolves by keeping the furthest.
pub(super) fn position(
    restored: &Positions,
    finished: &Positions,
    current: Option<(&String, u64, u64)>,
) -> serde_json::Value {
    let mut files = restored.clone();
    files.extend(finished.iter().map(|(k, v)| (k.clone(), *v)));
    if let Some((name, bytes, lines)) = current {
        files.insert(name.clone(), (bytes, lines));
    }
    serde_json::json!({ "files": files })
}

/// Joins the positions of every worker of a checkpoint: per file, the furthest (files are
/// read forward only, so the furthest is the newest).
pub(super) fn merge_positions(
    into: &mut Positions,
    parts: &[serde_json::Value],
) -> Result<(), ConnectorError> {
    for p in parts {
        let files: Positions = serde_json::from_value(p.get("files").cloned().unwrap_or_default())
            .map_err(|e| ConnectorError::Config(format!("bad file source position: {e}")))?;
        for (name, pos) in files {
            let e = into.entry(name).or_insert(pos);
            if pos.0 > e.0 {
                *e = pos;
            }
        }
    }
    Ok(())
}

/// Decodes JSON-object records (a file's lines, a Kafka value) into rows of a schema, with
/// their event time; shared by every source of JSON records.
pub struct JsonRecords {
    schema: Arc<Schema>,
    mask: Option<Arc<[bool]>>,
    time: TimeField,
    row: Vec<Value>,
}

impl JsonRecords {
    pub fn new(schema: Arc<Schema>, mask: Option<Arc<[bool]>>, time: TimeField) -> JsonRecords {
        JsonRecords {
            schema,
            mask,
            time,
            row: Vec::new(),
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
        self.row.clear();
        self.row.resize(self.schema.len(), Value::Null);
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = RowSeed {
            schema: &self.schema,
            row: &mut self.row,
            mask: self.mask.as_deref(),
        }
        .deserialize(&mut de)
        .and_then(|_| de.end());
        if let Err(e) = parsed {
            out.dead_raw(text.to_string(), format!("{}: {e}", at()));
            return None;
        }
        let t = match self.time {
            TimeField::Processing => now,
            TimeField::Record => record_time.unwrap_or(now),
            TimeField::Field(f) => match self.row[f] {
                Value::Int(t) => t,
                ref other => {
                    let field = &self.schema.fields[f].name;
                    out.dead_raw(
                        text.to_string(),
                        format!(
                            "{}: event time field `{field}` is {}, not an int (ms since epoch)",
                            at(),
                            other.type_name()
                        ),
                    );
                    return None;
                }
            },
        };
        out.push(self.row.drain(..), t);
        Some(t)
    }
}

/// Decodes one JSON object into `row` (already sized and nulled) by the schema.
pub struct RowSeed<'s> {
    pub schema: &'s Schema,
    pub row: &'s mut Vec<Value>,
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

use serde::Deserialize as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(schema: &Schema, line: &str) -> Result<Vec<Value>, String> {
        let mut row = vec![Value::Null; schema.len()];
        let mut de = serde_json::Deserializer::from_str(line);
        RowSeed {
            schema,
            row: &mut row,
            mask: None,
        }
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        Ok(row)
    }

    #[test]
    fn decodes_known_fields_skips_others_and_nulls_missing() {
        let s = Schema::new([
            ("user", Type::String),
            ("n", Type::Int),
            ("x", Type::Double),
        ]);
        let row = decode(&s, r#"{"n": 3, "other": [1, {"a": 2}], "user": "ann"}"#).unwrap();
        assert_eq!(row, vec![Value::from("ann"), Value::Int(3), Value::Null]);
    }

    #[test]
    fn reports_type_mismatch_with_field_name() {
        let s = Schema::new([("n", Type::Int)]);
        let err = decode(&s, r#"{"n": "three"}"#).unwrap_err();
        assert!(err.contains("field `n`"), "{err}");
    }

    #[test]
    fn positions_keep_restored_files_and_merge_to_the_furthest() {
        // A file restored part-way but not reached yet must stay in the next checkpoint, or a
        // later restore would read it from the start again.
        let restored = Positions::from([("a".to_string(), (10, 1)), ("b".to_string(), (5, 1))]);
        let finished = Positions::from([("b".to_string(), (20, 3))]);
        let pos = position(&restored, &finished, Some((&"c".to_string(), 7, 2)));
        // Another worker's older copy of `b` does not move it back.
        let stale = serde_json::json!({ "files": { "b": [5, 1] } });
        let mut merged = Positions::new();
        merge_positions(&mut merged, &[pos, stale]).unwrap();
        assert_eq!(
            merged,
            Positions::from([
                ("a".to_string(), (10, 1)),
                ("b".to_string(), (20, 3)),
                ("c".to_string(), (7, 2)),
            ])
        );
    }

    #[test]
    fn rejects_trailing_garbage() {
        let s = Schema::new([("n", Type::Int)]);
        assert!(decode(&s, r#"{"n": 1} x"#).is_err());
    }
}
