//! Job-wide counters and the progress line `eddy run` prints on stderr.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub struct Metrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
    dead_letters: AtomicU64,
    late_dropped: AtomicU64,
    sink_watermarks: Mutex<Vec<std::sync::Arc<AtomicI64>>>,
    /// When the first record was read and the last result written, in ns after `clock` plus
    /// one (0: not yet): the job's processing time, without start-up and shut-down.
    clock: Instant,
    first_in: AtomicU64,
    last_out: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            late_dropped: AtomicU64::new(0),
            sink_watermarks: Mutex::new(Vec::new()),
            clock: Instant::now(),
            first_in: AtomicU64::new(0),
            last_out: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_letters: u64,
    pub late_dropped: u64,
    /// Minimum watermark over the sinks (`None` before any).
    pub watermark: Option<i64>,
    /// Seconds from the first record read to the last result written (`None` before both).
    pub busy_s: Option<f64>,
}

impl Metrics {
    pub fn add_in(&self, n: u64) {
        self.records_in.fetch_add(n, Relaxed);
        if n > 0 && self.first_in.load(Relaxed) == 0 {
            let _ = self
                .first_in
                .compare_exchange(0, self.since_clock(), Relaxed, Relaxed);
        }
    }
    pub fn add_out(&self, n: u64) {
        self.records_out.fetch_add(n, Relaxed);
        if n > 0 {
            self.last_out.fetch_max(self.since_clock(), Relaxed);
        }
    }

    fn since_clock(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64 + 1
    }
    pub fn add_dead(&self, n: u64) {
        self.dead_letters.fetch_add(n, Relaxed);
    }
    pub fn add_late_dropped(&self, n: u64) {
        self.late_dropped.fetch_add(n, Relaxed);
    }

    /// A watermark slot for one sink instance.
    pub fn sink_slot(&self) -> std::sync::Arc<AtomicI64> {
        let slot = std::sync::Arc::new(AtomicI64::new(i64::MIN));
        self.sink_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot.clone());
        slot
    }

    pub fn set_watermark(&self, slot: &AtomicI64, wm: i64) {
        slot.store(wm, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let slots = self
            .sink_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let wm = slots
            .iter()
            .map(|s| s.load(Relaxed))
            .min()
            .filter(|w| *w != i64::MIN);
        let (first, last) = (self.first_in.load(Relaxed), self.last_out.load(Relaxed));
        Snapshot {
            busy_s: (first > 0 && last >= first).then(|| (last - first) as f64 / 1e9),
            records_in: self.records_in.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            late_dropped: self.late_dropped.load(Relaxed),
            watermark: wm,
        }
    }
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One progress line.
pub fn line(s: &Snapshot, rate: f64) -> String {
    let wm = match s.watermark {
        Some(i64::MAX) => "end".to_string(),
        Some(w) => format_ms(w),
        None => "-".to_string(),
    };
    let mut l = format!(
        "{} in, {} out, {} rec/s, watermark {wm}, {} dead letters",
        human(s.records_in as f64),
        human(s.records_out as f64),
        human(rate),
        s.dead_letters
    );
    if s.late_dropped > 0 {
        l.push_str(&format!(", {} late records dropped", s.late_dropped));
    }
    l
}

/// Prints progress every `every` until dropped: a live line on a terminal, log lines otherwise.
pub struct Reporter {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Reporter {
    pub fn start(metrics: std::sync::Arc<Metrics>, every: Duration) -> Reporter {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let mut last = (Instant::now(), 0u64);
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut rx => break,
                }
                let s = metrics.snapshot();
                let dt = last.0.elapsed().as_secs_f64().max(1e-9);
                let rate = (s.records_in - last.1) as f64 / dt;
                last = (Instant::now(), s.records_in);
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[Keddy: {}", line(&s, rate));
                } else {
                    let _ = writeln!(err, "eddy: {}", line(&s, rate));
                }
                let _ = err.flush();
            }
            if tty {
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            }
        });
        Reporter {
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_epoch_millis_as_utc() {
        assert_eq!(super::format_ms(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::format_ms(0), "1970-01-01T00:00:00Z");
    }
}
