//! The Kafka sink, at-least-once or exactly-once.
//!
//! **At-least-once**: records are produced as they arrive (idempotent producer), and a
//! checkpoint barrier waits until every earlier record is acknowledged by the brokers.
//!
//! **Exactly-once**: librdkafka cannot resume another process's open transaction, so a
//! transaction left open across a crash is lost (aborted when the restarted producer fences
//! it). Results are therefore first written to a local log per checkpoint epoch; the barrier
//! seals the epoch and the checkpoint stores its log (pre-commit). Once the checkpoint is
//! complete, the epoch is produced in one Kafka transaction that also commits the epoch's
//! sequence number as the offset of a marker consumer group (`<transactional.id>.eddy-marker`).
//! Every start first fences older producers (`init_transactions` with the same stable
//! `transactional.id`), reads the marker, produces again exactly the restored checkpoint's
//! epochs the marker does not cover, and numbers new epochs above the marker, so the marker
//! only grows whatever checkpoint store or savepoint a run starts from. A `read_committed`
//! consumer sees every result once.

use super::{ClientSettings, Ctx, ms};
use crate::connectors::ConnectorError;
use crate::state::LocalFile;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSinkConfig {
    pub client: ClientSettings,
    pub topic: String,
    /// Field of the input whose value is the record key.
    pub key: Option<usize>,
    /// `None`: exactly-once when checkpoints are on, else at-least-once.
    pub exactly_once: Option<bool>,
    pub transactional_id: String,
    pub transaction_timeout: Duration,
}

/// What a checkpoint records of an exactly-once Kafka sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaTxnState {
    /// Sealed epochs not known to be committed, oldest first.
    pub pending: Vec<Epoch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// The marker value its transaction commits: increasing over the sink's whole life.
    pub seq: u64,
    /// The checkpoint that sealed it: its completion commits the epoch.
    pub checkpoint: u64,
    pub records: u64,
    /// Name of its log file among the checkpoint's files.
    pub file: String,
}

fn kafka_err(topic: &str, what: &str) -> impl Fn(KafkaError) -> ConnectorError {
    move |e| ConnectorError::Config(format!("kafka sink `{topic}`: {what}: {e}"))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Produces one record, waiting while librdkafka's queue is full (backpressure).
fn send_blocking(
    producer: &ThreadedProducer<Ctx>,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<(), KafkaError> {
    loop {
        let mut rec = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Records are produced as they come; barriers wait for their acknowledgement.
pub struct AtLeastOnce {
    topic: String,
    producer: Arc<ThreadedProducer<Ctx>>,
}

impl AtLeastOnce {
    pub fn open(cfg: &KafkaSinkConfig, name: &str) -> Result<AtLeastOnce, ConnectorError> {
        let mut c = cfg.client.config();
        c.set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // While the cluster is away, records wait (and barriers with them) instead of
            // failing the job after librdkafka's default five minutes.
            .set("message.timeout.ms", "0");
        // The user's properties win over these defaults.
        for (k, v) in &cfg.client.properties {
            c.set(k, v);
        }
        let producer: ThreadedProducer<Ctx> = c
            .create_with_context(Ctx::new(format!("sink {name}")))
            .map_err(kafka_err(&cfg.topic, "bad client configuration"))?;
        Ok(AtLeastOnce {
            topic: cfg.topic.clone(),
            producer: Arc::new(producer),
        })
    }

    pub async fn send(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), ConnectorError> {
        loop {
            let mut rec = BaseRecord::to(&self.topic).payload(value);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            match self.producer.send(rec) {
                Ok(()) => return self.check(),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(kafka_err(&self.topic, "producing")(e)),
            }
        }
    }

    fn check(&self) -> Result<(), ConnectorError> {
        match self.producer.context().take_delivery_error() {
            Some(e) => Err(ConnectorError::Config(format!(
                "kafka sink `{}`: a record was not delivered: {e}",
                self.topic
            ))),
            None => Ok(()),
        }
    }

    /// Waits until every record sent so far is acknowledged (or one failed).
    pub async fn flush(&mut self) -> Result<(), ConnectorError> {
        loop {
            let p = self.producer.clone();
            let r = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10)))
                .await
                .map_err(|e| ConnectorError::Config(e.to_string()))?;
            self.check()?;
            match r {
                Ok(()) => return Ok(()),
                Err(e) => self.producer.context().warn(
                    "flush",
                    &format!(
                        "kafka sink `{}`: records still unacknowledged ({e}); waiting for the cluster",
                        self.topic
                    ),
                ),
            }
        }
    }
}

/// The marker group's metadata and the consumer that reads its offset back.
struct Marker {
    consumer: BaseConsumer<Ctx>,
    group: ConsumerGroupMetadata,
}

/// Results go to a local log per epoch and into Kafka in one transaction per completed
/// checkpoint (see the module documentation).
pub struct ExactlyOnce {
    topic: String,
    transactional_id: String,
    timeout: Duration,
    dir: PathBuf,
    /// Sequence number of the next epoch sealed.
    next_seq: u64,
    /// The log being written (writer, records).
    current: Option<(BufWriter<File>, u64)>,
    pending: Vec<Epoch>,
    producer: Arc<ThreadedProducer<Ctx>>,
    marker: Arc<Marker>,
    max_parallelism: u32,
}

/// A transaction step failed: whether the step may simply be retried.
enum TxnFailure {
    Retry(String),
    Fatal(String),
}

/// A fatal error (the producer was fenced or is unusable) or one no retry can cure (a record
/// too large, a missing topic, no permission) ends the job with the error; anything else, such
/// as timeouts while the cluster is away, is aborted and retried with backoff.
fn classify(e: KafkaError) -> TxnFailure {
    use RDKafkaErrorCode as C;
    let permanent = |c: C| {
        matches!(
            c,
            C::MessageSizeTooLarge
                | C::UnknownTopic
                | C::UnknownPartition
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::InvalidTransactionTimeout
        )
    };
    match &e {
        KafkaError::Transaction(r) if r.is_fatal() || permanent(r.code()) => {
            TxnFailure::Fatal(e.to_string())
        }
        KafkaError::MessageProduction(c) if permanent(*c) => TxnFailure::Fatal(e.to_string()),
        _ => TxnFailure::Retry(e.to_string()),
    }
}

impl ExactlyOnce {
    /// Opens the sink. With `restored` (a checkpoint's state and the directory its logs were
    /// downloaded to), first commits the epochs it promised that Kafka does not have yet.
    pub async fn open(
        cfg: &KafkaSinkConfig,
        name: &str,
        dir: PathBuf,
        restored: Option<(KafkaTxnState, PathBuf)>,
        max_parallelism: u32,
    ) -> Result<ExactlyOnce, ConnectorError> {
        // Logs of epochs no checkpoint sealed belong to a crashed run: never committed.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut c = cfg.client.config();
        c.set("transactional.id", &cfg.transactional_id)
            .set("transaction.timeout.ms", ms(cfg.transaction_timeout))
            .set("message.timeout.ms", ms(cfg.transaction_timeout))
            .set("linger.ms", "5");
        // The user's properties win over these defaults.
        for (k, v) in &cfg.client.properties {
            c.set(k, v);
        }
        let producer: ThreadedProducer<Ctx> = c
            .create_with_context(Ctx::new(format!("sink {name}")))
            .map_err(kafka_err(&cfg.topic, "bad client configuration"))?;
        let mut mc = cfg.client.config();
        mc.set("group.id", format!("{}.eddy-marker", cfg.transactional_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer<Ctx> = mc
            .create_with_context(Ctx::new(format!("sink {name} marker")))
            .map_err(kafka_err(&cfg.topic, "bad client configuration"))?;
        let group = consumer.group_metadata().ok_or_else(|| {
            ConnectorError::Config(format!(
                "kafka sink `{}`: no consumer group metadata",
                cfg.topic
            ))
        })?;
        let mut sink = ExactlyOnce {
            topic: cfg.topic.clone(),
            transactional_id: cfg.transactional_id.clone(),
            timeout: cfg.transaction_timeout,
            dir,
            next_seq: 1,
            current: None,
            pending: Vec::new(),
            producer: Arc::new(producer),
            marker: Arc::new(Marker { consumer, group }),
            max_parallelism,
        };
        sink.init().await?;
        let done = sink.committed_epoch().await?;
        let (pending, from) = match restored {
            Some((state, from)) => (state.pending, Some(from)),
            None => (Vec::new(), None),
        };
        let last = pending.iter().map(|e| e.seq).max().unwrap_or(0);
        let todo: Vec<Epoch> = pending.into_iter().filter(|e| e.seq > done).collect();
        tracing::info!(
            sink = name,
            committed = done,
            replaying = todo.len(),
            "kafka sink ready"
        );
        if done == 0 && !todo.is_empty() {
            // Either nothing was ever committed, or the brokers forgot the marker (offsets of
            // a group without members expire after offsets.retention.minutes): replaying may
            // then repeat results, which beats losing them.
            tracing::warn!(
                sink = name,
                marker = %format!("{}.eddy-marker", cfg.transactional_id),
                "kafka sink: no committed epoch on record; producing the checkpoint's pending results (if this job committed them more than offsets.retention.minutes ago, they appear twice)"
            );
        }
        if let Some(from) = from {
            for e in todo {
                sink.produce(e.seq, e.checkpoint, from.join(&e.file))
                    .await?;
            }
        }
        sink.next_seq = done.max(last) + 1;
        Ok(sink)
    }

    /// Fences older producers with the same `transactional.id`, aborting what they left open.
    async fn init(&self) -> Result<(), ConnectorError> {
        let mut backoff = Duration::from_millis(500);
        loop {
            let p = self.producer.clone();
            // Short attempts, so an unreachable cluster shows in the log early and often.
            let t = self.timeout.min(Duration::from_secs(10));
            let r = tokio::task::spawn_blocking(move || p.init_transactions(t))
                .await
                .map_err(|e| ConnectorError::Config(e.to_string()))?;
            match r.map_err(classify) {
                Ok(()) => return Ok(()),
                Err(TxnFailure::Fatal(e)) => {
                    return Err(ConnectorError::Config(format!(
                        "kafka sink `{}`: initialising transactions as `{}`: {e} (check `transactionTimeout` against the broker's transaction.max.timeout.ms)",
                        self.topic, self.transactional_id
                    )));
                }
                Err(TxnFailure::Retry(e)) => {
                    tracing::warn!(sink = %self.topic, retry_in_ms = backoff.as_millis() as u64, "kafka sink: initialising transactions: {e}; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// The last epoch a transaction committed (0: none), from the marker group.
    async fn committed_epoch(&self) -> Result<u64, ConnectorError> {
        let mut backoff = Duration::from_millis(500);
        loop {
            let m = self.marker.clone();
            let topic = self.topic.clone();
            let r = tokio::task::spawn_blocking(move || {
                let mut q = TopicPartitionList::new();
                q.add_partition(&topic, 0);
                m.consumer
                    .committed_offsets(q, Duration::from_secs(10))
                    .map(
                        |got| match got.find_partition(&topic, 0).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) if o > 0 => o as u64,
                            _ => 0,
                        },
                    )
            })
            .await
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
            match r {
                Ok(e) => return Ok(e),
                Err(e) => {
                    tracing::warn!(sink = %self.topic, "kafka sink: reading the committed epoch: {e}; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn log_name(seq: u64) -> String {
        format!("epoch-{seq:010}.wal")
    }

    /// Appends one result to the current epoch's log: key length (`u32::MAX`: no key), value
    /// length, key, value.
    pub fn write(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), ConnectorError> {
        if self.current.is_none() {
            let p = self.dir.join("open.wal");
            let f = File::create(&p).map_err(io(&p))?;
            self.current = Some((BufWriter::with_capacity(256 * 1024, f), 0));
        }
        if let Some((w, n)) = self.current.as_mut() {
            let klen = key.map_or(u32::MAX, |k| k.len() as u32);
            let r = (|| {
                w.write_all(&klen.to_le_bytes())?;
                w.write_all(&(value.len() as u32).to_le_bytes())?;
                if let Some(k) = key {
                    w.write_all(k)?;
                }
                w.write_all(value)
            })();
            r.map_err(io(&self.dir))?;
            *n += 1;
        }
        Ok(())
    }

    /// Barrier `id`: seals the current epoch and links every pending log into `ck_dir` for
    /// the checkpoint to store; returns the state and those files.
    pub fn pre_commit(
        &mut self,
        id: u64,
        ck_dir: &Path,
    ) -> Result<(KafkaTxnState, Vec<LocalFile>), ConnectorError> {
        if let Some((w, n)) = self.current.take() {
            let f = w.into_inner().map_err(|e| io(&self.dir)(e.into_error()))?;
            f.sync_data().map_err(io(&self.dir))?;
            let seq = self.next_seq;
            self.next_seq += 1;
            let file = Self::log_name(seq);
            std::fs::rename(self.dir.join("open.wal"), self.dir.join(&file))
                .map_err(io(&self.dir))?;
            self.pending.push(Epoch {
                seq,
                checkpoint: id,
                records: n,
                file,
            });
        }
        // A crashed run may have left this checkpoint's directory behind (same id, nothing
        // stored): start it afresh.
        if ck_dir.exists() {
            std::fs::remove_dir_all(ck_dir).map_err(io(ck_dir))?;
        }
        std::fs::create_dir_all(ck_dir).map_err(io(ck_dir))?;
        let mut files = Vec::new();
        for e in &self.pending {
            let from = self.dir.join(&e.file);
            let to = ck_dir.join(&e.file);
            std::fs::hard_link(&from, &to).map_err(io(&to))?;
            let size = std::fs::metadata(&to).map_err(io(&to))?.len();
            files.push(LocalFile {
                name: e.file.clone(),
                path: to,
                size,
                key_groups: Some((0, self.max_parallelism.saturating_sub(1))),
                sst: None,
            });
        }
        Ok((
            KafkaTxnState {
                pending: self.pending.clone(),
            },
            files,
        ))
    }

    /// Checkpoint `id` completed: produces every sealed epoch up to it, one transaction each.
    pub async fn commit(&mut self, id: u64) -> Result<(), ConnectorError> {
        while let Some(e) = self.pending.first().filter(|e| e.checkpoint <= id).cloned() {
            let path = self.dir.join(&e.file);
            self.produce(e.seq, e.checkpoint, path.clone()).await?;
            let _ = std::fs::remove_file(&path);
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Produces the log at `path` as epoch `epoch` in one transaction, retrying (with backoff
    /// and a log line) while the cluster is unavailable.
    async fn produce(
        &self,
        epoch: u64,
        checkpoint: u64,
        path: PathBuf,
    ) -> Result<(), ConnectorError> {
        tracing::info!(sink = %self.topic, epoch, checkpoint, "kafka sink: committing epoch");
        // Fault injection for the crash tests: a kill lands between a checkpoint's completion
        // and its commit.
        if let Some(ms) = std::env::var("EDDY_TEST_KAFKA_COMMIT_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            let p = self.producer.clone();
            let m = self.marker.clone();
            let topic = self.topic.clone();
            let t = self.timeout;
            let file = path.clone();
            let r =
                tokio::task::spawn_blocking(move || produce_epoch(&p, &m, &topic, epoch, &file, t))
                    .await
                    .map_err(|e| ConnectorError::Config(e.to_string()))?;
            match r {
                Ok(()) => return Ok(()),
                Err(TxnFailure::Fatal(e)) => {
                    return Err(ConnectorError::Config(format!(
                        "kafka sink `{}`: committing epoch {epoch}: {e} (another producer with transactional.id `{}` may have taken over: two jobs must not share it)",
                        self.topic, self.transactional_id
                    )));
                }
                Err(TxnFailure::Retry(e)) => {
                    tracing::warn!(sink = %self.topic, epoch, retry_in_ms = backoff.as_millis() as u64, "kafka sink: committing: {e}; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// End of input: seals the last epoch for the final checkpoint (whichever completes
    /// next commits it).
    pub fn finish(
        &mut self,
        ck_dir: &Path,
    ) -> Result<(KafkaTxnState, Vec<LocalFile>), ConnectorError> {
        self.pre_commit(u64::MAX - 1, ck_dir)
    }
}

fn produce_epoch(
    p: &ThreadedProducer<Ctx>,
    m: &Marker,
    topic: &str,
    epoch: u64,
    path: &Path,
    timeout: Duration,
) -> Result<(), TxnFailure> {
    if let Err(e) = p.begin_transaction() {
        // Most likely a transaction an earlier failed attempt could not abort: abort it now,
        // so the next attempt starts clean.
        let f = classify(e);
        if matches!(f, TxnFailure::Retry(_)) {
            let _ = p.abort_transaction(timeout);
        }
        return Err(f);
    }
    let r = (|| {
        let f =
            File::open(path).map_err(|e| TxnFailure::Fatal(format!("{}: {e}", path.display())))?;
        let mut r = BufReader::with_capacity(256 * 1024, f);
        let mut head = [0u8; 8];
        let mut key = Vec::new();
        let mut value = Vec::new();
        loop {
            match r.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(TxnFailure::Fatal(format!("{}: {e}", path.display()))),
            }
            let klen = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let vlen = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let bad = |e: std::io::Error| {
                TxnFailure::Fatal(format!("{}: truncated log: {e}", path.display()))
            };
            let has_key = klen != u32::MAX;
            if has_key {
                key.resize(klen as usize, 0);
                r.read_exact(&mut key).map_err(bad)?;
            }
            value.resize(vlen, 0);
            r.read_exact(&mut value).map_err(bad)?;
            send_blocking(p, topic, has_key.then_some(key.as_slice()), &value).map_err(classify)?;
        }
        let mut marker = TopicPartitionList::new();
        marker
            .add_partition_offset(topic, 0, Offset::Offset(epoch as i64))
            .map_err(|e| TxnFailure::Fatal(e.to_string()))?;
        p.send_offsets_to_transaction(&marker, &m.group, timeout)
            .map_err(classify)?;
        // A retriable commit error leaves the outcome open: commit again (never abort), as
        // librdkafka asks; only an abortable one falls through to the abort below.
        loop {
            match p.commit_transaction(timeout) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.txn_requires_abort() => {
                    tracing::warn!(
                        topic,
                        epoch,
                        "kafka sink: commit not confirmed yet: {e}; trying again"
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(classify(e)),
            }
        }
    })();
    if let Err(TxnFailure::Retry(_)) = &r {
        // Whatever this attempt sent is discarded before the epoch is produced again.
        if let Err(e) = p.abort_transaction(timeout) {
            return Err(classify(e));
        }
    }
    r
}
