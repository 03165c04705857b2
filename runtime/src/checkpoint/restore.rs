//! Choosing and preparing the checkpoint a run starts from: the latest complete one (crash
//! recovery) or one the user named; each new instance downloads only the old instances whose
//! key groups overlap its own.

use super::storage::CheckpointStorage;
use super::{CheckpointError, InstanceState, WorkerManifest, check_compatible};
use crate::exchange::key_group_range;
use crate::job::Restore;
use crate::job::graph::Graph;
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
            let (dirs, overlapping) =
                download_overlapping(storage, dir_rel, &olds, range, &base).await?;
            if adopt && let [only] = overlapping.as_slice() {
                storage.adopt(&format!("{id}-{}-w{w}", node.name), &only.files);
            }
            let wm = overlapping
                .iter()
                .map(|o| o.watermark)
                .min()
                .unwrap_or(i64::MIN);
            instances.insert((id, w), (dirs, wm));
        }
    }
    Ok(Restore { meta, instances })
}

/// Downloads, for a new instance owning key groups `range`, the database of every old instance
/// whose key groups overlap it, each into `<base>-from-w<old worker>`. Returns the directories
/// (for `StateStore::restore`) and the old instances they came from.
pub async fn download_overlapping<'a>(
    storage: &CheckpointStorage,
    dir_rel: &str,
    olds: &[&'a InstanceState],
    range: (u32, u32),
    base: &Path,
) -> Result<(Vec<PathBuf>, Vec<&'a InstanceState>), CheckpointError> {
    let (lo, hi) = range;
    let overlapping: Vec<&InstanceState> = olds
        .iter()
        .copied()
        .filter(|o| o.key_groups.0 <= hi && lo <= o.key_groups.1)
        .collect();
    let mut dirs = Vec::with_capacity(overlapping.len());
    for o in &overlapping {
        let mut name = base.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-from-w{}", o.worker));
        let dest = base.with_file_name(name);
        if dest.exists() {
            // Left by an earlier attempt; a download must not mix in its files.
            tokio::fs::remove_dir_all(&dest)
                .await
                .map_err(|source| CheckpointError::Io {
                    path: dest.display().to_string(),
                    source,
                })?;
        }
        dirs.push(storage.download(dir_rel, &o.files, &dest).await?);
    }
    Ok((dirs, overlapping))
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
