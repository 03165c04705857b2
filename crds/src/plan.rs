//! The job plan: one YAML format for `eddy run PLAN` and for `spec.pipeline` of a StreamJob.
//!
//! Unknown fields are not rejected by serde here: the runtime collects all of them at once
//! (with `serde_ignored`) and reports each with its path.
//!
//! These types only describe the shape. Durations and CEL expressions stay strings here so
//! that one pass of the runtime's validator can report every bad value at once, each with its
//! field path, instead of stopping at the first serde error.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A streaming job: named sources, steps that read from sources or earlier steps, and sinks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// Number of key groups (Flink's maxParallelism). Fixed for the life of the job's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallelism: Option<u32>,
    pub sources: Vec<Source>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    pub sinks: Vec<Sink>,
    /// Where records that fail to parse or evaluate go (with their reason). Default: stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<SinkTarget>,
}

/// A source of records. Exactly one of `generator`, `nexmark` or `file` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexmark: Option<NexmarkSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// Event time: which field holds it and how late records may arrive. Without it, records
    /// carry the time they were read (processing time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTime>,
}

/// Seeded, deterministic click events (`docs/generators.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of records; absent means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Number of distinct users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Event-time density: records per second of event time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u64>,
    /// Event time of the first record, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    /// How far event time may run backwards (a duration like `3s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disorder: Option<String>,
    /// Wall-clock pacing in records per second over all splits; absent means as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
}

/// The Nexmark benchmark's Person / Auction / Bid events (`docs/generators.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NexmarkSource {
    /// `bid`, `person` or `auction`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of events of all kinds; absent means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
}

/// JSON lines from a file or from every `*.json`/`*.jsonl` file of a directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    pub path: String,
    /// Field names and types (`string`, `int`, `double`, `bool`). Absent: inferred from the
    /// first record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<IndexMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTime {
    /// Field with the event time in milliseconds since the epoch.
    pub field: String,
    /// Bounded out-of-orderness of the watermark (a duration like `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_out_of_orderness: Option<String>,
}

/// A key: one CEL expression (`event.user`) or named expressions (`{user: event.user}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum KeySpec {
    One(String),
    Named(IndexMap<String, String>),
}

/// One transformation. Exactly one of `filter`, `map`, `split`, `aggregate` (with `keyBy` and
/// `window`), `top` or `join` says what it does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub name: String,
    /// The source or step this one reads. Not used by `join`, which names both inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Keep the records for which this CEL expression is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Output fields, each a CEL expression over `event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<IndexMap<String, String>>,
    /// Partition by this key; required with `aggregate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "key_spec_schema")]
    pub key_by: Option<KeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Output fields, each an aggregate call: `count()`, `sum(event.x)`, `min`, `max`, `avg`,
    /// `count_distinct`, `first`, `last`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<IndexMap<String, String>>,
    /// The first `n` window results of each window, in `orderBy` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<Top>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    /// One output record per piece of a string split by a separator (like a flatMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

/// Splits a string and emits the input record once per non-empty piece, with the piece in
/// the field `as`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Split {
    /// CEL expression giving the string to split.
    pub expr: String,
    /// Separator; default a single space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// Name of the output field holding each piece.
    #[serde(rename = "as")]
    pub as_field: String,
}

/// A window. Exactly one of `tumbling`, `sliding` or `session`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// Size of a tumbling window (`10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tumbling: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding: Option<Sliding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// How long after a window's end late records still update it (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness: Option<String>,
    /// Name of a side output that receives records too late for any window; sinks may read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_output: Option<String>,
    /// `event` (default) or `processing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sliding {
    pub size: String,
    pub slide: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub gap: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Top {
    pub n: u32,
    /// CEL expressions over `event`, each optionally followed by ` desc` or ` asc`.
    pub order_by: Vec<String>,
}

/// A windowed inner join: records of `left` and `right` with equal keys in the same window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    pub left: JoinSide,
    pub right: JoinSide,
    pub window: Window,
    /// Output fields, CEL expressions over `left` and `right`.
    pub select: IndexMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinSide {
    pub from: String,
    /// CEL expression over `event` giving the join key.
    pub key: String,
}

/// A sink reads one source, step or side output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sink {
    pub name: String,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSink>,
}

impl Sink {
    /// The target part, shared with `deadLetter`.
    pub fn target(&self) -> SinkTarget {
        SinkTarget {
            stdout: self.stdout.clone(),
            file: self.file.clone(),
        }
    }
}

/// Where records go. Exactly one of `stdout` or `file`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSink>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StdoutSink {}

/// JSON lines written to `path` (a file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSink {
    pub path: String,
}

// A string-or-map field is not a structural schema for the apiserver; accept any value there
// and let the runtime's validator report a bad one with its path.
fn key_spec_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A CEL expression (`event.user`) or a map of named CEL expressions.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
