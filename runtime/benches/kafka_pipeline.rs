//! `make bench`, Kafka part: Kafka -> keyed tumbling count -> Kafka, at-least-once and
//! exactly-once, against what the broker alone carries, measured in the same run on the same
//! broker (`e2e/services.sh`):
//!
//! - **broker baseline**: Kafka's own `ProducerPerformance` and `ConsumerPerformance` tools
//!   (what `kafka-producer-perf-test` / `kafka-consumer-perf-test` run) on a topic of the same
//!   partitions and record size;
//! - **throughput**: N JSON events already in a topic, read to the end (`stopAt: latest`),
//!   counted per key in 10 s windows and written back; records per second of wall time, records
//!   per CPU-second of the Eddy process, and the fraction of the consumer baseline reached;
//! - **latency**: events produced at a steady rate with their creation time as event time;
//!   for each 1 s window result, the delay from the window's end until a `read_committed`
//!   consumer sees the result (so it includes the watermark wait and, for exactly-once, the
//!   checkpoint interval): p50 and p99.
//!
//! Env: EDDY (the binary), QUICK=1 (small), KAFKA_BROKERS/KAFKA_LIBS (else read from
//! e2e/.services.env).

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PARTITIONS: i32 = 4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn settings() -> HashMap<String, String> {
    let mut m: HashMap<String, String> = std::fs::read_to_string(root().join("e2e/.services.env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for k in ["KAFKA_BROKERS", "KAFKA_LIBS"] {
        if let Ok(v) = std::env::var(k) {
            m.insert(k.into(), v);
        }
    }
    m
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

fn create(brokers: &str, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = config(brokers).create().expect("admin");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for r in rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .expect("create topics")
    {
        r.expect("topic");
    }
}

/// CPU seconds (user + system) of every child waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A Kafka tool class (org.apache.kafka.tools.*); its stdout.
fn kafka_tool(libs: &str, class: &str, args: &[String]) -> String {
    let out = Command::new("java")
        .args([
            "-Xmx512m",
            "-cp",
            &format!("{libs}/*"),
            &format!("org.apache.kafka.tools.{class}"),
        ])
        .args(args)
        .output()
        .expect("java");
    assert!(
        out.status.success(),
        "{class} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The broker alone: records per second produced and consumed by Kafka's perf tools.
fn baseline(brokers: &str, libs: &str, n: u64, unique: &str) -> (f64, f64) {
    let topic = format!("bench-base-{unique}");
    create(brokers, &[&topic]);
    let out = kafka_tool(
        libs,
        "ProducerPerformance",
        &[
            "--topic".into(),
            topic.clone(),
            "--num-records".into(),
            n.to_string(),
            "--record-size".into(),
            "48".into(),
            "--throughput".into(),
            "-1".into(),
            // One flag, several values: a repeated flag would replace the earlier ones.
            "--command-property".into(),
            format!("bootstrap.servers={brokers}"),
            "linger.ms=5".into(),
        ],
    );
    // "... N records sent, X records/sec (...)": the summary line is the last.
    let produced = out
        .lines()
        .rev()
        .find_map(|l| {
            let (_, rest) = l.split_once("records sent, ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or(0.0);
    let out = kafka_tool(
        libs,
        "ConsumerPerformance",
        &[
            "--bootstrap-server".into(),
            brokers.into(),
            "--topic".into(),
            topic,
            "--num-records".into(),
            n.to_string(),
            "--timeout".into(),
            "60000".into(),
        ],
    );
    let mut lines = out.lines().filter(|l| l.contains(','));
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let values: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let consumed = header
        .iter()
        .position(|h| *h == "nMsg.sec")
        .and_then(|i| values.get(i))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (produced, consumed)
}

fn produce(brokers: &str, topic: &str, n: u64, keys: u64, rate: Option<u64>) {
    let p: ThreadedProducer<DefaultProducerContext> = config(brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let start = Instant::now();
    let base = 1_700_000_000_000i64;
    for i in 0..n {
        if let Some(r) = rate
            && i % 100 == 0
        {
            let due = start + Duration::from_secs_f64(i as f64 / r as f64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
        }
        let user = format!("u{}", (i.wrapping_mul(2_654_435_761)) % keys);
        let ts = if rate.is_some() {
            now_ms()
        } else {
            base + i as i64
        };
        let v = format!(r#"{{"user":"{user}","amount":{},"ts":{ts}}}"#, i % 100);
        loop {
            match p.send(BaseRecord::to(topic).key(&user).payload(&v)) {
                Ok(()) => break,
                Err(_) => p.poll(Duration::from_millis(2)),
            }
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
}

fn plan(
    dir: &Path,
    brokers: &str,
    input: &str,
    output: &str,
    window: &str,
    bounded: bool,
    eos: bool,
) -> PathBuf {
    let path = dir.join(format!(
        "kafka-{}-{}.yaml",
        if eos { "eos" } else { "alo" },
        if bounded { "tp" } else { "lat" }
    ));
    let text = format!(
        r#"sources:
  - name: events
    kafka:
      brokers: {brokers}
      topic: {input}
      {stop}
      idleTimeout: 2s
      schema: {{ user: string, amount: int, ts: int }}
    eventTime: {{ field: ts, maxOutOfOrderness: 0s }}
steps:
  - name: per_user
    from: events
    keyBy: event.user
    window: {{ tumbling: {window} }}
    aggregate: {{ n: "count()", total: "sum(event.amount)" }}
sinks:
  - {{ name: out, from: per_user, kafka: {{ brokers: {brokers}, topic: {output}, key: user, delivery: {delivery} }} }}
"#,
        stop = if bounded { "stopAt: latest" } else { "" },
        delivery = if eos { "exactly-once" } else { "at-least-once" },
    );
    std::fs::write(&path, text).expect("plan");
    path
}

fn eddy_cmd(eddy: &str, plan: &Path, dir: &Path, eos: bool) -> Command {
    let mut c = Command::new(eddy);
    c.arg("run").arg(plan).args(["--quiet", "-p", "2"]);
    if eos {
        c.arg("--checkpoint-dir")
            .arg(dir.join(format!("ckpt-{}", now_ms())))
            .args(["--checkpoint-interval", "1s"]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a test run must not start a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let quick = std::env::var("QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let s = settings();
    let (Some(brokers), Some(libs)) = (s.get("KAFKA_BROKERS"), s.get("KAFKA_LIBS")) else {
        eprintln!("kafka_pipeline: no Kafka: run `bash e2e/services.sh up` first");
        std::process::exit(1);
    };
    let eddy = std::env::var("EDDY")
        .unwrap_or_else(|_| root().join("target/release/eddy").display().to_string());
    let n: u64 = if quick { 200_000 } else { 5_000_000 };
    let unique = format!("{}-{}", std::process::id(), now_ms());
    let dir = std::env::temp_dir().join(format!("eddy-kafka-bench-{unique}"));
    std::fs::create_dir_all(&dir).expect("dir");

    let (produced, consumed) = baseline(brokers, libs, n, &unique);
    println!(
        "bench kafka-broker-baseline producer_per_sec={produced:.0} consumer_per_sec={consumed:.0} records={n} record_bytes=48"
    );

    let input = format!("bench-in-{unique}");
    create(brokers, &[&input]);
    produce(brokers, &input, n, 10_000, None);
    for eos in [false, true] {
        let output = format!("bench-out-{}-{unique}", if eos { "eos" } else { "alo" });
        create(brokers, &[&output]);
        let p = plan(&dir, brokers, &input, &output, "10s", true, eos);
        let cpu0 = children_cpu();
        let t0 = Instant::now();
        let st = eddy_cmd(&eddy, &p, &dir, eos).status().expect("eddy");
        let wall = t0.elapsed().as_secs_f64();
        let cpu = children_cpu() - cpu0;
        assert!(st.success(), "eddy failed on {}", p.display());
        let rate = n as f64 / wall;
        println!(
            "bench kafka-count-{}-p2 records_per_sec={rate:.0} eddy_per_cpu_s={:.0} of_broker_consumer={:.2} records={n}",
            if eos { "exactly-once" } else { "at-least-once" },
            n as f64 / cpu.max(1e-9),
            rate / consumed.max(1.0),
        );
    }

    // Latency: a steady stream, results read as they become visible.
    let (rate, secs) = if quick { (5_000, 8) } else { (20_000, 30) };
    for eos in [false, true] {
        let tag = if eos { "eos" } else { "alo" };
        let (li, lo) = (
            format!("bench-lin-{tag}-{unique}"),
            format!("bench-lout-{tag}-{unique}"),
        );
        create(brokers, &[&li, &lo]);
        let p = plan(&dir, brokers, &li, &lo, "1s", false, eos);
        let mut child = eddy_cmd(&eddy, &p, &dir, eos).spawn().expect("eddy");
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (brokers, lo, stop) = (brokers.clone(), lo.clone(), stop.clone());
            std::thread::spawn(move || {
                let c: BaseConsumer = config(&brokers)
                    .set("group.id", format!("bench-{lo}"))
                    .set("isolation.level", "read_committed")
                    .set("auto.offset.reset", "earliest")
                    .create()
                    .expect("consumer");
                c.subscribe(&[&lo]).expect("subscribe");
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                        let at = now_ms();
                        let v: serde_json::Value =
                            serde_json::from_slice(m.payload().unwrap_or_default())
                                .unwrap_or_default();
                        if let Some(end) = v["window_end"].as_i64() {
                            seen.push((end, at));
                        }
                    }
                }
                seen
            })
        };
        let started = now_ms();
        produce(brokers, &li, rate * secs, 1_000, Some(rate));
        let ended = now_ms();
        // Windows that closed at least 1 s before the stream stopped fire while it still runs.
        let last = ended - 1_000;
        std::thread::sleep(Duration::from_secs(if eos { 4 } else { 2 }));
        stop.store(true, Ordering::Relaxed);
        let seen = reader.join().expect("reader");
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
        // Skip the first seconds: the job and its consumer were starting.
        let mut lat: Vec<i64> = seen
            .iter()
            .filter(|(end, _)| *end > started + 3_000 && *end <= last)
            .map(|(end, at)| at - end)
            .collect();
        lat.sort_unstable();
        println!(
            "bench kafka-latency-{}-p2 p50_ms={} p99_ms={} results={} events_per_sec={rate}",
            if eos { "exactly-once" } else { "at-least-once" },
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.len(),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
