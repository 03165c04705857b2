//! JSON-lines objects under an object-store prefix (`s3://bucket/prefix/`): the file source for
//! remote paths, optionally watching the prefix for new objects.
//!
//! Reading happens in a background task that lists the prefix and streams each object (a
//! ranged GET from the resume offset, never the whole object in memory) as chunks of complete
//! lines through a bounded channel; `poll` decodes lines from the chunks with the local file
//! source's [`JsonRecords`]. Positions are byte offsets per object, in the local file source's
//! format (`{"files": {name: [bytes, lines]}}`), counted by `poll` as it consumes lines (not
//! by the reader, which runs ahead), so a checkpoint never skips buffered lines.
//!
//! Which worker reads an object: bounded, the objects' sorted index modulo the parallelism (as
//! local files); watched, a hash of the key modulo the parallelism, because new keys can sort
//! anywhere and an object must never change owner while the listing grows. Objects are
//! immutable: an object read to its end is recorded in the position and never read again.
//!
//! Keys with a segment starting with `_` or `.` are skipped (the part sink's `_staging/`, and
//! the usual convention for hidden files), as are keys not ending in `.json` or `.jsonl`.

use super::file::JsonRecords;
use super::{ConnectorError, Source, TimeField};
use crate::operators::Emit;
use crate::record::Schema;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt as _};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A prefix in an object store, with how to name its objects in messages and positions.
#[derive(Clone)]
pub struct ObjectDir {
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside the store, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Prepended to a key to name it: `s3://bucket/`, or the local root directory and `/`.
    base: String,
    /// The directory a local store's keys live under (`None` for S3).
    pub local_root: Option<std::path::PathBuf>,
}

/// An object-store error with the path it concerns, as a connector error.
pub fn store_err(path: impl std::fmt::Display) -> impl Fn(object_store::Error) -> ConnectorError {
    let path = path.to_string();
    move |e| ConnectorError::Store {
        path: path.clone(),
        msg: crate::objstore::short(&e),
    }
}

impl ObjectDir {
    /// The prefix a URL names: `s3://bucket/prefix`, else a local directory (created if
    /// `create`).
    pub fn open(url: &str, create: bool) -> Result<ObjectDir, ConnectorError> {
        if let Some((store, prefix)) =
            crate::objstore::remote(url).map_err(|e| ConnectorError::Config(e.to_string()))?
        {
            let bucket = url
                .trim_start_matches("s3://")
                .split('/')
                .next()
                .unwrap_or("");
            return Ok(ObjectDir {
                store,
                prefix,
                base: format!("s3://{bucket}/"),
                local_root: None,
            });
        }
        let dir = crate::objstore::local_path(url);
        let dir = if dir.is_empty() { "." } else { dir };
        if create {
            std::fs::create_dir_all(dir).map_err(|source| ConnectorError::Io {
                path: dir.to_string(),
                source,
            })?;
        }
        Self::local(std::path::Path::new(dir))
    }

    /// A local directory through object_store's file system store.
    pub fn local(dir: &std::path::Path) -> Result<ObjectDir, ConnectorError> {
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(store_err(dir.display()))?
            // Renames and completed uploads are durable before a commit is reported.
            .with_fsync(true);
        Ok(ObjectDir {
            store: Arc::new(store),
            prefix: String::new(),
            base: format!("{}/", dir.display().to_string().trim_end_matches('/')),
            local_root: Some(dir.to_path_buf()),
        })
    }

    /// The object at `rel` under the prefix.
    pub fn key(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// A key's name in messages and positions (`s3://bucket/key`).
    pub fn name(&self, key: &ObjPath) -> String {
        format!("{}{key}", self.base)
    }

    /// The prefix's name.
    pub fn display(&self) -> String {
        self.name(&ObjPath::from(self.prefix.as_str()))
    }

    /// Every readable object under the prefix, sorted by key; a prefix that names a single
    /// object (and no directory) is that object.
    pub async fn list(&self) -> Result<Vec<ObjectMeta>, ConnectorError> {
        let root = (!self.prefix.is_empty()).then(|| ObjPath::from(self.prefix.as_str()));
        let mut objects = Vec::new();
        let mut stream = self.store.list(root.as_ref());
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| ConnectorError::Store {
                path: self.display(),
                msg: format!(
                    "{}; {}",
                    crate::objstore::short(&e),
                    crate::objstore::CHECK_SETTINGS
                ),
            })?;
            if readable(&meta.location, &self.prefix) {
                objects.push(meta);
            }
        }
        if objects.is_empty()
            && let Some(root) = &root
            && let Ok(meta) = self.store.head(root).await
        {
            objects.push(meta);
        }
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }
}

/// Whether a listed key is a data object: `*.json`/`*.jsonl`, no hidden segment below the
/// prefix.
fn readable(key: &ObjPath, prefix: &str) -> bool {
    let k = key.as_ref();
    let rel = k
        .strip_prefix(prefix)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(k);
    (k.ends_with(".json") || k.ends_with(".jsonl"))
        && !rel
            .split('/')
            .any(|s| s.starts_with('_') || s.starts_with('.'))
}

/// The first non-empty line of the first object, for schema inference.
pub async fn first_line(dir: &ObjectDir) -> Result<Option<(String, String)>, ConnectorError> {
    for meta in dir.list().await? {
        let name = dir.name(&meta.location);
        let got = dir
            .store
            .get(&meta.location)
            .await
            .map_err(store_err(&name))?;
        let mut stream = got.into_stream();
        let mut buf = BytesMut::new();
        loop {
            let next = stream.next().await.transpose().map_err(store_err(&name))?;
            let end = next.is_none();
            if let Some(b) = next {
                buf.extend_from_slice(&b);
            }
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(nl + 1);
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if !text.is_empty() {
                    return Ok(Some((name, text)));
                }
            }
            if end {
                let text = String::from_utf8_lossy(&buf).trim().to_string();
                if !text.is_empty() {
                    return Ok(Some((name, text)));
                }
                break;
            }
        }
    }
    Ok(None)
}

/// What the reader task sends: an object begins (at a resume offset), lines of it, its end.
enum Piece {
    Start {
        name: String,
        offset: u64,
        lines: u64,
    },
    /// Complete lines, except that an object's last piece may end without a newline.
    Data(Bytes),
    End,
    /// Already read to its end by an earlier run: recorded, not read.
    Finished {
        name: String,
        bytes: u64,
        lines: u64,
    },
    /// Watching: a listing found nothing new; everything listed so far was sent.
    Idle,
    /// Bounded: every object was sent.
    Done,
}

#[derive(Debug, Clone)]
pub struct ObjectSourceConfig {
    pub dir: ObjectDir,
    /// List again this often for new objects; `None`: read what is there, then end.
    pub watch: Option<Duration>,
}

impl std::fmt::Debug for ObjectDir {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// The object being read: name, lines and bytes consumed, and the unread rest of a chunk.
struct Current {
    name: String,
    lines: u64,
    offset: u64,
    chunk: Bytes,
}

pub struct ObjectFileSource {
    config: ObjectSourceConfig,
    worker: usize,
    workers: usize,
    out_of_orderness: i64,
    records: JsonRecords,
    /// Started at the first poll, after `resume` told where to start.
    rx: Option<mpsc::Receiver<Result<Piece, ConnectorError>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    current: Option<Current>,
    /// Objects read to their end: name -> (bytes, lines).
    finished: BTreeMap<String, (u64, u64)>,
    resume_at: BTreeMap<String, (u64, u64)>,
    idle: bool,
    done: bool,
    max_ts: i64,
}

impl Drop for ObjectFileSource {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}

impl ObjectFileSource {
    pub fn new(
        config: ObjectSourceConfig,
        schema: Arc<Schema>,
        worker: usize,
        workers: usize,
        time: TimeField,
        out_of_orderness: i64,
        projection: Option<Arc<[bool]>>,
    ) -> ObjectFileSource {
        ObjectFileSource {
            config,
            worker,
            workers: workers.max(1),
            out_of_orderness,
            records: JsonRecords::new(schema, projection, time),
            rx: None,
            reader: None,
            current: None,
            finished: BTreeMap::new(),
            resume_at: BTreeMap::new(),
            idle: false,
            done: false,
            max_ts: i64::MIN,
        }
    }

    fn start_reader(&mut self) {
        // A few chunks of up to ~1 MB each: memory stays bounded while the next GET overlaps
        // decoding.
        let (tx, rx) = mpsc::channel(8);
        let reader = Reader {
            dir: self.config.dir.clone(),
            watch: self.config.watch,
            worker: self.worker,
            workers: self.workers,
            resume_at: self.resume_at.clone(),
            tx,
        };
        self.reader = Some(tokio::spawn(reader.run()));
        self.rx = Some(rx);
    }

    /// Decodes lines of the current chunk until it is used up or `n` reaches `max`.
    fn decode(&mut self, out: &mut Emit, n: &mut usize, max: usize, now: i64) {
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        while *n < max && !cur.chunk.is_empty() {
            let len = cur
                .chunk
                .iter()
                .position(|b| *b == b'\n')
                .map_or(cur.chunk.len(), |i| i + 1);
            let line = cur.chunk.split_to(len);
            cur.lines += 1;
            cur.offset += len as u64;
            let Ok(text) = std::str::from_utf8(&line) else {
                out.dead_raw(
                    String::from_utf8_lossy(&line).trim_end().to_string(),
                    format!("{}:{}: not UTF-8", cur.name, cur.lines),
                );
                continue;
            };
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.starts_with('{') && text.trim().is_empty() {
                continue;
            }
            *n += 1;
            let (name, lineno) = (cur.name.as_str(), cur.lines);
            if let Some(t) = self
                .records
                .push(text, &|| format!("{name}:{lineno}"), now, None, out)
            {
                self.max_ts = self.max_ts.max(t);
            }
        }
    }
}

impl Source for ObjectFileSource {
    fn poll(&mut self, out: &mut Emit, max: usize) -> Result<bool, ConnectorError> {
        if self.rx.is_none() {
            self.start_reader();
        }
        let now = super::now_ms();
        let mut n = 0;
        while n < max {
            self.decode(out, &mut n, max, now);
            if n >= max {
                break;
            }
            let Some(rx) = self.rx.as_mut() else { break };
            let piece = match rx.try_recv() {
                Ok(p) => p?,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) if self.done => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(ConnectorError::Config(format!(
                        "{}: the object reader stopped unexpectedly",
                        self.config.dir.display()
                    )));
                }
            };
            match piece {
                Piece::Start {
                    name,
                    offset,
                    lines,
                } => {
                    self.idle = false;
                    self.current = Some(Current {
                        name,
                        lines,
                        offset,
                        chunk: Bytes::new(),
                    });
                }
                Piece::Data(b) => {
                    if let Some(c) = self.current.as_mut() {
                        c.chunk = b;
                    }
                }
                Piece::End => {
                    if let Some(c) = self.current.take() {
                        self.finished.insert(c.name, (c.offset, c.lines));
                    }
                }
                Piece::Finished { name, bytes, lines } => {
                    self.finished.insert(name, (bytes, lines));
                }
                Piece::Idle => self.idle = self.current.is_none(),
                Piece::Done => self.done = true,
            }
        }
        Ok(!(self.done && self.current.is_none()))
    }

    fn position(&self) -> serde_json::Value {
        super::file::position(
            &self.resume_at,
            &self.finished,
            self.current.as_ref().map(|c| (&c.name, c.offset, c.lines)),
        )
    }

    fn resume(&mut self, parts: &[serde_json::Value]) -> Result<(), ConnectorError> {
        super::file::merge_positions(&mut self.resume_at, parts)
    }

    fn watermark(&self) -> Option<i64> {
        // A watched prefix never ends; a worker with nothing to read must not hold the
        // watermark of the others back (as Kafka's idle partitions).
        self.config.watch?;
        if self.idle && self.current.is_none() {
            return Some(crate::exchange::IDLE);
        }
        Some(
            self.max_ts
                .saturating_sub(self.out_of_orderness)
                .saturating_sub(1),
        )
    }

    fn backoff(&self) -> Option<Duration> {
        Some(if self.idle {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(1)
        })
    }
}

/// The background task: lists, streams objects as pieces.
struct Reader {
    dir: ObjectDir,
    watch: Option<Duration>,
    worker: usize,
    workers: usize,
    resume_at: BTreeMap<String, (u64, u64)>,
    tx: mpsc::Sender<Result<Piece, ConnectorError>>,
}

/// Chunks are cut at the last newline once this much is buffered.
const CHUNK: usize = 256 * 1024;

impl Reader {
    async fn run(self) {
        if let Err(e) = self.read().await {
            let _ = self.tx.send(Err(e)).await;
        }
    }

    fn mine(&self, index: usize, key: &ObjPath) -> bool {
        match self.watch {
            None => index % self.workers == self.worker,
            Some(_) => {
                xxhash_rust::xxh3::xxh3_64(key.as_ref().as_bytes()) % self.workers as u64
                    == self.worker as u64
            }
        }
    }

    /// Sends a piece; `false` when the source is gone.
    async fn send(&self, p: Piece) -> bool {
        self.tx.send(Ok(p)).await.is_ok()
    }

    async fn read(&self) -> Result<(), ConnectorError> {
        let mut seen: HashSet<ObjPath> = HashSet::new();
        loop {
            let listed = match self.dir.list().await {
                Ok(l) => l,
                // A watched prefix outlives a store outage: list again at the next interval.
                Err(e) if self.watch.is_some() && !seen.is_empty() => {
                    tracing::warn!("{e}; listing again in {:?}", self.watch);
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            for (i, meta) in listed.into_iter().enumerate() {
                if !self.mine(i, &meta.location) || !seen.insert(meta.location.clone()) {
                    continue;
                }
                if !self.object(meta).await? {
                    return Ok(());
                }
            }
            let Some(every) = self.watch else {
                self.send(Piece::Done).await;
                return Ok(());
            };
            if !self.send(Piece::Idle).await {
                return Ok(());
            }
            // The listing interval, not a synchronisation.
            tokio::time::sleep(every).await;
        }
    }

    /// Streams one object from its resume offset; `false` when the source is gone.
    async fn object(&self, meta: ObjectMeta) -> Result<bool, ConnectorError> {
        let name = self.dir.name(&meta.location);
        let (offset, lines) = self.resume_at.get(&name).copied().unwrap_or((0, 0));
        if offset >= meta.size {
            return Ok(self
                .send(Piece::Finished {
                    name,
                    bytes: offset,
                    lines,
                })
                .await);
        }
        let opts = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..Default::default()
        };
        let got = self
            .dir
            .store
            .get_opts(&meta.location, opts)
            .await
            .map_err(store_err(&name))?;
        if !self
            .send(Piece::Start {
                name: name.clone(),
                offset,
                lines,
            })
            .await
        {
            return Ok(false);
        }
        let mut stream = got.into_stream();
        let mut buf = BytesMut::new();
        while let Some(bytes) = stream.next().await {
            buf.extend_from_slice(&bytes.map_err(store_err(&name))?);
            if buf.len() >= CHUNK
                && let Some(nl) = buf.iter().rposition(|b| *b == b'\n')
                && !self.send(Piece::Data(buf.split_to(nl + 1).freeze())).await
            {
                return Ok(false);
            }
        }
        if !buf.is_empty() && !self.send(Piece::Data(buf.freeze())).await {
            return Ok(false);
        }
        Ok(self.send(Piece::End).await)
    }
}

#[cfg(test)]
#[path = "object_files_tests.rs"]
mod tests;
