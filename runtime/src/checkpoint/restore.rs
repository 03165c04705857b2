//! Choosing and preparing the checkpoint a run starts from: the latest complete one (crash
//! recovery) or one the user named; each new instance downloads only the files of old
//! instances whose key groups overlap its own.

use super::storage::CheckpointStorage;
use super::{CheckpointError, FileRef, InstanceState, WorkerManifest, check_compatible};
use crate::exchange::key_group_range;
use crate::job::Restore;
use crate::job::graph::Graph;
use crate::state::{StateOptions, StateStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Downloads what `parallelism` new workers need from checkpoint `dir_rel`.
pub async fn prepare(
    storage: &CheckpointStorage,
    dir_rel: &str,
    graph: &Graph,
    parallelism: usize,
    state_dir: &Path,
    adopt: bool,
) -> Result<Restore, CheckpointError> {
    let (meta, manifests) = storage.load(dir_rel).await?;
    check_compatible(&meta, graph)?;
    storage.verify(dir_rel, &manifests).await?;
    let mut instances = HashMap::new();
    let m = graph.max_parallelism;
    for (id, node) in graph.nodes.iter().enumerate() {
        let olds: Vec<_> = manifests
            .iter()
            .flat_map(|w: &WorkerManifest| w.instances.iter())
            .filter(|i| i.operator == node.name)
            .collect();
        if olds.is_empty() {
            continue;
        }
        // A single-instance node (a sink) runs on worker 0 only.
        let copies = if node.single { 1 } else { parallelism };
        for w in 0..copies {
            let range = if node.single {
                (0, m.saturating_sub(1))
            } else {
                key_group_range(w, parallelism, m)
            };
            let base = state_dir.join("restore").join(format!("{id}-w{w}"));
            let got = download_overlapping(storage, dir_rel, &olds, range, &base).await?;
            // A database made of several old ones is a copy: nothing in it is stored yet.
            if adopt && let [only] = got.stored.as_slice() {
                storage.adopt(&format!("{id}-{}-w{w}", node.name), only);
            }
            let wm = got
                .from
                .iter()
                .map(|o| o.watermark)
                .min()
                .unwrap_or(i64::MIN);
            instances.insert((id, w), (got.dirs, wm));
        }
    }
    Ok(Restore { meta, instances })
}

/// What a new instance downloaded from the old instances overlapping its key groups.
pub struct Downloaded<'a> {
    /// One database directory per old instance (for `StateStore::restore`).
    pub dirs: Vec<PathBuf>,
    /// The old instances they came from.
    pub from: Vec<&'a InstanceState>,
    /// For each directory, its files that are stored already, under their names there: a
    /// checkpoint of the new instance references them instead of uploading them again.
    pub stored: Vec<Vec<FileRef>>,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// Downloads, for a new instance owning key groups `range`, what it needs of every old
/// instance whose key groups overlap it, each into `<base>-from-w<old worker>`: only the SSTs
/// overlapping `range` when that leaves some out (ingested into a database of their own, as
/// DESIGN.md section 5 asks), else the old instance's whole checkpoint.
pub async fn download_overlapping<'a>(
    storage: &CheckpointStorage,
    dir_rel: &str,
    olds: &[&'a InstanceState],
    range: (u32, u32),
    base: &Path,
) -> Result<Downloaded<'a>, CheckpointError> {
    let (lo, hi) = range;
    let from: Vec<&InstanceState> = olds
        .iter()
        .copied()
        .filter(|o| o.key_groups.0 <= hi && lo <= o.key_groups.1)
        .collect();
    let mut out = Downloaded {
        dirs: Vec::with_capacity(from.len()),
        stored: Vec::with_capacity(from.len()),
        from: Vec::new(),
        bytes: 0,
    };
    for o in &from {
        let mut name = base.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-from-w{}", o.worker));
        let dest = base.with_file_name(name);
        remove_leftover(&dest).await?;
        if let Some(ssts) = overlapping_ssts(o, range) {
            match from_ssts(storage, dir_rel, &ssts, &dest).await {
                Ok((bytes, stored)) => {
                    out.bytes += bytes;
                    out.dirs.push(dest);
                    out.stored.push(stored);
                    continue;
                }
                // The whole download below still restores this instance; only its saving
                // is lost.
                Err(e) => {
                    tracing::warn!(operator = %o.operator, worker = o.worker, error = %e, "could not build the state from the overlapping files alone; downloading the whole instance");
                    remove_leftover(&dest).await?;
                }
            }
        }
        out.dirs
            .push(storage.download(dir_rel, &o.files, &dest).await?);
        out.bytes += o.files.iter().map(|f| f.size).sum::<u64>();
        out.stored.push(o.files.clone());
    }
    out.from = from;
    Ok(out)
}

/// The SSTs of `old` that overlap `range`, when they are fewer than all of them and each has
/// the rank ingestion needs; `None` otherwise (take the whole instance).
fn overlapping_ssts(old: &InstanceState, (lo, hi): (u32, u32)) -> Option<Vec<&FileRef>> {
    let ssts: Vec<&FileRef> = old
        .files
        .iter()
        .filter(|f| f.name.ends_with(".sst"))
        .collect();
    if ssts.iter().any(|f| f.rank.is_none()) {
        return None;
    }
    let wanted: Vec<&FileRef> = ssts
        .iter()
        .copied()
        // A file without a recorded range may hold any key group.
        .filter(|f| f.key_groups.is_none_or(|(a, b)| a <= hi && lo <= b))
        .collect();
    (wanted.len() < ssts.len()).then_some(wanted)
}

/// Downloads `ssts` next to `dest` and ingests them into a new database at `dest`; returns the
/// bytes downloaded and the files as they are named in the new database.
async fn from_ssts(
    storage: &CheckpointStorage,
    dir_rel: &str,
    ssts: &[&FileRef],
    dest: &Path,
) -> Result<(u64, Vec<FileRef>), CheckpointError> {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push("-ssts");
    let staging = dest.with_file_name(name);
    remove_leftover(&staging).await?;
    let built = async {
        let refs: Vec<FileRef> = ssts.iter().map(|f| (*f).clone()).collect();
        storage.download(dir_rel, &refs, &staging).await?;
        let files: Vec<(PathBuf, u32)> = ssts
            .iter()
            .map(|f| (staging.join(&f.name), f.rank.unwrap_or(u32::MAX)))
            .collect();
        let (db, opts) = (dest.to_path_buf(), StateOptions::default());
        let names = tokio::task::spawn_blocking(move || StateStore::from_ssts(&db, files, &opts))
            .await
            .map_err(|e| CheckpointError::Invalid {
                path: dest.display().to_string(),
                msg: format!("ingestion stopped: {e}"),
            })??;
        // Ingestion moved (hard-linked) the files: their contents, stored already, are
        // unchanged under new names.
        let stored = names
            .into_iter()
            .filter_map(|(from, to)| {
                let f = ssts.iter().find(|f| staging.join(&f.name) == from)?;
                Some(FileRef {
                    name: to,
                    ..(*f).clone()
                })
            })
            .collect();
        Ok::<_, CheckpointError>(stored)
    }
    .await;
    // Whatever ingestion left (all of it, if it failed) goes.
    remove_leftover(&staging).await?;
    Ok((ssts.iter().map(|f| f.size).sum(), built?))
}

/// Removes a directory an earlier attempt left: a download must not mix in its files.
async fn remove_leftover(dir: &Path) -> Result<(), CheckpointError> {
    if tokio::fs::try_exists(dir).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(dir)
            .await
            .map_err(|source| CheckpointError::Io {
                path: dir.display().to_string(),
                source,
            })?;
    }
    Ok(())
}

/// The newest complete, intact checkpoint that restores, skipping (with a warning) any that
/// are half-written or damaged; `None` when there is none.
pub async fn latest(
    storage: &CheckpointStorage,
    graph: &Graph,
    parallelism: usize,
    state_dir: &Path,
) -> Result<Option<(String, Restore)>, CheckpointError> {
    for dir in storage.list_checkpoints().await? {
        match prepare(storage, &dir, graph, parallelism, state_dir, true).await {
            Ok(r) => return Ok(Some((dir, r))),
            // A plan that no longer fits is the user's to fix, not a damaged checkpoint.
            Err(e @ CheckpointError::Incompatible(_)) => return Err(e),
            Err(e) => {
                // Files it adopted must not stand for the next candidate's.
                storage.forget_adopted();
                tracing::warn!(checkpoint = %dir, error = %e, "skipping an incomplete or damaged checkpoint; trying the previous one");
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::kg_prefix;
    use rocksdb::WriteBatch;
    use std::collections::BTreeMap;

    fn key(kg: u32, i: u32) -> Vec<u8> {
        let mut k = kg_prefix(kg).to_vec();
        k.extend_from_slice(format!("k{i:03}").as_bytes());
        k
    }

    /// Writes (or deletes, for `None`) entries and flushes them into an SST of their own.
    fn round(
        store: &StateStore,
        model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        entries: impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
        scratch: &Path,
    ) {
        let mut b = WriteBatch::default();
        for (k, v) in entries {
            match v {
                Some(v) => {
                    b.put(&k, &v);
                    model.insert(k, v);
                }
                None => {
                    b.delete(&k);
                    model.remove(&k);
                }
            }
        }
        store.write(b).expect("write");
        store.checkpoint(scratch).expect("flush");
    }

    #[tokio::test]
    async fn a_rescaled_instance_downloads_and_ingests_only_its_overlapping_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StateOptions::default();
        let store = StateStore::create(&dir.path().join("old"), (0, 127), &opts).expect("create");
        let scratch = dir.path().join("scratch");
        let mut model = BTreeMap::new();
        // Four rounds over every key group: the fourth L0 file triggers a compaction that
        // moves them all down a level.
        for r in 0..4u32 {
            let all = (0..128).flat_map(|kg| (0..20).map(move |i| (kg, i)));
            let entries = all.map(|(kg, i)| (key(kg, i), Some(format!("r{r}-{kg}-{i}").into())));
            round(&store, &mut model, entries, &scratch);
        }
        store.settle().expect("settle");
        // Then newer versions and deletions in two L0 files, one per half of the key groups.
        // A third L0 file over the upper half again (values back for the deleted entries,
        // others deleted), so a restore of that half takes two L0 files that disagree.
        for (r, half) in [(4u32, 0..64u32), (5, 64..128), (6, 64..128)] {
            let entries = half
                .flat_map(|kg| (0..20).map(move |i| (kg, i)))
                .filter_map(move |(kg, i)| match (i + r) % 4 {
                    0 | 1 => Some((key(kg, i), None)),
                    2 => Some((key(kg, i), Some(format!("r{r}-{kg}-{i}").into()))),
                    _ => None,
                });
            round(&store, &mut model, entries, &scratch);
        }
        let files = store
            .checkpoint(&dir.path().join("cp"))
            .expect("checkpoint");
        let levels: Vec<i32> = files.iter().filter_map(|f| f.sst.map(|s| s.0)).collect();
        assert!(
            levels.iter().filter(|&&l| l == 0).count() >= 2 && levels.iter().any(|&l| l > 0),
            "the checkpoint should span levels: {levels:?}"
        );

        let storage = CheckpointStorage::local(
            dir.path().join("store").to_str().expect("utf8"),
            "ns",
            "job",
        )
        .expect("storage");
        let rel = super::super::storage::chk_dir(1);
        let (refs, _) = storage
            .upload_instance("0-w-w0", &files, &rel, "run")
            .await
            .expect("upload");
        let total: u64 = refs.iter().map(|f| f.size).sum();
        let old = InstanceState {
            operator: "w".into(),
            worker: 0,
            key_groups: (0, 127),
            watermark: 0,
            files: refs,
        };
        for (range, whole) in [((64, 127), false), ((0, 63), false), ((0, 127), true)] {
            let base = dir.path().join(format!("new-{}", range.0));
            check(&storage, &rel, &old, range, &base, &model, total, whole).await;
        }

        // Again from a restored database (ingested files, the trim's range tombstones), after
        // newer versions for key groups 100..=127.
        let base = dir.path().join("again");
        let store = check(&storage, &rel, &old, (64, 127), &base, &model, total, false).await;
        let entries = (100..128u32)
            .flat_map(|kg| (0..20).map(move |i| (kg, i)))
            .filter(|(_, i)| i % 3 == 0)
            .map(|(kg, i)| {
                (
                    key(kg, i),
                    (kg % 2 == 0).then(|| format!("r6-{kg}-{i}").into()),
                )
            });
        round(&store, &mut model, entries, &scratch);
        // (That flush also held the trim's tombstones, over every other key group; this one
        // covers 110..=127 only.)
        let entries = (110..128u32).map(|kg| (key(kg, 1), Some(format!("r7-{kg}").into())));
        round(&store, &mut model, entries, &scratch);
        let files = store
            .checkpoint(&dir.path().join("cp2"))
            .expect("checkpoint");
        let rel2 = super::super::storage::chk_dir(2);
        let (refs, _) = storage
            .upload_instance("0-w-w1", &files, &rel2, "run")
            .await
            .expect("upload");
        let total2: u64 = refs.iter().map(|f| f.size).sum();
        let old2 = InstanceState {
            key_groups: (64, 127),
            files: refs,
            ..old
        };
        let base = dir.path().join("again2");
        check(
            &storage,
            &rel2,
            &old2,
            (64, 80),
            &base,
            &model,
            total2,
            false,
        )
        .await;
    }

    /// Restores `range` from `old` and checks it against `model`; whether it took the whole
    /// instance (`total` bytes) is `whole`.
    #[allow(clippy::too_many_arguments)]
    async fn check(
        storage: &CheckpointStorage,
        rel: &str,
        old: &InstanceState,
        range: (u32, u32),
        base: &Path,
        model: &BTreeMap<Vec<u8>, Vec<u8>>,
        total: u64,
        whole: bool,
    ) -> StateStore {
        let got = download_overlapping(storage, rel, &[old], range, base)
            .await
            .expect("download");
        // A partial restore still knows its files are stored (under their new names).
        let stored: u64 = got.stored.iter().flatten().map(|f| f.size).sum();
        assert_eq!(stored, got.bytes, "range {range:?}");
        for f in &got.stored[0] {
            assert!(
                got.dirs[0].join(&f.name).is_file(),
                "{} not in {:?}",
                f.name,
                got.dirs[0]
            );
        }
        assert_eq!(
            got.bytes < total,
            !whole,
            "range {range:?}: {} of {total}",
            got.bytes
        );
        let opts = StateOptions::default();
        let restored = StateStore::restore(&base.with_extension("db"), range, &got.dirs, &opts)
            .expect("restore");
        let have: BTreeMap<Vec<u8>, Vec<u8>> = restored
            .scan(&[])
            .map(|e| e.map(|(k, v)| (k.into_vec(), v.into_vec())))
            .collect::<Result<_, _>>()
            .expect("scan");
        let want: BTreeMap<Vec<u8>, Vec<u8>> = model
            .iter()
            .filter(|(k, _)| {
                crate::state::kg_of_key(k).is_some_and(|kg| kg >= range.0 && kg <= range.1)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(have.len(), want.len(), "range {range:?}");
        assert!(have == want, "range {range:?}: restored state differs");
        // Point reads too: a scan merges levels by sequence number, a read stops at the
        // first level holding the key, so only reads show files ingested out of order.
        for kg in range.0..=range.1 {
            for i in 0..20 {
                let k = key(kg, i);
                let got = restored.get(&k).expect("get");
                assert_eq!(got.as_ref(), want.get(&k), "key group {kg} entry {i}");
            }
        }
        restored
    }
}
