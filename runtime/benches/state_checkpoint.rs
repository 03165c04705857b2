//! Checkpoint and restore cost of a large keyed state (issue 4, benchmark item 7), through the
//! same pieces a job uses: a `StateStore` (RocksDB), its checkpoint, `CheckpointStorage`
//! uploads, manifests and `_metadata.json`, and the restore path (`download_overlapping` and
//! `StateStore::restore`), against a local checkpoint directory.
//!
//! Fills one instance's store (key groups 0..=127) with `EDDY_BENCH_STATE_MB` MiB of entries
//! (default 1024; 64 with `QUICK=1`), checkpoints it in full, overwrites 1 % of the entries,
//! checkpoints again (the incremental checkpoint this measures), then restores that checkpoint
//! at P=1 and at P=2 (the two P=2 workers concurrently, as two pods would). Prints one
//! `bench state-...` line per figure. `EDDY_BENCH_DIR` chooses where the files go (default: the
//! system temporary directory); it needs about 5 times the state size free.
//!
//! Run: `cargo bench -p eddy-runtime --bench state_checkpoint` (`make bench` does).

use eddy::checkpoint::restore::download_overlapping;
use eddy::checkpoint::storage::{CheckpointStorage, chk_dir};
use eddy::checkpoint::{InstanceState, Metadata, WorkerManifest};
use eddy::exchange::{key_group, key_group_range};
use eddy::state::{StateOptions, StateStore, kg_prefix};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const MAX_PARALLELISM: u32 = 128;
/// Bytes of each value: random, so LZ4 cannot shrink the state below its nominal size.
const VALUE: usize = 100;
/// An entry's key: key group (2), a state tag (1), the entry's id (8).
const KEY: usize = 11;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn key(id: u64) -> Vec<u8> {
    let kg = key_group(&id.to_le_bytes(), MAX_PARALLELISM);
    let mut k = Vec::with_capacity(KEY);
    k.extend_from_slice(&kg_prefix(kg));
    k.push(1);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Entry `id`'s value in `version`: pseudo-random bytes, a pure function of both.
fn value(id: u64, version: u64) -> Vec<u8> {
    let mut x = xxhash_rust::xxh3::xxh3_64(&[id.to_le_bytes(), version.to_le_bytes()].concat());
    let mut v = Vec::with_capacity(VALUE);
    while v.len() < VALUE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(VALUE);
    v
}

/// One in a hundred entries changes (spread over every key group and every file).
fn changed(id: u64) -> bool {
    id.is_multiple_of(100)
}

fn write(store: &StateStore, ids: impl Iterator<Item = u64>, version: u64) -> Result<(), Error> {
    let mut batch = rocksdb::WriteBatch::default();
    for id in ids {
        batch.put(key(id), value(id, version));
        store.write_when_full(&mut batch)?;
    }
    store.write(batch)?;
    Ok(())
}

fn ms(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

struct Checkpointed {
    local_ms: u128,
    upload_ms: u128,
    total_ms: u128,
    uploaded: u64,
    state: u64,
    files: usize,
}

/// Checkpoint `id` of the store, as the coordinator takes it: a local RocksDB checkpoint, the
/// upload of files no earlier checkpoint uploaded, the manifest, `_metadata.json` last.
async fn checkpoint(
    storage: &CheckpointStorage,
    store: &StateStore,
    local: &Path,
    id: u64,
) -> Result<Checkpointed, Error> {
    let t = Instant::now();
    let dir = local.join(format!("chk-{id}"));
    let files = store.checkpoint(&dir)?;
    let local_ms = ms(t);
    let u = Instant::now();
    let rel = chk_dir(id);
    let (refs, uploaded) = storage
        .upload_instance("0-state-w0", &files, &rel, "bench")
        .await?;
    let state = refs.iter().map(|r| r.size).sum();
    let manifest = WorkerManifest {
        worker: 0,
        instances: vec![InstanceState {
            operator: "state".into(),
            worker: 0,
            key_groups: (0, MAX_PARALLELISM - 1),
            watermark: 0,
            files: refs,
        }],
    };
    let mut meta = Metadata {
        version: 1,
        id,
        savepoint: false,
        job: "state".into(),
        time_ms: 0,
        parallelism: 1,
        max_parallelism: MAX_PARALLELISM,
        operators: Vec::new(),
        sources: BTreeMap::new(),
        sinks: BTreeMap::new(),
        manifests: Vec::new(),
        finished: false,
        state_bytes: state,
        uploaded_bytes: uploaded,
    };
    storage.commit(&rel, &[manifest], &mut meta).await?;
    let upload_ms = ms(u);
    std::fs::remove_dir_all(&dir)?;
    Ok(Checkpointed {
        local_ms,
        upload_ms,
        total_ms: ms(t),
        uploaded,
        state,
        files: files.len(),
    })
}

struct Restored {
    ms: u128,
    downloaded: u64,
}

/// Restores worker `w` of `p` from checkpoint `id`: downloads what overlaps its key groups and
/// rebuilds its store; checks a sample of entries against what was written.
async fn restore(
    storage: &CheckpointStorage,
    id: u64,
    w: usize,
    p: usize,
    dir: &Path,
    entries: u64,
) -> Result<Restored, Error> {
    let t = Instant::now();
    let rel = chk_dir(id);
    let (_, manifests) = storage.load(&rel).await?;
    let olds: Vec<&InstanceState> = manifests.iter().flat_map(|m| &m.instances).collect();
    let range = key_group_range(w, p, MAX_PARALLELISM);
    let base = dir.join(format!("p{p}-w{w}"));
    let got = download_overlapping(storage, &rel, &olds, range, &base).await?;
    let (dirs, downloaded) = (got.dirs, got.bytes);
    let path = dir.join(format!("p{p}-w{w}-db"));
    let store = tokio::task::spawn_blocking(move || {
        StateStore::restore(&path, range, &dirs, &StateOptions::default())
    })
    .await??;
    let elapsed = ms(t);
    // The sample: about 2,000 entries, changed ones included; each in this worker's key
    // groups must hold its latest value, every other one must be absent.
    for id in (0..entries).step_by((entries / 2000).max(1) as usize) {
        let k = key(id);
        let kg = u32::from(u16::from_be_bytes([k[0], k[1]]));
        let got = store.get(&k)?;
        if (range.0..=range.1).contains(&kg) {
            let version = u64::from(changed(id));
            if got.as_deref() != Some(&value(id, version)[..]) {
                return Err(format!("entry {id}: wrong or missing after restore").into());
            }
        } else if got.is_some() {
            return Err(format!("entry {id}: outside key groups {range:?} but restored").into());
        }
    }
    Ok(Restored {
        ms: elapsed,
        downloaded,
    })
}

async fn run() -> Result<(), Error> {
    let quick = std::env::var("QUICK").is_ok_and(|q| !q.is_empty() && q != "0");
    let mb: u64 = match std::env::var("EDDY_BENCH_STATE_MB") {
        Ok(v) => v.parse()?,
        Err(_) if quick => 64,
        Err(_) => 1024,
    };
    let root = std::env::var_os("EDDY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(root)?;
    let entries = (mb << 20) / (KEY + VALUE) as u64;
    let opts = StateOptions::default();
    let store = StateStore::create(&tmp.path().join("db"), (0, MAX_PARALLELISM - 1), &opts)?;

    let t = Instant::now();
    write(&store, 0..entries, 0)?;
    store.settle()?;
    let fill_s = t.elapsed().as_secs_f64();
    let ckdir = tmp.path().join("checkpoints");
    let ckdir = ckdir.to_str().ok_or("non-UTF-8 temporary directory")?;
    let storage = CheckpointStorage::local(ckdir, "bench", "state")?;
    let local = tmp.path().join("local");
    let full = checkpoint(&storage, &store, &local, 1).await?;
    println!(
        "bench state-checkpoint-full state_mb={mb} entries={entries} fill_s={fill_s:.1} ms={} local_ms={} upload_ms={} uploaded_bytes={} state_bytes={} files={}",
        full.total_ms, full.local_ms, full.upload_ms, full.uploaded, full.state, full.files
    );

    let t = Instant::now();
    write(&store, (0..entries).filter(|&i| changed(i)), 1)?;
    let change_ms = ms(t);
    let inc = checkpoint(&storage, &store, &local, 2).await?;
    println!(
        "bench state-checkpoint-incremental state_mb={mb} changed_entries={} change_ms={change_ms} ms={} local_ms={} upload_ms={} uploaded_bytes={} state_bytes={} uploaded_pct={:.2} files={}",
        entries.div_ceil(100),
        inc.total_ms,
        inc.local_ms,
        inc.upload_ms,
        inc.uploaded,
        inc.state,
        100.0 * inc.uploaded as f64 / inc.state as f64,
        inc.files
    );
    drop(store);

    let dir = tmp.path().join("restore");
    let p1 = restore(&storage, 2, 0, 1, &dir, entries).await?;
    println!(
        "bench state-restore-p1 state_mb={mb} ms={} downloaded_bytes={}",
        p1.ms, p1.downloaded
    );
    let t = Instant::now();
    let (a, b) = tokio::join!(
        restore(&storage, 2, 0, 2, &dir, entries),
        restore(&storage, 2, 1, 2, &dir, entries)
    );
    let (a, b) = (a?, b?);
    println!(
        "bench state-restore-p2 state_mb={mb} ms={} worker0_ms={} worker1_ms={} worker0_downloaded_bytes={} worker1_downloaded_bytes={}",
        ms(t),
        a.ms,
        b.ms,
        a.downloaded,
        b.downloaded
    );
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a test run must not start a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("state_checkpoint: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("state_checkpoint: {e}");
        std::process::exit(1);
    }
}
