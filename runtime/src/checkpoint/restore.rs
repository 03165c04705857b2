//! Choosing and preparing the checkpoint a run starts from: the latest complete one (crash
//! recovery) or one the user named; each new instance downloads only the old instances whose
//! key groups overlap its own.

use super::storage::CheckpointStorage;
use super::{CheckpointError, WorkerManifest, check_compatible};
use crate::exchange::key_group_range;
use crate::job::Restore;
use crate::job::graph::Graph;
use std::collections::HashMap;
use std::path::Path;

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
            let (lo, hi) = if node.single {
                (0, m.saturating_sub(1))
            } else {
                key_group_range(w, parallelism, m)
            };
            let overlapping: Vec<_> = olds
                .iter()
                .filter(|o| o.key_groups.0 <= hi && lo <= o.key_groups.1)
                .collect();
            let mut dirs = Vec::new();
            for o in &overlapping {
                let dest = state_dir
                    .join("restore")
                    .join(format!("{id}-w{w}-from-w{}", o.worker));
                if dest.exists() {
                    let _ = tokio::fs::remove_dir_all(&dest).await;
                }
                dirs.push(storage.download(dir_rel, &o.files, &dest).await?);
            }
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
