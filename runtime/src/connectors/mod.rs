//! Connectors: sources behind [`Source`], sinks behind [`Sink`]. Each connector is one module.

pub mod file;
mod file_blocks;
pub mod file_sink;
pub mod generator;
pub mod json;
pub mod kafka;
pub mod nexmark;
pub mod object_files;
pub mod part_sink;
pub mod position;
pub mod sink;
pub mod splits;

use crate::operators::Emit;
use crate::record::Schema;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConnectorError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    /// An object store refused or failed a request (the message is the S3 error code, never
    /// credentials).
    #[error("{path}: {msg}")]
    Store { path: String, msg: String },
}

/// Where a record's event time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    /// This field, in milliseconds since the epoch.
    Field(usize),
    /// This field, read for the record's time alone and then removed from its row: nothing
    /// downstream reads it, and carrying it beside the row's time made every row a value
    /// wider at every hop (a keyed count's rows were twice the size of their key).
    Taken(usize),
    /// The wall clock when the record was read.
    Processing,
    /// The timestamp the record carries (Kafka's).
    Record,
}

impl TimeField {
    /// The time of the generated row `values[at..]`: its time field (always an int for the
    /// generators), else `now`. A [`TimeField::Taken`] field is removed from the row.
    #[inline]
    pub fn take(self, values: &mut Vec<crate::record::Value>, at: usize, now: i64) -> i64 {
        let int = |v: &crate::record::Value| match v {
            crate::record::Value::Int(t) => *t,
            _ => now,
        };
        match self {
            TimeField::Field(f) => values.get(at + f).map_or(now, int),
            TimeField::Taken(f) => {
                let t = values.get(at + f).map_or(now, int);
                // Dropped in place: moving the value out (`pop`, `remove`) read back through
                // the stack what was just written, a stall per record.
                if at + f + 1 == values.len() {
                    values.truncate(at + f);
                } else if at + f < values.len() {
                    values.remove(at + f);
                }
                t
            }
            TimeField::Processing | TimeField::Record => now,
        }
    }
}

/// A source's compiled configuration.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub connector: SourceConnector,
    /// The fields each record is read with: the source's output schema, plus a
    /// [`TimeField::Taken`] time field.
    pub schema: Arc<Schema>,
    pub time: TimeField,
    /// Bounded out-of-orderness of the watermark, in ms.
    pub out_of_orderness: i64,
    /// Wall-clock pacing, records per second over all workers.
    pub rate: Option<u64>,
    /// For a generator, the fields of its full record it builds, in order: `schema` is then
    /// those fields alone. For a JSON source, before narrowing, the fields to decode (the
    /// others left null); `None`: all.
    pub projection: Option<Arc<[bool]>>,
    /// `schema` is already cut to the fields downstream steps read.
    pub narrowed: bool,
}

#[derive(Debug, Clone)]
pub enum SourceConnector {
    Generator(generator::ClickConfig),
    Nexmark(nexmark::NexmarkConfig),
    File(file::FileConfig),
    /// JSON-lines objects under an object-store prefix (`s3://...`).
    Objects(object_files::ObjectSourceConfig),
    Kafka(kafka::source::KafkaSourceConfig),
}

/// One worker's share of a source.
pub trait Source: Send {
    /// Pushes up to `max` records into `out` (and dead letters for records that do not parse).
    /// Returns `false` once the input is exhausted.
    fn poll(&mut self, out: &mut Emit, max: usize) -> Result<bool, ConnectorError>;
    /// Where this worker is, for a checkpoint: everything before it was emitted.
    fn position(&self) -> serde_json::Value;
    /// Continues after the positions every worker of the checkpointed run recorded (their
    /// parallelism may differ from this run's).
    fn resume(&mut self, parts: &[serde_json::Value]) -> Result<(), ConnectorError>;
    /// The source's own watermark (possibly [`crate::exchange::IDLE`]); `None`: the task
    /// derives it from the largest event time emitted.
    fn watermark(&self) -> Option<i64> {
        None
    }
    /// How long to wait before polling again after a poll that found nothing (`None`: the
    /// source is never waiting on anything outside).
    fn backoff(&self) -> Option<std::time::Duration> {
        None
    }
    /// The checkpoint that recorded `position` completed.
    fn on_completed(&mut self, _position: &serde_json::Value) {}
    /// The task injects barrier `id`; `position` follows. Sources whose instances share
    /// their splits (`splits`) take no new one until they injected every barrier another
    /// instance did.
    fn barrier(&mut self, _id: u64) {}
}

impl SourceSpec {
    /// The part of this source that worker `worker` of `workers` reads.
    /// What the instances of this source share: the units of a generator's index space or of
    /// each big file, handed out on demand (resumed from a checkpoint's positions if given).
    pub fn splits(
        &self,
        restored: Option<&[serde_json::Value]>,
    ) -> Result<Option<Arc<splits::Shared>>, ConnectorError> {
        let (unit, end) = match &self.connector {
            SourceConnector::Generator(c) => (generator::unit_of(c.events_per_second), c.count),
            SourceConnector::Nexmark(c) => (nexmark::unit_of(c.events_per_second), c.count),
            SourceConnector::File(c) => {
                let files = file_blocks::plan_splits(
                    &c.path,
                    file_blocks::BLOCK,
                    file_blocks::SPLIT_MIN,
                    restored,
                )?;
                return Ok(Some(Arc::new(files)));
            }
            _ => return Ok(None),
        };
        let d = match restored {
            Some(parts) => splits::Dispenser::resume(unit, end, parts)?,
            None => splits::Dispenser::new(unit, end),
        };
        Ok(Some(Arc::new(splits::Shared::from([(
            String::new(),
            Arc::new(d),
        )]))))
    }

    /// Instance `worker` of `workers`; `splits` from [`SourceSpec::splits`], shared by all.
    pub fn open(
        &self,
        worker: usize,
        workers: usize,
        splits: Option<&Arc<splits::Shared>>,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        let shared = match splits {
            Some(s) => s.clone(),
            None => self.splits(None)?.unwrap_or_default(),
        };
        let units = || {
            shared
                .get("")
                .cloned()
                .ok_or_else(|| ConnectorError::Config("source has no splits".into()))
        };
        Ok(match &self.connector {
            SourceConnector::Generator(c) => Box::new(generator::ClickSource::new(
                c.clone(),
                units()?,
                self.time,
                self.projection.clone(),
            )),
            SourceConnector::Nexmark(c) => Box::new(nexmark::NexmarkSource::new(
                c.clone(),
                units()?,
                self.time,
                self.projection.clone(),
            )),
            SourceConnector::File(c) => Box::new(file::FileSource::open(
                c,
                self.schema.clone(),
                (worker, workers),
                shared,
                self.time,
                self.projection.clone(),
            )?),
            SourceConnector::Objects(c) => Box::new(object_files::ObjectFileSource::new(
                c.clone(),
                self.schema.clone(),
                worker,
                workers,
                self.time,
                self.out_of_orderness,
                self.projection.clone(),
            )),
            SourceConnector::Kafka(c) => Box::new(kafka::source::KafkaSource::new(
                c.clone(),
                self.schema.clone(),
                worker,
                workers,
                self.time,
                self.out_of_orderness,
                self.projection.clone(),
            )),
        })
    }
}

/// A sink's compiled configuration.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    Stdout,
    File {
        path: String,
    },
    /// Part files under a prefix (`s3://bucket/prefix/` or a local `dir/`), published per
    /// checkpoint.
    Parts {
        path: String,
    },
    Kafka(kafka::sink::KafkaSinkConfig),
}

impl SinkSpec {
    /// Whether the sink needs rows rather than JSON lines its senders encoded (a keyed Kafka
    /// sink reads the key from the row).
    pub fn wants_rows(&self) -> bool {
        matches!(self, SinkSpec::Kafka(k) if k.key.is_some())
    }
}

pub use sink::Sink;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
