//! The sink task: writes what its senders deliver, pre-commits at barriers and commits when
//! checkpoints complete.

use super::JobError;
use super::graph::NodeKind;
use super::task::{Align, TaskCtx};
use crate::checkpoint::coordinator::{AckData, Msg as Coord};
use crate::connectors::file_sink::{TxnFileSink, TxnState};
use crate::connectors::kafka::sink::{AtLeastOnce, ExactlyOnce, KafkaSinkConfig, KafkaTxnState};
use crate::connectors::part_sink::{PartSink, PartsState};
use crate::connectors::sink::{LineSink, Sink as _};
use crate::connectors::{ConnectorError, SinkSpec};
use crate::exchange::Msg;
use crate::metrics::Role;
use crate::record::{Batch, JsonLines, Value};
use tokio::sync::mpsc;

/// A sink's writer: plain (stdout, or files without checkpoints), two-phase files, or Kafka.
enum Output {
    Plain(LineSink),
    Txn(TxnFileSink, Vec<u8>),
    /// Part files under a prefix; `true`: published when checkpoints complete (else at the
    /// end).
    Parts(PartSink, Vec<u8>, bool),
    Kafka(Kafka),
}

struct Kafka {
    key: Option<usize>,
    writer: KafkaWriter,
    value: String,
    key_buf: String,
}

enum KafkaWriter {
    AtLeastOnce(AtLeastOnce),
    ExactlyOnce(ExactlyOnce),
}

impl Kafka {
    async fn send(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), ConnectorError> {
        match &mut self.writer {
            KafkaWriter::AtLeastOnce(w) => w.send(key, value).await,
            KafkaWriter::ExactlyOnce(w) => w.write(key, value),
        }
    }

    async fn write_batch(&mut self, b: &Batch) -> Result<(), ConnectorError> {
        for i in 0..b.len() {
            let mut value = std::mem::take(&mut self.value);
            value.clear();
            b.row_json(i, &mut value);
            let key = match self.key {
                Some(k) => {
                    self.key_buf.clear();
                    match &b.row(i)[k] {
                        // A string key is its text, not its JSON (`alice`, not `"alice"`).
                        Value::Str(s) => self.key_buf.push_str(s),
                        other => other.write_json(&mut self.key_buf),
                    }
                    Some(std::mem::take(&mut self.key_buf))
                }
                None => None,
            };
            let r = self
                .send(key.as_deref().map(str::as_bytes), value.as_bytes())
                .await;
            if let Some(k) = key {
                self.key_buf = k;
            }
            self.value = value;
            r?;
        }
        Ok(())
    }

    async fn write_encoded(&mut self, lines: &[u8]) -> Result<(), ConnectorError> {
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.send(None, line).await?;
        }
        Ok(())
    }
}

fn sink_dir(ctx: &TaskCtx, what: &str) -> std::path::PathBuf {
    ctx.cp.state_dir.join(format!("{what}-{}-sink", ctx.id))
}

impl Output {
    async fn open(ctx: &TaskCtx, spec: &SinkSpec) -> Result<Output, ConnectorError> {
        let name = &ctx.graph.nodes[ctx.id].name;
        let restored_state = ctx.cp.restore.as_ref().and_then(|r| r.meta.sinks.get(name));
        let epoch = ctx.cp.restore.as_ref().map_or(0, |r| r.meta.id) + 1;
        match spec {
            SinkSpec::File { path } if ctx.cp.exactly_once => {
                let restored = match restored_state {
                    Some(v) => {
                        Some(serde_json::from_value::<TxnState>(v.clone()).map_err(|e| {
                            ConnectorError::Config(format!(
                                "sink `{name}`: bad checkpoint state: {e}"
                            ))
                        })?)
                    }
                    None => None,
                };
                Ok(Output::Txn(
                    TxnFileSink::open(path, restored, epoch)?,
                    Vec::new(),
                ))
            }
            SinkSpec::Parts { path } => {
                let restored = restored_parts(name, restored_state)?;
                let sink = PartSink::open(path, &super::launch::run_id(), restored, epoch).await?;
                Ok(Output::Parts(sink, Vec::new(), ctx.cp.exactly_once))
            }
            SinkSpec::Kafka(k) => {
                let writer = match k.exactly_once.unwrap_or(ctx.cp.exactly_once) {
                    true if !ctx.cp.exactly_once => {
                        return Err(ConnectorError::Config(format!(
                            "sink `{name}`: exactly-once delivery commits with checkpoints: run with --checkpoint-dir, or set `delivery: at-least-once`"
                        )));
                    }
                    true => KafkaWriter::ExactlyOnce(open_exactly_once(ctx, k).await?),
                    false => KafkaWriter::AtLeastOnce(AtLeastOnce::open(k, name)?),
                };
                Ok(Output::Kafka(Kafka {
                    key: k.key,
                    writer,
                    value: String::new(),
                    key_buf: String::new(),
                }))
            }
            _ => Ok(Output::Plain(LineSink::open(spec)?)),
        }
    }

    async fn write_batch(&mut self, b: &Batch) -> Result<(), ConnectorError> {
        match self {
            Output::Plain(s) => s.write(b),
            Output::Txn(s, buf) => {
                buf.clear();
                JsonLines::new(&b.schema).encode(b, buf);
                s.write(buf)
            }
            Output::Parts(s, buf, _) => {
                buf.clear();
                JsonLines::new(&b.schema).encode(b, buf);
                s.write(buf).await
            }
            Output::Kafka(k) => k.write_batch(b).await,
        }
    }

    async fn write_encoded(&mut self, lines: &[u8]) -> Result<(), ConnectorError> {
        match self {
            Output::Plain(s) => s.write_encoded(lines),
            Output::Txn(s, _) => s.write(lines),
            Output::Parts(s, _, _) => s.write(lines).await,
            Output::Kafka(k) => k.write_encoded(lines).await,
        }
    }

    /// Barrier `id` (or the end, `None`): what the checkpoint records of this sink.
    async fn pre_commit(
        &mut self,
        ctx: &TaskCtx,
        id: Option<u64>,
    ) -> Result<AckData, ConnectorError> {
        Ok(match self {
            Output::Txn(s, _) => {
                let st = match id {
                    Some(id) => s.pre_commit(id)?,
                    None => s.finish()?,
                };
                AckData::Sink(serde_json::to_value(st).unwrap_or_default())
            }
            Output::Parts(s, _, later) => {
                let st = match id {
                    Some(id) => s.pre_commit(id).await?,
                    None => {
                        let st = s.finish().await?;
                        if !*later {
                            s.commit(u64::MAX).await?;
                        }
                        st
                    }
                };
                AckData::Sink(serde_json::to_value(st).unwrap_or_default())
            }
            Output::Plain(s) => {
                s.finish()?;
                AckData::Sink(serde_json::Value::Null)
            }
            Output::Kafka(Kafka {
                writer: KafkaWriter::AtLeastOnce(w),
                ..
            }) => {
                w.flush().await?;
                AckData::Sink(serde_json::Value::Null)
            }
            Output::Kafka(Kafka {
                writer: KafkaWriter::ExactlyOnce(w),
                ..
            }) => {
                let dir = match id {
                    Some(id) => sink_dir(ctx, &format!("chk-{id}")),
                    None => sink_dir(ctx, "final"),
                };
                let (st, files) = match id {
                    Some(id) => w.pre_commit(id, &dir)?,
                    None => w.finish(&dir)?,
                };
                AckData::SinkFiles {
                    state: serde_json::to_value(st).unwrap_or_default(),
                    key_groups: (0, ctx.graph.max_parallelism.saturating_sub(1)),
                    dir,
                    files,
                }
            }
        })
    }

    /// Checkpoint `id` completed.
    async fn commit(&mut self, id: u64) -> Result<(), ConnectorError> {
        match self {
            Output::Txn(s, _) => s.commit(id),
            Output::Parts(s, _, _) => s.commit(id).await,
            Output::Kafka(Kafka {
                writer: KafkaWriter::ExactlyOnce(w),
                ..
            }) => w.commit(id).await,
            _ => Ok(()),
        }
    }

    /// Whether results of the end of input wait for the final checkpoint before they commit.
    fn commits_after_end(&self) -> bool {
        matches!(
            self,
            Output::Kafka(Kafka {
                writer: KafkaWriter::ExactlyOnce(_),
                ..
            }) | Output::Parts(_, _, true)
        )
    }
}

async fn open_exactly_once(
    ctx: &TaskCtx,
    k: &KafkaSinkConfig,
) -> Result<ExactlyOnce, ConnectorError> {
    let name = &ctx.graph.nodes[ctx.id].name;
    let restored = restored_kafka(&ctx.graph, ctx.id, ctx.cp.restore.as_ref())?;
    ExactlyOnce::open(
        k,
        name,
        sink_dir(ctx, "staging"),
        restored,
        ctx.graph.max_parallelism,
    )
    .await
}

/// The state and the downloaded logs an exactly-once Kafka sink restores from.
fn restored_kafka(
    graph: &super::graph::Graph,
    id: super::graph::NodeId,
    restore: Option<&super::Restore>,
) -> Result<Option<(KafkaTxnState, std::path::PathBuf)>, ConnectorError> {
    let name = &graph.nodes[id].name;
    let Some(r) = restore else { return Ok(None) };
    let Some(v) = r.meta.sinks.get(name) else {
        return Ok(None);
    };
    let st: KafkaTxnState = serde_json::from_value(v.clone())
        .map_err(|e| ConnectorError::Config(format!("sink `{name}`: bad checkpoint state: {e}")))?;
    let dir = r
        .instances
        .get(&(id, 0))
        .and_then(|(dirs, _)| dirs.first().cloned());
    match dir {
        Some(d) => Ok(Some((st, d))),
        None if st.pending.is_empty() => Ok(None),
        None => Err(ConnectorError::Config(format!(
            "sink `{name}`: the checkpoint lists pending results but not their files; restore from an earlier checkpoint"
        ))),
    }
}

/// A part sink's state in the checkpoint restored from.
fn restored_parts(
    name: &str,
    state: Option<&serde_json::Value>,
) -> Result<Option<PartsState>, ConnectorError> {
    state
        .map(|v| {
            serde_json::from_value::<PartsState>(v.clone()).map_err(|e| {
                ConnectorError::Config(format!("sink `{name}`: bad checkpoint state: {e}"))
            })
        })
        .transpose()
}

/// For a job whose final checkpoint says it finished: commits what that checkpoint promised
/// of its exactly-once Kafka and part sinks, in case the run that wrote it crashed before
/// committing.
pub async fn recover_finished(
    graph: &super::graph::Graph,
    restore: &super::Restore,
    state_dir: &std::path::Path,
) -> Result<(), ConnectorError> {
    for (id, node) in graph.nodes.iter().enumerate() {
        if let NodeKind::Sink(SinkSpec::Parts { path }) = &node.kind
            && let Some(st) = restored_parts(&node.name, restore.meta.sinks.get(&node.name))?
        {
            // Publishes the promised epochs; the epoch after the checkpoint keeps everything
            // published up to it.
            let run = super::launch::run_id();
            PartSink::open(path, &run, Some(st), restore.meta.id + 1).await?;
        }
        if let NodeKind::Sink(SinkSpec::Kafka(k)) = &node.kind
            && let Some(restored) = restored_kafka(graph, id, Some(restore))?
        {
            let dir = state_dir.join(format!("staging-{id}-sink"));
            ExactlyOnce::open(k, &node.name, dir, Some(restored), graph.max_parallelism).await?;
        }
    }
    Ok(())
}

pub(super) async fn sink_task(
    ctx: TaskCtx,
    mut inbox: mpsc::Receiver<crate::exchange::Envelope>,
) -> Result<(), JobError> {
    let NodeKind::Sink(spec) = &ctx.graph.nodes[ctx.id].kind else {
        return Err(JobError::Task("not a sink".into()));
    };
    let mut sink = Output::open(&ctx, spec).await?;
    let om = ctx.om(Role::Sink);
    let senders = ctx.senders();
    let mut align = Align::new(&senders, false);
    let total: usize = senders.iter().sum();
    let mut marks = vec![i64::MIN; total];
    let slot = ctx.metrics.sink_slot();
    let wm_slot = ctx.job_metrics.watermark_slot();
    let mut completed = ctx.cp.completed.clone();
    let mut ended = 0;
    let mut last_acked = 0;
    while ended < total {
        let env = tokio::select! {
            env = align.next(&mut inbox) => env,
            Ok(()) = completed.changed() => {
                let id = *completed.borrow_and_update();
                sink.commit(id).await?;
                ctx.tell(Coord::Committed { task: ctx.task(), id });
                continue;
            }
        };
        let Some(env) = env else {
            return Err(JobError::Task(format!(
                "sink `{}` lost its inputs",
                ctx.step
            )));
        };
        let from = env.from as usize;
        let mut aligned = false;
        match env.msg {
            Msg::Data(b) => {
                sink.write_batch(&b).await?;
                ctx.metrics.add_out(b.len() as u64);
                om.records_in.inc_by(b.len() as u64);
                om.records_out.inc_by(b.len() as u64);
            }
            Msg::Encoded { lines, rows } => {
                sink.write_encoded(&lines).await?;
                ctx.metrics.add_out(rows as u64);
                om.records_in.inc_by(rows as u64);
                om.records_out.inc_by(rows as u64);
            }
            Msg::Partials(_) => {
                return Err(JobError::Task(format!(
                    "sink `{}` got partial aggregates meant for a window",
                    ctx.step
                )));
            }
            Msg::Watermark(w) => {
                crate::exchange::update_mark(&mut marks[from], w);
                if let Some(min) = crate::exchange::combine_marks(marks.iter().copied()) {
                    ctx.metrics.set_watermark(&slot, min);
                    wm_slot.set(min);
                }
            }
            Msg::Barrier(id) => aligned = align.on_barrier(env.port as usize, from, id),
            Msg::End => {
                marks[from] = i64::MAX;
                ended += 1;
                aligned = align.on_end(env.port as usize, from);
            }
        }
        if aligned && let Some(id) = align.release() {
            let data = sink.pre_commit(&ctx, Some(id)).await?;
            ctx.ack(id, data);
            last_acked = id;
        }
    }
    wm_slot.set(i64::MAX);
    let data = sink.pre_commit(&ctx, None).await?;
    ctx.tell(Coord::Finished {
        task: ctx.task(),
        data,
    });
    if sink.commits_after_end() {
        // A checkpoint this sink did not acknowledge records its finished state, last epoch
        // included (the final checkpoint at the latest): then that epoch can be committed.
        loop {
            if completed.changed().await.is_err() {
                return Err(JobError::Task(format!(
                    "sink `{}`: the final checkpoint was not written; its last results are staged and the next run commits them",
                    ctx.step
                )));
            }
            let id = *completed.borrow_and_update();
            if id > last_acked {
                sink.commit(u64::MAX).await?;
                ctx.tell(Coord::Committed {
                    task: ctx.task(),
                    id,
                });
                break;
            }
        }
    }
    Ok(())
}
