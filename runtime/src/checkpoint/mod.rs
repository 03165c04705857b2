//! Checkpoints and savepoints (DESIGN.md section 5): what a completed checkpoint records, where
//! it lives, and the coordinator that takes them.
//!
//! Layout under the job's root (`<dir>/<namespace>/<job>/`):
//! `shared/<file>` (state files shared by checkpoints), `checkpoints/chk-<n>/_metadata.json`,
//! `checkpoints/chk-<n>/worker-<i>.manifest.json`, `checkpoints/chk-<n>/w<i>-<op>/<file>`
//! (a database's small private files) and `savepoints/sp-<n>-<utc>/...` holding copies of
//! everything it needs. No object's key is a prefix directory of another, as S3 gateways that
//! store objects as files require. `_metadata.json` is written last: a checkpoint without it
//! is incomplete and ignored.

pub mod coordinator;
pub mod restore;
pub mod storage;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint storage {path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
    #[error("{0}")]
    Incompatible(String),
    #[error("{0}")]
    State(#[from] crate::state::StateError),
}

/// Which directory a stored file's `object` path is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// The job's root (checkpoints share files under `shared/`).
    Job,
    /// The directory holding `_metadata.json` (savepoints are self-contained).
    Own,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRef {
    /// The file's name in the database directory.
    pub name: String,
    pub object: String,
    pub base: Base,
    pub size: u64,
    /// xxh3-64 of the contents, checked after download.
    pub checksum: u64,
    /// Key groups covered by an SST's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<(u32, u32)>,
    /// An SST's level in its database, and its rank in the order in which a restoring
    /// instance ingests the SSTs it overlaps (absent in checkpoints before 2026-11-25, which
    /// restore by downloading every file of an overlapping instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
}

/// One stateful operator instance's database in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceState {
    pub operator: String,
    pub worker: usize,
    pub key_groups: (u32, u32),
    pub watermark: i64,
    pub files: Vec<FileRef>,
}

/// `worker-<i>.manifest.json`: the state of every operator instance of worker i.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerManifest {
    pub worker: usize,
    pub instances: Vec<InstanceState>,
}

/// A stateful operator as the plan defined it; restoring into a plan where it changed fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorShape {
    pub name: String,
    /// Operator kind, key expressions, window and aggregates in a canonical text form.
    pub shape: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub version: u32,
    pub id: u64,
    pub savepoint: bool,
    pub job: String,
    pub time_ms: i64,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub operators: Vec<OperatorShape>,
    /// Source node -> the position of each of its workers.
    pub sources: BTreeMap<String, Vec<serde_json::Value>>,
    /// Sink node -> its committed state.
    pub sinks: BTreeMap<String, serde_json::Value>,
    /// Manifest object paths, relative to the metadata's directory.
    pub manifests: Vec<String>,
    /// Every input was consumed and every result committed.
    pub finished: bool,
    pub state_bytes: u64,
    pub uploaded_bytes: u64,
}

/// The stateful operators of a graph, for the compatibility check on restore.
pub fn shapes(graph: &crate::job::graph::Graph) -> Vec<OperatorShape> {
    use crate::job::graph::NodeKind;
    graph
        .nodes
        .iter()
        .filter_map(|n| {
            let shape = match &n.kind {
                // Sliding windows keep their state in gcd(size, slide)-wide slices (since
                // 2026-11-25; before, one pane per window): checkpoints of the older layout
                // must not be read as slices.
                NodeKind::Window(w) => format!(
                    "window key={:?} window={:?} aggregates={:?}{}",
                    w.key.iter().map(|k| k.text.as_ref()).collect::<Vec<_>>(),
                    w.window,
                    w.aggs
                        .iter()
                        .map(|a| (
                            a.name.as_str(),
                            a.kind,
                            a.arg.as_ref().map(|e| e.text.as_ref())
                        ))
                        .collect::<Vec<_>>(),
                    match w.window.kind {
                        crate::operators::window::WindowKind::Sliding { .. } => " state=slices",
                        _ => "",
                    }
                ),
                // A join keeps its input rows by position: their fields are part of its state's
                // layout (they change when a source is narrowed to other fields).
                NodeKind::Join(j) => {
                    let fields = |port: usize| {
                        n.inputs.get(port).map_or_else(Vec::new, |i| {
                            graph.nodes[i.from]
                                .schema_for(i.late)
                                .names()
                                .map(str::to_string)
                                .collect::<Vec<_>>()
                        })
                    };
                    // `state=rows`: rows stored one by one (since 2026-11-25, session 8);
                    // before, one entry per key held all its rows.
                    format!(
                        "join left={} right={} window={:?} rows={:?}/{:?} state=rows",
                        j.left_key.text,
                        j.right_key.text,
                        j.window,
                        fields(0),
                        fields(1)
                    )
                }
                NodeKind::Top(t) => format!("top n={}", t.n),
                _ => return None,
            };
            Some(OperatorShape {
                name: n.name.clone(),
                shape,
            })
        })
        .collect()
}

/// Why a checkpoint cannot seed this run, naming what changed.
pub fn check_compatible(
    meta: &Metadata,
    graph: &crate::job::graph::Graph,
) -> Result<(), CheckpointError> {
    if meta.max_parallelism != graph.max_parallelism {
        return Err(CheckpointError::Incompatible(format!(
            "maxParallelism changed from {} to {}: keyed state is split into maxParallelism key groups, fixed for the life of a job's state; set it back to {} or start without state (a new --checkpoint-dir or job name)",
            meta.max_parallelism, graph.max_parallelism, meta.max_parallelism
        )));
    }
    let now = shapes(graph);
    for old in &meta.operators {
        match now.iter().find(|n| n.name == old.name) {
            None => {
                return Err(CheckpointError::Incompatible(format!(
                    "step `{}` holds state in the checkpoint but is gone from the plan; put it back or start without state",
                    old.name
                )));
            }
            // The same step, stored in a layout this version no longer reads: nothing for
            // the user to revert.
            Some(n) if n.shape.starts_with(&old.shape) && n.shape != old.shape => {
                return Err(CheckpointError::Incompatible(format!(
                    "step `{}` keeps its state in a new layout in this version of Eddy (`{}`); checkpoints and savepoints taken before cannot restore it: start without state (a new --checkpoint-dir or job name), or finish the job with the previous version",
                    old.name,
                    &n.shape[old.shape.len()..].trim()
                )));
            }
            Some(n) if n.shape != old.shape => {
                return Err(CheckpointError::Incompatible(format!(
                    "step `{}` changed: it was `{}` and is now `{}`; its state cannot be reused: revert the change or start without state",
                    old.name, old.shape, n.shape
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(window: &str, max_parallelism: u32) -> crate::job::graph::Graph {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/lines.jsonl");
        let yaml = format!(
            "maxParallelism: {max_parallelism}\nsources:\n  - {{ name: in, file: {{ path: '{path}', schema: {{ k: int, ts: int }} }}, eventTime: {{ field: ts }} }}\nsteps:\n  - {{ name: w, from: in, keyBy: event.k, window: {window}, aggregate: {{ n: count() }} }}\nsinks:\n  - {{ name: o, from: w, stdout: {{}} }}\n"
        );
        crate::plan::compile(&yaml)
            .unwrap_or_else(|e| panic!("{e}"))
            .1
    }

    fn meta(operators: Vec<OperatorShape>, max_parallelism: u32) -> Metadata {
        Metadata {
            version: 1,
            id: 1,
            savepoint: false,
            job: "j".into(),
            time_ms: 0,
            parallelism: 1,
            max_parallelism,
            operators,
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            manifests: Vec::new(),
            finished: false,
            state_bytes: 0,
            uploaded_bytes: 0,
        }
    }

    fn refusal(m: &Metadata, g: &crate::job::graph::Graph) -> String {
        match check_compatible(m, g) {
            Err(CheckpointError::Incompatible(msg)) => msg,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn incompatible_checkpoints_are_refused_naming_what_changed() {
        let sliding = graph("{ sliding: { size: 10s, slide: 5s } }", 128);
        let now = shapes(&sliding);
        assert!(check_compatible(&meta(now.clone(), 128), &sliding).is_ok());

        let msg = refusal(&meta(now.clone(), 256), &sliding);
        assert!(
            msg.contains("maxParallelism changed from 256 to 128"),
            "{msg}"
        );

        let gone = vec![OperatorShape {
            name: "old_step".into(),
            shape: "top n=3".into(),
        }];
        let msg = refusal(&meta(gone, 128), &sliding);
        assert!(
            msg.contains("`old_step`") && msg.contains("gone from the plan"),
            "{msg}"
        );

        let tumbling = shapes(&graph("{ tumbling: 10s }", 128));
        let msg = refusal(&meta(tumbling, 128), &sliding);
        assert!(
            msg.contains("step `w` changed") && msg.contains("revert"),
            "{msg}"
        );

        // Same plan, state kept in a newer layout: nothing for the user to revert.
        let mut older = now;
        older[0].shape = older[0].shape.replace(" state=slices", "");
        let msg = refusal(&meta(older, 128), &sliding);
        assert!(
            msg.contains("new layout") && msg.contains("state=slices") && !msg.contains("revert"),
            "{msg}"
        );
    }
}
