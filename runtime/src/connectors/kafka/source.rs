//! The Kafka source: worker `w` of `P` reads the topic's partitions `p` with `p mod P = w`,
//! assigned by hand (not by a consumer-group rebalance) so that Eddy's checkpoints, not the
//! group, decide where a restored job resumes. Read offsets are also committed to the group
//! when a checkpoint completes, for lag monitoring.
//!
//! The watermark is the minimum over this worker's partitions of (largest event time −
//! out-of-orderness); a partition that has been read to its end and sent nothing for
//! `idleTimeout` stops holding it back (Flink's `withIdleness`; "read to its end", so that a
//! partition with a backlog is never skipped because the job was busy elsewhere), and a worker
//! whose partitions are all idle says so downstream ([`crate::exchange::IDLE`]) rather than
//! stalling every window.

use super::{ClientSettings, Ctx};
use crate::connectors::file::JsonRecords;
use crate::connectors::{ConnectorError, Source, TimeField, now_ms};
use crate::exchange::IDLE;
use crate::operators::Emit;
use crate::record::Schema;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a partition without a checkpointed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    /// The consumer group's committed offset, else the earliest.
    Committed,
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl StartFrom {
    pub fn parse(s: &str) -> Result<StartFrom, String> {
        match s {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            "committed" => Ok(StartFrom::Committed),
            _ => match s
                .strip_prefix("timestamp:")
                .map(|t| t.trim().parse::<i64>())
            {
                Some(Ok(t)) => Ok(StartFrom::Timestamp(t)),
                _ => Err(format!(
                    "expected `earliest`, `latest`, `committed` or `timestamp:<ms since the epoch>`, got `{s}`"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSourceConfig {
    pub client: ClientSettings,
    pub topic: String,
    /// The group offsets are committed to (default `<job prefix>-<source name>`).
    pub group_id: String,
    pub start: StartFrom,
    /// Read up to the end offsets found when each partition is assigned, then finish.
    pub bounded: bool,
    pub idle_timeout: Duration,
    pub discovery: Duration,
}

/// How long a metadata or offset lookup may block before it is retried later.
const LOOKUP: Duration = Duration::from_secs(5);
/// Longest wait between connection attempts while the cluster is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Part {
    /// Next offset to emit.
    next: i64,
    /// Bounded reads stop before this offset.
    end: Option<i64>,
    done: bool,
    max_ts: i64,
    last_seen: Instant,
    /// Read to the end of the log (an end-of-partition event) and nothing since.
    caught_up: bool,
}

pub struct KafkaSource {
    cfg: KafkaSourceConfig,
    worker: usize,
    workers: usize,
    out_of_orderness: i64,
    records: JsonRecords,
    consumer: Option<BaseConsumer<Ctx>>,
    parts: BTreeMap<i32, Part>,
    /// Offsets from the checkpoint this run restored (every old worker's, merged).
    resumed: BTreeMap<i32, i64>,
    /// Bounded reads: the end offsets the first run fixed (a restore reads to the same ends).
    resumed_ends: BTreeMap<i32, i64>,
    /// This run continues a checkpoint: partitions it does not list are new, read from the
    /// start (not from `startFrom`, which is for a job's first run).
    restored: bool,
    retry_at: Instant,
    backoff: Duration,
    next_discovery: Instant,
}

impl KafkaSource {
    pub fn new(
        cfg: KafkaSourceConfig,
        schema: Arc<Schema>,
        worker: usize,
        workers: usize,
        time: TimeField,
        out_of_orderness: i64,
        projection: Option<Arc<[bool]>>,
    ) -> KafkaSource {
        let now = Instant::now();
        KafkaSource {
            cfg,
            worker,
            workers: workers.max(1),
            out_of_orderness,
            records: JsonRecords::new(schema, projection, time),
            consumer: None,
            parts: BTreeMap::new(),
            resumed: BTreeMap::new(),
            resumed_ends: BTreeMap::new(),
            restored: false,
            retry_at: now,
            backoff: Duration::from_millis(500),
            next_discovery: now,
        }
    }

    fn client_name(&self) -> String {
        format!("source {} worker {}", self.cfg.topic, self.worker)
    }

    /// Creates the consumer and assigns this worker's partitions. A config error is the
    /// user's to fix (an error); an unreachable cluster or a missing topic is retried.
    fn connect(&mut self) -> Result<Result<(), String>, ConnectorError> {
        let mut c = self.cfg.client.config();
        c.set("group.id", &self.cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            // Results of transactional producers are read once they commit, never aborted ones.
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            // librdkafka pauses fetching for this long whenever its local queue looks full
            // (default 1 s): with a consumer that drains the queue in microseconds, that pause,
            // not the CPU, capped reading at a quarter of the rate measured without it.
            .set("fetch.queue.backoff.ms", "10");
        // The user's properties win over these defaults.
        for (k, v) in &self.cfg.client.properties {
            c.set(k, v);
        }
        let consumer: BaseConsumer<Ctx> = c
            .create_with_context(Ctx::new(self.client_name()))
            .map_err(|e| {
                ConnectorError::Config(format!(
                    "kafka source `{}`: bad client configuration: {e}",
                    self.cfg.topic
                ))
            })?;
        let found = match partitions(&consumer, &self.cfg.topic) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.assign(&consumer, &found, true) {
            return Ok(Err(e));
        }
        self.consumer = Some(consumer);
        self.next_discovery = Instant::now() + self.cfg.discovery;
        tracing::info!(
            topic = %self.cfg.topic,
            worker = self.worker,
            partitions = ?self.parts.keys().collect::<Vec<_>>(),
            "kafka source assigned"
        );
        Ok(Ok(()))
    }

    /// Assigns the partitions of `found` that are this worker's and not assigned yet.
    /// Partitions found after the start are read from their beginning (they are new).
    fn assign(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        found: &[i32],
        initial: bool,
    ) -> Result<(), String> {
        let topic = &self.cfg.topic;
        let mut tpl = TopicPartitionList::new();
        let mut added = Vec::new();
        let now = Instant::now();
        for &p in found {
            if p as usize % self.workers != self.worker || self.parts.contains_key(&p) {
                continue;
            }
            let (low, high) = consumer
                .fetch_watermarks(topic, p, LOOKUP)
                .map_err(|e| format!("reading the offsets of {topic}/{p}: {e}"))?;
            let start = match self.resumed.get(&p) {
                Some(o) => *o,
                None if !initial || self.restored => low,
                None => match self.cfg.start {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                    StartFrom::Committed => {
                        let mut q = TopicPartitionList::new();
                        q.add_partition(topic, p);
                        let got = consumer
                            .committed_offsets(q, LOOKUP)
                            .map_err(|e| format!("reading the group's offsets: {e}"))?;
                        match got.find_partition(topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => o,
                            _ => low,
                        }
                    }
                    StartFrom::Timestamp(t) => {
                        let mut q = TopicPartitionList::new();
                        q.add_partition_offset(topic, p, Offset::Offset(t))
                            .map_err(|e| e.to_string())?;
                        let got = consumer
                            .offsets_for_times(q, LOOKUP)
                            .map_err(|e| format!("looking up offsets by time: {e}"))?;
                        match got.find_partition(topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => o,
                            _ => high,
                        }
                    }
                },
            };
            let start = start.max(low);
            let end = self
                .cfg
                .bounded
                .then(|| self.resumed_ends.get(&p).copied().unwrap_or(high));
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| e.to_string())?;
            added.push((
                p,
                Part {
                    next: start,
                    end,
                    done: end.is_some_and(|e| start >= e),
                    max_ts: i64::MIN,
                    last_seen: now,
                    caught_up: false,
                },
            ));
        }
        if tpl.count() > 0 {
            consumer
                .incremental_assign(&tpl)
                .map_err(|e| format!("assigning partitions: {e}"))?;
        }
        if !initial && !added.is_empty() {
            tracing::info!(topic = %topic, worker = self.worker, partitions = ?added.iter().map(|a| a.0).collect::<Vec<_>>(), "kafka source picked up new partitions");
        }
        self.parts.extend(added);
        Ok(())
    }

    fn discover(&mut self) {
        self.next_discovery = Instant::now() + self.cfg.discovery;
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        let r =
            partitions(&consumer, &self.cfg.topic).and_then(|f| self.assign(&consumer, &f, false));
        if let Err(e) = r {
            consumer.context().warn(
                "discovery",
                &format!("looking for new partitions of `{}`: {e}", self.cfg.topic),
            );
        }
        self.consumer = Some(consumer);
    }

    fn finished(&self) -> bool {
        self.cfg.bounded && self.consumer.is_some() && self.parts.values().all(|p| p.done)
    }
}

/// Runs a call that may block for seconds (metadata and offset lookups while the cluster is
/// slow or away) without holding up the other tasks of the runtime thread it runs on.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The partition ids of `topic`, or why they cannot be had (yet).
fn partitions(consumer: &BaseConsumer<Ctx>, topic: &str) -> Result<Vec<i32>, String> {
    let md = consumer
        .fetch_metadata(Some(topic), LOOKUP)
        .map_err(|e| format!("cannot reach the Kafka cluster: {e}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("topic `{topic}` not found"))?;
    if let Some(e) = t.error() {
        return Err(format!("topic `{topic}`: {:?}", e));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

impl Source for KafkaSource {
    fn poll(&mut self, out: &mut Emit, max: usize) -> Result<bool, ConnectorError> {
        if self.consumer.is_none() {
            if Instant::now() < self.retry_at {
                return Ok(true);
            }
            match blocking(|| self.connect())? {
                Ok(()) => self.backoff = Duration::from_millis(500),
                Err(e) => {
                    tracing::warn!(topic = %self.cfg.topic, worker = self.worker, retry_in_ms = self.backoff.as_millis() as u64, "kafka source: {e}; retrying");
                    self.parts.clear();
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Ok(true);
                }
            }
        }
        if Instant::now() >= self.next_discovery {
            blocking(|| self.discover());
        }
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(true);
        };
        let topic = self.cfg.topic.as_str();
        let now = now_ms();
        let seen = Instant::now();
        let mut n = 0;
        while n < max {
            let msg = match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // The consumer's position passes transaction markers that are never
                    // delivered as records, so a bounded read ends on it, not on the last
                    // offset delivered.
                    if let Some(part) = self.parts.get_mut(&p)
                        && !part.caught_up
                    {
                        part.caught_up = true;
                        part.last_seen = seen;
                    }
                    if let Some(part) = self.parts.get_mut(&p)
                        && let Some(end) = part.end
                        && let Ok(pos) = consumer.position()
                        && let Some(Offset::Offset(o)) =
                            pos.find_partition(topic, p).map(|e| e.offset())
                        && o >= end
                    {
                        part.done = true;
                    }
                    continue;
                }
                Some(Err(e)) => {
                    consumer
                        .context()
                        .warn("poll", &format!("kafka source `{topic}`: {e}"));
                    break;
                }
            };
            let p = msg.partition();
            let offset = msg.offset();
            let Some(part) = self.parts.get_mut(&p) else {
                continue;
            };
            if part.done || offset < part.next {
                continue;
            }
            if part.end.is_some_and(|e| offset >= e) {
                part.done = true;
                continue;
            }
            part.next = offset + 1;
            part.last_seen = seen;
            part.caught_up = false;
            n += 1;
            let text = match msg.payload().map(std::str::from_utf8) {
                Some(Ok(t)) => t,
                Some(Err(_)) => {
                    let raw = String::from_utf8_lossy(msg.payload().unwrap_or_default());
                    out.dead_raw(
                        raw.into_owned(),
                        format!("{topic}/{p}@{offset}: value is not UTF-8"),
                    );
                    continue;
                }
                None => {
                    out.dead_raw(
                        String::new(),
                        format!("{topic}/{p}@{offset}: record has no value (a tombstone)"),
                    );
                    continue;
                }
            };
            let at = || format!("{topic}/{p}@{offset}");
            let stamp = msg.timestamp().to_millis();
            if let Some(t) = self.records.push(text, &at, now, stamp, out) {
                part.max_ts = part.max_ts.max(t);
            }
        }
        Ok(!self.finished())
    }

    fn position(&self) -> serde_json::Value {
        // Partitions not (yet) assigned keep whatever the restored checkpoint said.
        let mut offsets = self.resumed.clone();
        let mut ends = self.resumed_ends.clone();
        for (p, part) in &self.parts {
            offsets.insert(*p, part.next);
            if let Some(e) = part.end {
                ends.insert(*p, e);
            }
        }
        // `assigned`: offsets were ever resolved, so a restore treats unlisted partitions as new.
        let assigned = self.restored || self.consumer.is_some();
        serde_json::json!({ "topic": self.cfg.topic, "offsets": offsets, "ends": ends, "assigned": assigned })
    }

    fn resume(&mut self, parts: &[serde_json::Value]) -> Result<(), ConnectorError> {
        for v in parts {
            if v.is_null() {
                continue;
            }
            let topic = v.get("topic").and_then(|t| t.as_str()).unwrap_or_default();
            if topic != self.cfg.topic {
                return Err(ConnectorError::Config(format!(
                    "the checkpoint holds offsets of topic `{topic}` but the source now reads `{}`; put the topic back or start without state",
                    self.cfg.topic
                )));
            }
            self.restored |= v.get("assigned").and_then(|a| a.as_bool()) == Some(true);
            let map = |key: &str| -> Result<BTreeMap<i32, i64>, ConnectorError> {
                match v.get(key) {
                    None => Ok(BTreeMap::new()),
                    Some(m) => serde_json::from_value(m.clone()).map_err(|e| {
                        ConnectorError::Config(format!("bad kafka source position: {e}"))
                    }),
                }
            };
            // Every old worker recorded only its own partitions; keep this worker's.
            let mine = |p: &i32| *p as usize % self.workers == self.worker;
            for (p, o) in map("offsets")? {
                if mine(&p) {
                    self.resumed.insert(p, o);
                }
            }
            for (p, e) in map("ends")? {
                if mine(&p) {
                    self.resumed_ends.insert(p, e);
                }
            }
        }
        Ok(())
    }

    fn watermark(&self) -> Option<i64> {
        if self.consumer.is_none() {
            // Not connected yet: its partitions are unknown, so it holds the watermark.
            return Some(i64::MIN);
        }
        let now = Instant::now();
        self.parts
            .values()
            .filter(|p| {
                let idle = p.caught_up && now.duration_since(p.last_seen) >= self.cfg.idle_timeout;
                !(p.done || idle)
            })
            .map(|p| {
                p.max_ts
                    .saturating_sub(self.out_of_orderness)
                    .saturating_sub(1)
            })
            .min()
            .or(Some(IDLE))
    }

    fn backoff(&self) -> Option<Duration> {
        Some(Duration::from_millis(2))
    }

    fn on_completed(&mut self, position: &serde_json::Value) {
        let Some(consumer) = self.consumer.as_ref() else {
            return;
        };
        let Some(offsets) = position.get("offsets").and_then(|o| o.as_object()) else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            if let (Ok(p), Some(o)) = (p.parse::<i32>(), o.as_i64())
                && self.parts.contains_key(&p)
            {
                let _ = tpl.add_partition_offset(&self.cfg.topic, p, Offset::Offset(o));
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
        {
            consumer.context().warn(
                "commit",
                &format!(
                    "committing offsets to group `{}` (for lag monitoring only): {e}",
                    self.cfg.group_id
                ),
            );
        }
    }
}
