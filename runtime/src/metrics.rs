//! The job's Prometheus metrics (OpenMetrics text on the admin API's `GET /metrics`).
//!
//! Names follow DESIGN.md section 6 and Prometheus conventions (base units, `_total` on
//! counters). The hot path never touches a map: a task asks [`JobMetrics::operator`] once for
//! its [`OperatorMetrics`] and then only bumps atomics (`records_in.inc_by(n)` per batch).
//! Everything else (dead letters, checkpoints, restores) is rare and goes through `&self`
//! methods. Watermarks are stored, not exported, until a scrape: the lag is "now minus the
//! minimum sink watermark", and "now" is only known when someone asks.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What an operator instance counts toward the job's totals ([`JobMetrics::total_in`] counts
/// what sources read, [`JobMetrics::total_out`] what sinks wrote); every instance is still
/// exported per operator and worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
    Other,
}

/// Counters of one operator instance: fetch once per task, then `inc_by` per batch.
/// Clones share the same atomics.
#[derive(Debug, Clone, Default)]
pub struct OperatorMetrics {
    pub records_in: Counter,
    pub records_out: Counter,
}

/// One sink instance's watermark; the job's watermark is the minimum over all slots.
/// Cheap to clone; `set` is one relaxed store.
#[derive(Debug, Clone)]
pub struct WatermarkSlot(Arc<AtomicI64>);

impl WatermarkSlot {
    /// Epoch milliseconds; `i64::MAX` means this sink's input has ended.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Relaxed);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperatorLabels {
    operator: String,
    worker: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Sink watermarks, shared with the scrape-time collector.
#[derive(Debug, Default)]
struct Watermarks {
    slots: Mutex<Vec<Arc<AtomicI64>>>,
}

impl Watermarks {
    /// Minimum over the slots; `None` before every sink has seen a watermark (or with no sink).
    fn min(&self) -> Option<i64> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .map(|s| s.load(Relaxed))
            .min()
            .filter(|w| *w != i64::MIN)
    }
}

/// Exports the watermark and its lag at scrape time, and nothing before there is one (an
/// absent series says "unknown" better than a made-up zero).
#[derive(Debug)]
struct WatermarkCollector(Arc<Watermarks>);

impl Collector for WatermarkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(wm) = self.0.min() else {
            return Ok(());
        };
        let lag = ConstGauge::new(lag_seconds(now_ms(), wm));
        lag.encode(encoder.encode_descriptor(
            "watermark_lag",
            "Wall-clock time minus the minimum sink watermark (0 once all input has ended)",
            Some(&Unit::Seconds),
            lag.metric_type(),
        )?)?;
        if wm != i64::MAX {
            let at = ConstGauge::new(wm as f64 / 1000.0);
            at.encode(encoder.encode_descriptor(
                "watermark_timestamp",
                "The minimum sink watermark as a Unix timestamp",
                Some(&Unit::Seconds),
                at.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

fn lag_seconds(now_ms: i64, wm: i64) -> f64 {
    if wm == i64::MAX {
        0.0
    } else {
        (now_ms.saturating_sub(wm)) as f64 / 1000.0
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// All of a job's metrics on one pod, in one registry. Share it as `Arc<JobMetrics>`.
pub struct JobMetrics {
    registry: Registry,
    records_in: Family<OperatorLabels, Counter>,
    records_out: Family<OperatorLabels, Counter>,
    /// Every instance handed out, by (operator, worker), with its role, for the totals.
    instances: Mutex<HashMap<(String, usize), (Role, OperatorMetrics)>>,
    dead_letters: Counter,
    late_dropped: Counter,
    watermarks: Arc<Watermarks>,
    /// The slot behind [`JobMetrics::set_watermark`], registered on first use.
    job_watermark: OnceLock<WatermarkSlot>,
    checkpoint_duration: Histogram,
    checkpoint_size: Gauge<u64, AtomicU64>,
    checkpoint_state: Gauge<u64, AtomicU64>,
    checkpoints: Family<ResultLabels, Counter>,
    last_checkpoint_id: Gauge<u64, AtomicU64>,
    restores: Counter,
}

impl std::fmt::Debug for JobMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobMetrics")
            .field("total_in", &self.total_in())
            .field("total_out", &self.total_out())
            .finish_non_exhaustive()
    }
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl JobMetrics {
    pub fn new() -> JobMetrics {
        let mut registry = Registry::with_prefix("eddy");
        let records_in = Family::<OperatorLabels, Counter>::default();
        let records_out = Family::<OperatorLabels, Counter>::default();
        let dead_letters = Counter::default();
        let late_dropped = Counter::default();
        let watermarks = Arc::new(Watermarks::default());
        // Checkpoints take from well under a second (small state, local store) to minutes.
        let checkpoint_duration = Histogram::new([
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ]);
        let checkpoint_size = Gauge::<u64, AtomicU64>::default();
        let checkpoint_state = Gauge::<u64, AtomicU64>::default();
        let checkpoints = Family::<ResultLabels, Counter>::default();
        let last_checkpoint_id = Gauge::<u64, AtomicU64>::default();
        let restores = Counter::default();
        // Counters are registered without `_total` and help texts without a final period: the
        // encoder appends both.
        registry.register(
            "records_in",
            "Records received by an operator instance (read from outside, for a source)",
            records_in.clone(),
        );
        registry.register(
            "records_out",
            "Records emitted by an operator instance (written out, for a sink)",
            records_out.clone(),
        );
        registry.register(
            "dead_letters",
            "Records routed to the dead-letter output",
            dead_letters.clone(),
        );
        registry.register(
            "late_records_dropped",
            "Records dropped for arriving after their window closed, with no late output",
            late_dropped.clone(),
        );
        registry.register_collector(Box::new(WatermarkCollector(watermarks.clone())));
        registry.register_with_unit(
            "checkpoint_duration",
            "Time from triggering a checkpoint to its completion",
            Unit::Seconds,
            checkpoint_duration.clone(),
        );
        registry.register_with_unit(
            "checkpoint_size",
            "Bytes uploaded by the last completed checkpoint (incremental)",
            Unit::Bytes,
            checkpoint_size.clone(),
        );
        registry.register_with_unit(
            "checkpoint_state",
            "Bytes of state referenced by the last completed checkpoint",
            Unit::Bytes,
            checkpoint_state.clone(),
        );
        registry.register(
            "checkpoints",
            "Checkpoints finished, by result (completed or failed)",
            checkpoints.clone(),
        );
        registry.register(
            "last_checkpoint_id",
            "Id of the last completed checkpoint",
            last_checkpoint_id.clone(),
        );
        registry.register(
            "restores",
            "Times this job restored state from a checkpoint or savepoint",
            restores.clone(),
        );
        // Both results exist from the start, so `rate()` sees the first failure.
        for result in ["completed", "failed"] {
            drop(checkpoints.get_or_create(&ResultLabels { result }));
        }
        JobMetrics {
            registry,
            records_in,
            records_out,
            instances: Mutex::new(HashMap::new()),
            dead_letters,
            late_dropped,
            watermarks,
            job_watermark: OnceLock::new(),
            checkpoint_duration,
            checkpoint_size,
            checkpoint_state,
            checkpoints,
            last_checkpoint_id,
            restores,
        }
    }

    /// The counters of `operator`'s instance on `worker`; call once per task, not per batch.
    /// Asking again for the same instance returns the same counters (and keeps the first role).
    pub fn operator(&self, operator: &str, worker: usize, role: Role) -> OperatorMetrics {
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        instances
            .entry((operator.to_string(), worker))
            .or_insert_with(|| {
                let labels = OperatorLabels {
                    operator: operator.to_string(),
                    worker: worker.to_string(),
                };
                let m = OperatorMetrics {
                    records_in: self.records_in.get_or_create_owned(&labels),
                    records_out: self.records_out.get_or_create_owned(&labels),
                };
                (role, m)
            })
            .1
            .clone()
    }

    fn total(&self, role: Role, pick: impl Fn(&OperatorMetrics) -> u64) -> u64 {
        let instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        instances
            .values()
            .filter(|(r, _)| *r == role)
            .map(|(_, m)| pick(m))
            .sum()
    }

    /// Records read by all source instances (the progress line's "in").
    pub fn total_in(&self) -> u64 {
        self.total(Role::Source, |m| m.records_in.get())
    }

    /// Records written by all sink instances (the progress line's "out").
    pub fn total_out(&self) -> u64 {
        self.total(Role::Sink, |m| m.records_out.get())
    }

    pub fn dead_letters(&self, n: u64) {
        self.dead_letters.inc_by(n);
    }

    pub fn dead_letters_total(&self) -> u64 {
        self.dead_letters.get()
    }

    pub fn late_dropped(&self, n: u64) {
        self.late_dropped.inc_by(n);
    }

    pub fn late_dropped_total(&self) -> u64 {
        self.late_dropped.get()
    }

    /// A watermark slot for one sink instance (so sinks need no lock to report theirs).
    pub fn watermark_slot(&self) -> WatermarkSlot {
        let slot = Arc::new(AtomicI64::new(i64::MIN));
        self.watermarks
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot.clone());
        WatermarkSlot(slot)
    }

    /// Stores the job's minimum sink watermark (epoch ms; `i64::MAX` once input ended), for a
    /// caller that computes the minimum itself. Combines with [`Self::watermark_slot`] slots
    /// by taking the minimum.
    pub fn set_watermark(&self, ms: i64) {
        self.job_watermark
            .get_or_init(|| self.watermark_slot())
            .set(ms);
    }

    /// The minimum sink watermark, `None` until every slot has one.
    pub fn watermark(&self) -> Option<i64> {
        self.watermarks.min()
    }

    /// Records checkpoint `id` as complete: it took `duration`, uploaded `uploaded_bytes`
    /// (only new files, as checkpoints are incremental) and references `state_bytes` in all.
    pub fn checkpoint_completed(
        &self,
        id: u64,
        duration: Duration,
        uploaded_bytes: u64,
        state_bytes: u64,
    ) {
        self.checkpoint_duration.observe(duration.as_secs_f64());
        self.checkpoint_size.set(uploaded_bytes);
        self.checkpoint_state.set(state_bytes);
        self.last_checkpoint_id.set(id);
        self.checkpoints
            .get_or_create(&ResultLabels {
                result: "completed",
            })
            .inc();
    }

    pub fn checkpoint_failed(&self) {
        self.checkpoints
            .get_or_create(&ResultLabels { result: "failed" })
            .inc();
    }

    pub fn restored(&self) {
        self.restores.inc();
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; a collector could, so say so and serve the rest.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample line starting with `series ` (name plus labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split(' ').next()?.parse().ok())
    }

    #[test]
    fn exports_what_was_counted() {
        let m = JobMetrics::new();
        let src = m.operator("clicks", 0, Role::Source);
        let src1 = m.operator("clicks", 1, Role::Source);
        let sink = m.operator("out", 0, Role::Sink);
        src.records_in.inc_by(7);
        src1.records_in.inc_by(5);
        src.records_out.inc_by(7);
        sink.records_in.inc_by(3);
        sink.records_out.inc_by(3);
        // Same instance again: same counters, counted once in the totals.
        m.operator("clicks", 0, Role::Source).records_in.inc();
        m.dead_letters(2);
        m.late_dropped(4);
        m.checkpoint_completed(9, Duration::from_millis(1500), 1024, 4096);
        m.checkpoint_failed();
        m.restored();
        assert_eq!((m.total_in(), m.total_out()), (13, 3));
        let t = m.encode();
        let get = |s| sample(&t, s).unwrap_or_else(|| panic!("no {s} in\n{t}"));
        assert_eq!(
            get(r#"eddy_records_in_total{operator="clicks",worker="0"}"#),
            8.0
        );
        assert_eq!(
            get(r#"eddy_records_in_total{operator="clicks",worker="1"}"#),
            5.0
        );
        assert_eq!(
            get(r#"eddy_records_out_total{operator="out",worker="0"}"#),
            3.0
        );
        assert_eq!(get("eddy_dead_letters_total"), 2.0);
        assert_eq!(get("eddy_late_records_dropped_total"), 4.0);
        assert_eq!(get("eddy_checkpoint_duration_seconds_count"), 1.0);
        assert_eq!(get("eddy_checkpoint_duration_seconds_sum"), 1.5);
        assert_eq!(get("eddy_checkpoint_size_bytes"), 1024.0);
        assert_eq!(get("eddy_checkpoint_state_bytes"), 4096.0);
        assert_eq!(get(r#"eddy_checkpoints_total{result="completed"}"#), 1.0);
        assert_eq!(get(r#"eddy_checkpoints_total{result="failed"}"#), 1.0);
        assert_eq!(get("eddy_last_checkpoint_id"), 9.0);
        assert_eq!(get("eddy_restores_total"), 1.0);
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(!t.contains(".."), "help texts end in one period: {t}");
    }

    #[test]
    fn watermark_lag_is_the_slowest_sink_against_now() {
        let m = JobMetrics::new();
        assert!(
            !m.encode().contains("eddy_watermark"),
            "no series before a watermark"
        );
        let a = m.watermark_slot();
        let b = m.watermark_slot();
        a.set(now_ms() - 1_000);
        assert_eq!(m.watermark(), None, "sink b has none yet");
        b.set(now_ms() - 5_000);
        let t = m.encode();
        let lag = sample(&t, "eddy_watermark_lag_seconds").expect("lag exported");
        assert!((4.9..7.0).contains(&lag), "lag {lag} in\n{t}");
        assert!(
            sample(&t, "eddy_watermark_timestamp_seconds").is_some(),
            "{t}"
        );
        a.set(i64::MAX);
        b.set(i64::MAX);
        let t = m.encode();
        assert_eq!(sample(&t, "eddy_watermark_lag_seconds"), Some(0.0), "{t}");
        assert!(!t.contains("eddy_watermark_timestamp"), "{t}");
    }

    #[test]
    fn set_watermark_without_slots() {
        let m = JobMetrics::new();
        m.set_watermark(1_700_000_000_000);
        assert_eq!(m.watermark(), Some(1_700_000_000_000));
        m.set_watermark(1_700_000_001_000);
        assert_eq!(m.watermark(), Some(1_700_000_001_000));
        assert_eq!(lag_seconds(1_700_000_003_500, 1_700_000_001_000), 2.5);
    }
}
