//! Keyed state in RocksDB (DESIGN.md section 5).
//!
//! One RocksDB instance per stateful operator instance (as Flink's RocksDB backend does): each
//! instance reaches a checkpoint barrier at its own moment and snapshots by itself, so a
//! per-worker database would capture a mix of pre- and post-barrier writes of its operators.
//! Every key starts with its 2-byte big-endian key group, so a worker's share of a key-group
//! range is one range scan, and state beyond a range is dropped with one `delete_range`.
//!
//! Operators keep their hot state in memory (the cache) and write it here on eviction and at
//! checkpoints; a checkpoint is a RocksDB checkpoint (hard links) of the flushed database.

pub mod codec;
mod ffi;

pub use ffi::SstMeta;

use rocksdb::{DB, IteratorMode, Options, WriteBatch};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Db {
        path: String,
        source: rocksdb::Error,
    },
    #[error("state store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt state entry: {0}")]
    Corrupt(String),
}

/// Tunables shared by every instance of a run.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// Entries an operator instance keeps in memory before it spills to RocksDB.
    pub cache_entries: usize,
    /// RocksDB memtable size per instance (bytes).
    pub write_buffer: usize,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            cache_entries: 2_000_000,
            write_buffer: 16 << 20,
        }
    }
}

/// A local file of a checkpointed database, with the key-group range its keys cover.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// First and last key group of an SST file (`None` for MANIFEST, OPTIONS, CURRENT).
    pub key_groups: Option<(u32, u32)>,
    /// An SST's level and sequence numbers: what ingesting it elsewhere needs
    /// ([`StateStore::from_ssts`]).
    pub sst: Option<(i32, (u64, u64))>,
}

/// An SST to ingest into a new database ([`StateStore::from_ssts`]).
#[derive(Debug, Clone)]
pub struct SstFile {
    pub path: PathBuf,
    pub level: i32,
    pub seqnos: (u64, u64),
}

/// A stored key and value.
pub type Entry = (Box<[u8]>, Box<[u8]>);

pub struct StateStore {
    db: DB,
    path: PathBuf,
    /// The key groups this instance owns, inclusive.
    pub range: (u32, u32),
}

fn db_err(path: &Path) -> impl Fn(rocksdb::Error) -> StateError + '_ {
    move |source| StateError::Db {
        path: path.display().to_string(),
        source,
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn db_options(opts: &StateOptions) -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_write_buffer_size(opts.write_buffer);
    o.set_max_write_buffer_number(2);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Checkpoints flush the memtable, so the WAL only protects writes between checkpoints,
    // which a restore discards anyway.
    o.set_manual_wal_flush(true);
    o.set_max_background_jobs(2);
    o
}

/// Entries per RocksDB write batch when writing many.
const CHUNK: usize = 4096;

/// `kg | tag | end | start`: the prefix of one window's entries of one state kind in one key
/// group (times order-preserving, so a window is one prefix scan).
pub fn window_prefix(kg: u32, tag: u8, end: i64, start: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    k.extend_from_slice(&kg_prefix(kg));
    k.push(tag);
    codec::put_ordered_i64(end, &mut k);
    codec::put_ordered_i64(start, &mut k);
    k
}

/// The first key of key group `kg`.
pub fn kg_prefix(kg: u32) -> [u8; 2] {
    (kg as u16).to_be_bytes()
}

/// The key group a stored key belongs to.
pub fn kg_of_key(key: &[u8]) -> Option<u32> {
    Some(u16::from_be_bytes([*key.first()?, *key.get(1)?]) as u32)
}

impl StateStore {
    /// A new, empty store at `path` (anything there is removed).
    pub fn create(path: &Path, range: (u32, u32), opts: &StateOptions) -> Result<Self, StateError> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(io_err(path))?;
        }
        std::fs::create_dir_all(path).map_err(io_err(path))?;
        let db = DB::open(&db_options(opts), path).map_err(db_err(path))?;
        Ok(StateStore {
            db,
            path: path.to_path_buf(),
            range,
        })
    }

    /// Rebuilds the store at `path` for key groups `range` from the databases of old instances
    /// (checkpoint directories already downloaded). With one source it is opened in place and
    /// trimmed; with several, the keys of `range` are copied out of each.
    pub fn restore(
        path: &Path,
        range: (u32, u32),
        sources: &[PathBuf],
        opts: &StateOptions,
    ) -> Result<Self, StateError> {
        if let [only] = sources {
            if path.exists() {
                std::fs::remove_dir_all(path).map_err(io_err(path))?;
            }
            std::fs::rename(only, path).map_err(io_err(path))?;
            let db = DB::open(&db_options(opts), path).map_err(db_err(path))?;
            let store = StateStore {
                db,
                path: path.to_path_buf(),
                range,
            };
            store.trim()?;
            return Ok(store);
        }
        let store = StateStore::create(path, range, opts)?;
        for src in sources {
            let old =
                DB::open_for_read_only(&Options::default(), src, false).map_err(db_err(src))?;
            let mut batch = WriteBatch::default();
            for item in old.iterator(IteratorMode::From(
                &kg_prefix(range.0),
                rocksdb::Direction::Forward,
            )) {
                let (k, v) = item.map_err(db_err(src))?;
                match kg_of_key(&k) {
                    Some(kg) if kg > range.1 => break,
                    Some(_) => batch.put(&k, &v),
                    None => {
                        return Err(StateError::Corrupt(format!(
                            "short key in {}",
                            src.display()
                        )));
                    }
                }
                store.write_when_full(&mut batch)?;
            }
            store.db.write(batch).map_err(db_err(path))?;
        }
        Ok(store)
    }

    /// Drops keys outside this instance's key groups (left from a restore of a wider range).
    fn trim(&self) -> Result<(), StateError> {
        let mut b = WriteBatch::default();
        if self.range.0 > 0 {
            b.delete_range([0u8, 0u8], kg_prefix(self.range.0));
        }
        b.delete_range(&kg_prefix(self.range.1 + 1)[..], &[0xff, 0xff, 0xff][..]);
        self.db.write(b).map_err(db_err(&self.path))
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db.get(key).map_err(db_err(&self.path))
    }

    pub fn write(&self, batch: WriteBatch) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.db.write(batch).map_err(db_err(&self.path))
    }

    /// Writes `batch` (and starts it afresh) once it holds many entries, so writing a large
    /// state never builds one huge batch.
    pub fn write_when_full(&self, batch: &mut WriteBatch) -> Result<(), StateError> {
        if batch.len() >= CHUNK {
            self.write(std::mem::take(batch))?;
        }
        Ok(())
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = Result<Entry, StateError>> + 'a {
        self.db
            .iterator(IteratorMode::From(prefix, rocksdb::Direction::Forward))
            .map(|r| r.map_err(db_err(&self.path)))
            .take_while(move |r| match r {
                Ok((k, _)) => k.starts_with(prefix),
                Err(_) => true,
            })
    }

    /// Takes a checkpoint of the store into `dest` (hard links where possible) and lists its
    /// files with the key groups, level and sequence numbers of each SST.
    pub fn checkpoint(&self, dest: &Path) -> Result<Vec<LocalFile>, StateError> {
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(io_err(dest))?;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        self.db.flush_wal(true).map_err(db_err(&self.path))?;
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(db_err(&self.path))?;
        cp.create_checkpoint(dest).map_err(db_err(dest))?;
        // Listed before the copy is opened below (which adds its own LOG file).
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dest).map_err(io_err(dest))? {
            let entry = entry.map_err(io_err(dest))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map_err(io_err(dest))?.len();
            files.push(LocalFile {
                name,
                path: entry.path(),
                size,
                key_groups: None,
                sst: None,
            });
        }
        // The SSTs' ranges and levels are read from the copy, not the live database: a
        // compaction finishing after the copy would have moved or replaced some of them.
        let mut o = Options::default();
        o.set_max_open_files(16);
        let copy = DB::open_for_read_only(&o, dest, false).map_err(db_err(dest))?;
        let live = copy.live_files().map_err(db_err(dest))?;
        let meta = ffi::sst_meta(&copy);
        for f in &mut files {
            if let Some(l) = live
                .iter()
                .find(|l| l.name.trim_start_matches('/') == f.name)
            {
                let lo = l.start_key.as_deref().and_then(kg_of_key).unwrap_or(0);
                let hi = l.end_key.as_deref().and_then(kg_of_key).unwrap_or(u32::MAX);
                f.key_groups = Some((lo, hi));
            }
            f.sst = meta
                .iter()
                .find(|m| m.name == f.name)
                .map(|m| (m.level, m.seqnos));
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Builds a database at `path` from SSTs of one old instance's checkpoint (a subset: the
    /// ones a new instance's key groups overlap), moving them in with their sequence numbers.
    /// The result is a directory [`StateStore::restore`] takes like a downloaded checkpoint.
    pub fn from_ssts(
        path: &Path,
        mut ssts: Vec<SstFile>,
        opts: &StateOptions,
    ) -> Result<(), StateError> {
        let store = StateStore::create(path, (0, u32::MAX), opts)?;
        // Oldest first wherever files overlap, as ingestion requires: deeper levels hold
        // older versions of a key than shallower ones, and L0 files age with their sequence
        // numbers (their ranges never interleave: each is a flush or a merge of neighbours).
        ssts.sort_by_key(|f| (std::cmp::Reverse(f.level), f.seqnos.1, f.seqnos.0));
        let paths: Vec<&Path> = ssts.iter().map(|f| f.path.as_path()).collect();
        ffi::ingest_db_generated(&store.db, &paths).map_err(|msg| {
            StateError::Corrupt(format!(
                "ingesting {} checkpointed SST files into {}: {msg}",
                paths.len(),
                path.display()
            ))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the memtable and waits until background compactions are done, so a measurement
    /// starts from a settled database rather than from the backlog of a bulk load.
    pub fn settle(&self) -> Result<(), StateError> {
        let mut o = rocksdb::WaitForCompactOptions::default();
        o.set_flush(true);
        self.db.wait_for_compact(&o).map_err(db_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_keeps_exactly_the_owned_key_groups() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StateOptions::default();
        let mut olds = Vec::new();
        for (i, range) in [(0u32, 63u32), (64, 127)].into_iter().enumerate() {
            let s = StateStore::create(&dir.path().join(format!("old{i}")), range, &opts).unwrap();
            let mut b = WriteBatch::default();
            for kg in range.0..=range.1 {
                let mut k = kg_prefix(kg).to_vec();
                k.extend_from_slice(b"key");
                b.put(&k, kg.to_le_bytes());
            }
            s.write(b).unwrap();
            let files = s.checkpoint(&dir.path().join(format!("cp{i}"))).unwrap();
            let sst = files.iter().find(|f| f.name.ends_with(".sst")).unwrap();
            assert_eq!(sst.key_groups, Some(range));
            olds.push(dir.path().join(format!("cp{i}")));
        }
        // Rescale 2 -> 3: worker 1 owns 43..=85, spread over both old instances.
        let s = StateStore::restore(&dir.path().join("new"), (43, 85), &olds, &opts).unwrap();
        let kgs: Vec<u32> = s
            .scan(&[])
            .map(|r| kg_of_key(&r.unwrap().0).unwrap())
            .collect();
        assert_eq!(kgs, (43..=85).collect::<Vec<_>>());
        // One source: opened in place and trimmed.
        let one = vec![olds[1].clone()];
        let s = StateStore::restore(&dir.path().join("new1"), (100, 127), &one, &opts).unwrap();
        let kgs: Vec<u32> = s
            .scan(&[])
            .map(|r| kg_of_key(&r.unwrap().0).unwrap())
            .collect();
        assert_eq!(kgs, (100..=127).collect::<Vec<_>>());
    }
}
