//! JSON-lines files: one file, or every `*.json`/`*.jsonl` file of a directory (each file a
//! split; worker `w` of `W` reads the files whose sorted position is `≡ w (mod W)`). Files of
//! 16 MiB and more are read by every worker, in blocks (`file_blocks`).
//!
//! Lines are decoded straight into a row of the source's schema: keys are matched to field
//! positions and unknown keys skipped, so no per-record map is built.

use super::file_blocks::{BlockFile, Step};
pub use super::json::{JsonRecords, RowDecoder, RowSeed};
use super::splits::Shared;
use super::{ConnectorError, Source, TimeField};
use crate::operators::Emit;
use crate::record::{Schema, Type, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
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
    /// What is left to read, last first.
    work: Vec<Work>,
    /// The whole file being read: name, reader, lines and bytes read so far.
    current: Option<(String, LineReader, u64, u64)>,
    /// The big file being read in blocks.
    blocks: Option<BlockFile>,
    /// Files read to their end: name -> (bytes, lines).
    finished: std::collections::BTreeMap<String, (u64, u64)>,
    /// Where to start each file after a restore: name -> (byte offset, line number).
    resume_at: std::collections::BTreeMap<String, (u64, u64)>,
    /// The big files' blocks, handed out to all workers on demand (`file_blocks`).
    splits: Arc<Shared>,
    /// Big files this worker found no block left to read in.
    exhausted: std::collections::BTreeSet<String>,
    /// The last barrier this worker injected.
    epoch: u64,
    worker: u64,
    workers: u64,
    /// Ends of the lines of the run being decoded (see [`LineReader::run`]).
    ends: Vec<usize>,
    /// Bytes read at a time (smaller in tests, to cut lines across reads).
    pub(super) chunk: usize,
    records: JsonRecords,
}

enum Work {
    Whole(PathBuf),
    /// A big file, read in blocks by every worker.
    Blocks(PathBuf),
}

impl FileSource {
    /// Worker `worker` of `workers`; `splits` are the big files' blocks, shared by all
    /// workers (`SourceSpec::splits`).
    pub fn open(
        config: &FileConfig,
        schema: Arc<Schema>,
        (worker, workers): (usize, usize),
        splits: Arc<Shared>,
        time: TimeField,
        projection: Option<Arc<[bool]>>,
    ) -> Result<FileSource, ConnectorError> {
        let mut src = FileSource {
            work: Vec::new(),
            current: None,
            blocks: None,
            finished: Default::default(),
            resume_at: Default::default(),
            splits,
            exhausted: Default::default(),
            epoch: 0,
            worker: worker as u64,
            workers: workers.max(1) as u64,
            ends: Vec::new(),
            chunk: CHUNK,
            records: JsonRecords::new(schema, projection, time),
        };
        src.plan(&config.path)?;
        Ok(src)
    }

    /// Works out which files (and blocks) this worker reads.
    fn plan(&mut self, path: &str) -> Result<(), ConnectorError> {
        let mut work = Vec::new();
        for (i, f) in list_files(path)?.into_iter().enumerate() {
            let name = f.display().to_string();
            if self.splits.contains_key(&name) {
                work.push(Work::Blocks(f));
            } else if i as u64 % self.workers == self.worker {
                work.push(Work::Whole(f));
            }
        }
        work.reverse();
        self.work = work;
        Ok(())
    }

    /// Starts the next file; `false` when none is left.
    fn next_file(&mut self) -> Result<bool, ConnectorError> {
        let Some(w) = self.work.pop() else {
            return Ok(false);
        };
        match w {
            Work::Whole(f) => {
                let name = f.display().to_string();
                let io = |e| ConnectorError::Io {
                    path: name.clone(),
                    source: e,
                };
                let mut file = File::open(&f).map_err(io)?;
                let (offset, lines) = self.resume_at.get(&name).copied().unwrap_or((0, 0));
                if offset > 0 {
                    use std::io::Seek as _;
                    file.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
                }
                let reader = LineReader::new(file, self.chunk, offset);
                self.current = Some((name, reader, lines, offset));
            }
            Work::Blocks(f) => {
                let name = f.display().to_string();
                if let Some(d) = self.splits.get(&name) {
                    self.blocks = Some(BlockFile::new(name, f, d.clone(), self.chunk));
                }
            }
        }
        Ok(true)
    }
}

impl Source for FileSource {
    fn poll(&mut self, out: &mut Emit, max: usize) -> Result<bool, ConnectorError> {
        let mut n = 0;
        let now = super::now_ms();
        while n < max {
            if let Some(bf) = self.blocks.as_mut() {
                match bf.run(max - n, &mut self.ends, self.epoch)? {
                    Step::Lines {
                        text,
                        offset,
                        before,
                        name,
                    } => {
                        n += emit_run(
                            &mut self.records,
                            (text, &self.ends),
                            name,
                            (before, offset),
                            now,
                            out,
                        );
                    }
                    // Inject it first (the task does, before polling again).
                    Step::Barrier => return Ok(true),
                    Step::Done => {
                        if let Some(bf) = self.blocks.take() {
                            self.exhausted.insert(bf.name);
                        }
                    }
                }
                continue;
            }
            if self.current.is_none() && !self.next_file()? {
                return Ok(false);
            }
            let Some((name, reader, lineno, offset)) = self.current.as_mut() else {
                continue;
            };
            let run = reader
                .run(max - n, &mut self.ends)
                .map_err(|e| ConnectorError::Io {
                    path: name.clone(),
                    source: e,
                })?;
            if run.is_empty() {
                if let Some((name, _, lines, bytes)) = self.current.take() {
                    self.finished.insert(name, (bytes, lines));
                }
                continue;
            }
            n += emit_run(
                &mut self.records,
                (run, &self.ends),
                name,
                (Some(*lineno), *offset),
                now,
                out,
            );
            *lineno += self.ends.len() as u64;
            *offset += run.len() as u64;
        }
        Ok(true)
    }

    fn position(&self) -> serde_json::Value {
        let current = self.current.as_ref().map(|(n, _, l, b)| (n, *b, *l));
        let mut pos = position(&self.resume_at, &self.finished, current);
        // Every big file's, reached or not: each stands for the blocks handed out before the
        // barrier (see `splits`).
        let splits: std::collections::BTreeMap<&String, _> = self
            .splits
            .iter()
            .map(|(name, d)| {
                let s = match &self.blocks {
                    Some(bf) if &bf.name == name => bf.position(self.epoch),
                    _ if self.exhausted.contains(name) => d.ended(),
                    _ => d.position(self.epoch, None),
                };
                (name, s)
            })
            .collect();
        if !splits.is_empty() {
            pos["splits"] = serde_json::json!(splits);
        }
        pos
    }

    fn barrier(&mut self, id: u64) {
        self.epoch = id;
        for d in self.splits.values() {
            d.announce(id);
        }
    }

    fn resume(&mut self, parts: &[serde_json::Value]) -> Result<(), ConnectorError> {
        // Big files resumed with their shared blocks (`file_blocks::plan_splits`).
        merge_positions(&mut self.resume_at, parts)
    }
}

/// Decodes the lines of a run (`ends`: each line's end in it) into `out`, dead-lettering
/// those that are not UTF-8 or do not decode with their place: `name:line` when the number
/// of the line before the run is known, else the line's byte offset. Returns how many lines
/// were records or dead letters (blank lines are neither).
fn emit_run(
    records: &mut JsonRecords,
    (run, ends): (&[u8], &[usize]),
    name: &str,
    (lines_before, offset): (Option<u64>, u64),
    now: i64,
    out: &mut Emit,
) -> usize {
    let place = |k: usize, start: usize| match lines_before {
        Some(l) => format!("{name}:{}", l + k as u64 + 1),
        None => format!("{name}: byte {}", offset + start as u64),
    };
    let mut n = 0;
    // One UTF-8 check for the whole run; lines are checked one by one only when the run holds
    // an invalid one, to find it.
    let text = std::str::from_utf8(run).ok();
    let mut start = 0;
    for (k, &end) in ends.iter().enumerate() {
        let raw = &run[start..end];
        let line = match text {
            Some(t) => t.get(start..end).ok_or(None),
            None => std::str::from_utf8(raw).map_err(Some),
        };
        let line_start = start;
        start = end;
        match line {
            Ok(line) => {
                let text = line.trim_end_matches(['\n', '\r']);
                // A record's line starts with its brace: only other lines can be blank.
                if !text.starts_with('{') && text.trim().is_empty() {
                    continue;
                }
                n += 1;
                records.push(text, &|| place(k, line_start), now, None, out);
            }
            Err(e) => {
                n += 1;
                let raw = trim_newline(raw);
                let at = e.map_or(0, |e| e.valid_up_to());
                out.dead_raw(
                    String::from_utf8_lossy(raw).into_owned(),
                    format!(
                        "{}: not valid UTF-8 (at byte {at} of the line)",
                        place(k, line_start)
                    ),
                );
            }
        }
    }
    n
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

/// The line without its line ending (any run of trailing `\n` and `\r`).
fn trim_newline(mut raw: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = raw {
        raw = rest;
    }
    raw
}

/// A file read in large chunks and cut into lines at `\n` with memchr, without copying
/// lines out.
pub(super) struct LineReader {
    file: File,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    chunk: usize,
    /// File offset of `buf[end]`.
    offset: u64,
    /// File offset past which reads are small ([`TAIL`]): only the line crossing it is
    /// wanted (the end of a worker's block, `BlockFile`).
    stop: u64,
    /// Where the last run starts in `buf`, and its length.
    last: (usize, usize),
}

/// Bytes read per chunk; a longer line grows the buffer.
const CHUNK: usize = 256 * 1024;
/// Bytes read at a time past `stop`: a whole chunk there read (and copied) the next block,
/// another worker's, a second time.
const TAIL: usize = 4096;

impl LineReader {
    /// A reader of `file` from its current position, `offset`.
    pub(super) fn new(file: File, chunk: usize, offset: u64) -> LineReader {
        LineReader {
            file,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            chunk: chunk.max(1),
            offset,
            stop: u64::MAX,
            last: (0, 0),
        }
    }

    /// Gives back the last `n` bytes of the last run: the next run starts with them.
    pub(super) fn unread(&mut self, n: usize) {
        let n = n.min(self.last.1);
        self.start -= n;
        self.last.1 -= n;
    }

    /// The last run (less what was given back).
    pub(super) fn last_run(&self) -> &[u8] {
        &self.buf[self.last.0..self.last.0 + self.last.1]
    }

    /// Reads on from `offset` instead, keeping the buffer (and the open file).
    pub(super) fn seek(&mut self, offset: u64) -> std::io::Result<()> {
        use std::io::Seek as _;
        self.file.seek(std::io::SeekFrom::Start(offset))?;
        (self.start, self.end, self.eof, self.offset) = (0, 0, false, offset);
        self.last = (0, 0);
        Ok(())
    }

    /// Reads past `stop` only as far as the line crossing it needs.
    pub(super) fn stop_at(&mut self, stop: u64) {
        self.stop = stop;
    }

    /// The next up to `max` whole lines as one run of bytes, newlines included; `ends` gets
    /// each line's end within the run. A last line without a newline ends at the end of the
    /// file. An empty run: the file is read to its end.
    pub(super) fn run(&mut self, max: usize, ends: &mut Vec<usize>) -> std::io::Result<&[u8]> {
        ends.clear();
        let mut scanned = 0;
        loop {
            let unread = &self.buf[self.start..self.end];
            for p in memchr::memchr_iter(b'\n', &unread[scanned..]) {
                ends.push(scanned + p + 1);
                if ends.len() >= max {
                    break;
                }
            }
            let len = match ends.last() {
                Some(&len) => len,
                None if self.eof => unread.len(),
                None => {
                    // No whole line yet (`unread` is a line's beginning): read more.
                    scanned = unread.len();
                    self.fill()?;
                    continue;
                }
            };
            if len > 0 && ends.is_empty() {
                ends.push(len);
            }
            let run = self.start..self.start + len;
            self.last = (self.start, len);
            self.start += len;
            return Ok(&self.buf[run]);
        }
    }

    /// Reads the next chunk after the unread bytes, moved to the front first.
    fn fill(&mut self) -> std::io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() - self.end < self.chunk.div_ceil(2) {
            self.buf.resize(self.end + self.chunk, 0);
        }
        let want = match self.stop.checked_sub(self.offset) {
            Some(left) if left > 0 => usize::try_from(left).unwrap_or(usize::MAX),
            _ => TAIL,
        };
        let room = self.buf.len().min(self.end.saturating_add(want.max(1)));
        loop {
            match self.file.read(&mut self.buf[self.end..room]) {
                Ok(0) => self.eof = true,
                Ok(read) => {
                    self.end += read;
                    self.offset += read as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::record::Batch;
    use std::io::Write as _;

    fn decode(schema: &Schema, line: &str) -> Result<Vec<Value>, String> {
        let mut row = Vec::new();
        RowDecoder::new(Arc::new(schema.clone()), None)
            .decode(line, &mut row)
            .map_err(|e| e.to_string())?;
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

    /// The `n` of every row emitted into `out` (-1 for a non-int).
    pub(in crate::connectors) fn taken_ns(out: &mut Emit) -> Vec<i64> {
        out.take()
            .iter()
            .flat_map(Batch::rows)
            .map(|(row, _)| match row[0] {
                Value::Int(n) => n,
                _ => -1,
            })
            .collect()
    }

    /// What a file source reads from `bytes`, `max` records per poll and `chunk` bytes per
    /// read, resuming from `resume` if given: the `n` values, the dead letters' (record,
    /// reason) and the position after each poll.
    struct Read {
        ns: Vec<i64>,
        dead: Vec<(String, String)>,
        positions: Vec<(u64, u64)>,
    }

    fn read(bytes: &[u8], chunk: usize, max: usize, resume: Option<(u64, u64)>) -> Read {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let name = path.display().to_string();
        let schema = Arc::new(Schema::new([("n", Type::Int)]));
        let config = FileConfig { path: name.clone() };
        let mut src = FileSource::open(
            &config,
            schema.clone(),
            (0, 1),
            Default::default(),
            TimeField::Processing,
            None,
        )
        .unwrap();
        src.chunk = chunk;
        if let Some((b, l)) = resume {
            let pos = serde_json::json!({ "files": { name.clone(): [b, l] } });
            src.resume(&[pos]).unwrap();
        }
        let mut out = Emit::new("src".into(), schema);
        let mut positions = Vec::new();
        loop {
            let more = src.poll(&mut out, max).unwrap();
            let files: Positions = serde_json::from_value(src.position()["files"].clone()).unwrap();
            positions.push(files.get(&name).copied().unwrap_or((0, 0)));
            if !more {
                break;
            }
        }
        let ns = taken_ns(&mut out);
        let dead = out
            .dead
            .iter()
            .map(|d| {
                let at = d.reason.find(':').unwrap_or(0);
                (d.record.clone(), d.reason[at..].replace(&name, "F"))
            })
            .collect();
        Read {
            ns,
            dead,
            positions,
        }
    }

    #[test]
    fn lines_cut_across_reads_crlf_blank_and_unterminated_last_line() {
        let input = b"{\"n\":1}\r\n\n  \n{\"n\": 22}\n{\"n\":333}";
        for chunk in [1, 2, 3, 5, 8, 1 << 16] {
            for max in [1, 2, 100] {
                let r = read(input, chunk, max, None);
                assert_eq!(r.ns, vec![1, 22, 333], "chunk {chunk} max {max}");
                assert!(r.dead.is_empty(), "{:?}", r.dead);
                // Blank lines count as lines; the last one has no newline.
                assert_eq!(r.positions.last(), Some(&(input.len() as u64, 5)));
            }
        }
        // One record per poll: each position is just past its record's line.
        let r = read(input, 3, 1, None);
        assert_eq!(&r.positions[..3], &[(9, 1), (23, 4), (32, 5)]);
    }

    #[test]
    fn resumes_at_a_saved_offset_and_line() {
        let input = b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";
        let r = read(input, 4, 100, Some((8, 1)));
        assert_eq!(r.ns, vec![2, 3]);
        assert_eq!(r.positions.last(), Some(&(input.len() as u64, 3)));
    }

    #[test]
    fn invalid_utf8_line_is_dead_lettered_with_its_place() {
        let input = b"{\"n\":1}\n{\"n\":\"\xff\"}\r\n{\"n\":3}\n";
        for chunk in [3, 1 << 16] {
            let r = read(input, chunk, 100, None);
            assert_eq!(r.ns, vec![1, 3]);
            assert_eq!(r.dead.len(), 1);
            assert_eq!(r.dead[0].0, "{\"n\":\"\u{fffd}\"}");
            assert_eq!(
                r.dead[0].1, ":2: not valid UTF-8 (at byte 6 of the line)",
                "{:?}",
                r.dead
            );
            assert_eq!(r.positions.last(), Some(&(input.len() as u64, 3)));
        }
    }

    #[test]
    fn undecodable_line_is_dead_lettered_with_the_serde_reason() {
        let r = read(b"{\"n\":1}\n{\"n\":1.5}\n", 4, 100, None);
        assert_eq!(r.ns, vec![1]);
        assert_eq!(
            r.dead,
            vec![(
                "{\"n\":1.5}".to_string(),
                ":2: field `n`: expected Int, got double at line 1 column 9".to_string()
            )]
        );
    }

    #[test]
    fn a_line_longer_than_the_chunk_grows_the_buffer() {
        let long = format!("{{\"pad\":\"{}\",\"n\":7}}\n{{\"n\":8}}", "x".repeat(1000));
        let r = read(long.as_bytes(), 16, 100, None);
        assert_eq!(r.ns, vec![7, 8]);
    }

    #[test]
    fn a_reader_reads_only_the_crossing_line_past_its_stop_and_reuses_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.jsonl");
        let text: String = (0..20_000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let mut r = LineReader::new(File::open(&path).unwrap(), 64 * 1024, 0);
        let mut ends = Vec::new();
        let mut got = Vec::new();
        for (from, stop) in [(0u64, 10_000u64), (50_000, 60_000)] {
            r.seek(from).unwrap();
            r.stop_at(stop);
            let mut at = from;
            while at < stop {
                let run = r.run(100, &mut ends).unwrap();
                assert!(!run.is_empty());
                got.extend_from_slice(run);
                at += run.len() as u64;
            }
            let expect = &text.as_bytes()[from as usize..at as usize];
            assert_eq!(&got[got.len() - expect.len()..], expect);
            // A chunk is 64 KiB, but past the stop only one small read finished the line.
            assert!(
                r.offset <= stop + TAIL as u64,
                "read to {} for a stop at {stop}",
                r.offset
            );
        }
        assert_eq!(r.buf.capacity(), 64 * 1024, "one buffer for both");
    }
}
