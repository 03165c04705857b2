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
    /// An SST's level, and its rank in the order that ingesting SSTs of this database
    /// elsewhere must follow ([`StateStore::from_ssts`]).
    pub sst: Option<(i32, u32)>,
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

/// Each live file's rank in the order ingesting them into another database must follow:
/// for any key in several files, the older version first. Deeper levels hold older versions,
/// so deepest level first; within L0, by age, oldest first (RocksDB lists L0 newest first, by
/// the epoch it assigns: sequence numbers are no guide once files were themselves ingested);
/// within a deeper level, by first key, so the level is one batch of disjoint files.
fn ingestion_ranks(live: &[rocksdb::LiveFile]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..live.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (&live[a], &live[b]);
        fb.level.cmp(&fa.level).then_with(|| {
            if fa.level == 0 {
                b.cmp(&a)
            } else {
                fa.start_key.cmp(&fb.start_key)
            }
        })
    });
    let mut ranks = vec![0u32; live.len()];
    for (rank, &i) in order.iter().enumerate() {
        ranks[i] = rank as u32;
    }
    ranks
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

    /// Every entry whose key starts with `prefix` and is at least `from`, in key order: a
    /// scan that skips ahead.
    pub fn scan_from<'a>(
        &'a self,
        prefix: &'a [u8],
        from: &[u8],
    ) -> impl Iterator<Item = Result<Entry, StateError>> + 'a {
        self.db
            .iterator(IteratorMode::From(from, rocksdb::Direction::Forward))
            .map(|r| r.map_err(db_err(&self.path)))
            .take_while(move |r| match r {
                Ok((k, _)) => k.starts_with(prefix),
                Err(_) => true,
            })
    }

    /// Takes a checkpoint of the store into `dest` (hard links where possible) and lists its
    /// files with the key groups, level and ingestion rank of each SST.
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
        let ranks = ingestion_ranks(&live);
        for f in &mut files {
            if let Some(i) = live
                .iter()
                .position(|l| l.name.trim_start_matches('/') == f.name)
            {
                let l = &live[i];
                let lo = l.start_key.as_deref().and_then(kg_of_key).unwrap_or(0);
                let hi = l.end_key.as_deref().and_then(kg_of_key).unwrap_or(u32::MAX);
                f.key_groups = Some((lo, hi));
                f.sst = Some((l.level, ranks[i]));
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Builds a database at `path` from SSTs of one old instance's checkpoint (a subset: the
    /// ones a new instance's key groups overlap), moving them in with their sequence numbers,
    /// in the order of their recorded ranks. The result is a directory [`StateStore::restore`]
    /// takes like a downloaded checkpoint. Returns each file's name in the new database, by
    /// its path given (hard links keep the inode; a file RocksDB had to copy is left out).
    pub fn from_ssts(
        path: &Path,
        mut ssts: Vec<(PathBuf, u32)>,
        opts: &StateOptions,
    ) -> Result<Vec<(PathBuf, String)>, StateError> {
        use std::os::unix::fs::MetadataExt as _;
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(io_err(path))?;
        }
        std::fs::create_dir_all(path).map_err(io_err(path))?;
        let mut o = db_options(opts);
        // Each batch of mutually overlapping files goes above the previous one. With
        // dynamic level sizes an empty database's only level below L0 is the last one, so
        // every batch after the first would land in L0 (write stalls past 20 files).
        o.set_level_compaction_dynamic_level_bytes(false);
        let db = DB::open(&o, path).map_err(db_err(path))?;
        ssts.sort_by_key(|(_, rank)| *rank);
        let mut inodes = Vec::with_capacity(ssts.len());
        for (p, _) in &ssts {
            inodes.push((std::fs::metadata(p).map_err(io_err(p))?.ino(), p.clone()));
        }
        let paths: Vec<&Path> = ssts.iter().map(|(p, _)| p.as_path()).collect();
        ffi::ingest_db_generated(&db, &paths).map_err(|msg| {
            StateError::Corrupt(format!(
                "ingesting {} checkpointed SST files into {}: {msg}",
                paths.len(),
                path.display()
            ))
        })?;
        drop(db);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io_err(path))? {
            let entry = entry.map_err(io_err(path))?;
            let ino = entry.metadata().map_err(io_err(path))?.ino();
            if let Some((_, from)) = inodes.iter().find(|(i, _)| *i == ino) {
                names.push((
                    from.clone(),
                    entry.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
        Ok(names)
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
