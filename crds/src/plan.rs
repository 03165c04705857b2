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
    /// How far (in event time, like `5s`) a split of an event-time source may read ahead of
    /// the slowest split of the same source before it waits (Flink's watermark alignment).
    /// Windows fire on the slowest split's watermark, so whatever faster splits read beyond it
    /// waits in window state. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_watermark_drift: Option<String>,
}

/// A source of records. Exactly one of `generator`, `nexmark`, `file` or `kafka` is set.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSource>,
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

/// JSON lines from a file or from every `*.json`/`*.jsonl` file of a directory, or from every
/// `*.json`/`*.jsonl` object under an S3 prefix (`s3://bucket/prefix/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    pub path: String,
    /// S3 prefixes only: list the prefix again this often (a duration, `10s`) and read new
    /// objects; the source then never ends. Absent: read what is there, then end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<String>,
    /// Wall-clock pacing, records per second over all workers (replays, demos, tests).
    /// Absent: as fast as the files are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Field names and types (`string`, `int`, `double`, `bool`). Absent: inferred from the
    /// first record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<IndexMap<String, String>>,
}

/// JSON values of a Kafka topic; each partition is a split, read by worker `p mod P`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSource {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group the read offsets are committed to (for lag monitoring only: Eddy's
    /// checkpoints are what a restore resumes from). Default: `eddy-<job>-<source>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Where a partition without checkpointed offset starts: `earliest` (default), `latest`,
    /// `committed` (the group's offsets, else earliest) or `timestamp:<ms since the epoch>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_from: Option<String>,
    /// `latest`: read up to the end offsets found at start, then finish (a bounded job).
    /// Absent: run until stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<String>,
    /// A partition with no record for this long stops holding the watermark back (a duration,
    /// default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// How often new partitions are looked for (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_discovery: Option<String>,
    /// Field names and types (`string`, `int`, `double`, `bool`, `any`) of the JSON values.
    pub schema: IndexMap<String, String>,
    /// Extra librdkafka client properties (`security.protocol`, `sasl.*`, ...).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub properties: IndexMap<String, String>,
    /// Wall-clock pacing in records per second over all workers (a backfill that must not
    /// flood downstream systems, or a demo); absent means as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTime {
    /// Field with the event time in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// Take event time from the Kafka record's timestamp instead of a field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kafka_timestamp: bool,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSink>,
}

impl Sink {
    /// The target part, shared with `deadLetter`.
    pub fn target(&self) -> SinkTarget {
        SinkTarget {
            stdout: self.stdout.clone(),
            file: self.file.clone(),
            kafka: self.kafka.clone(),
        }
    }
}

/// Where records go. Exactly one of `stdout`, `file` or `kafka`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSink>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StdoutSink {}

/// Each result as one JSON value in a Kafka topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSink {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// Field whose value is the record key (so one key's results share a partition).
    /// Absent: no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `exactly-once` (default when checkpoints are on: results are written in a Kafka
    /// transaction committed when the checkpoint completes) or `at-least-once`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// Prefix of the stable `transactional.id` (default `eddy-<job>-<sink>`): two jobs must
    /// never share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
    /// Kafka transaction timeout (a duration, default `60s`); must exceed the checkpoint
    /// interval plus the time a checkpoint takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_timeout: Option<String>,
    /// Extra librdkafka client properties (`security.protocol`, `sasl.*`, ...).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub properties: IndexMap<String, String>,
}

/// JSON lines written to `path`: a file, or, for a path ending in `/` (a local directory or
/// `s3://bucket/prefix/`), one part file `part-<checkpoint>.jsonl` per checkpoint, published
/// when the checkpoint completes.
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
