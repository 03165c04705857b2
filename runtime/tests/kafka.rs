//! Kafka in, Kafka out, exactly-once, against the real broker and S3 server that
//! `e2e/services.sh up` starts: a producer writes 200,000 keyed events (and a few bad records)
//! into a topic with 4 partitions; the job (P=2, checkpoints on S3 every second) is killed
//! with SIGKILL 5 times at random moments and started again with the same command; a
//! `read_committed` consumer then reads the output topic, which must equal the reference
//! computed here from the input: nothing missing, nothing twice. The bad records must be
//! dead-lettered with their topic, partition and offset.
//!
//! One test function: a second one would share the broker and make the kills' timing
//! meaningless.

mod common;

use common::kafka::{config, create_topics, read_committed};

use common::{services, stderr_lines};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 200_000;
const USERS: u64 = 500;
const WINDOW: i64 = 10_000;
const IN_PARTITIONS: i32 = 4;
const OUT_PARTITIONS: i32 = 3;

const PLAN: &str = r#"
sources:
  - name: events
    kafka:
      brokers: BROKERS
      topic: IN
      stopAt: latest
      rate: 10000
      schema: { user: string, amount: int, ts: int }
    eventTime: { field: ts, maxOutOfOrderness: 3s }
steps:
  - name: per_user
    from: events
    keyBy: event.user
    window: { tumbling: 10s }
    aggregate: { n: "count()", total: "sum(event.amount)" }
sinks:
  - { name: out, from: per_user, kafka: { brokers: BROKERS, topic: OUT, key: user } }
deadLetter: { file: { path: DEAD } }
"#;

/// A small deterministic generator (64-bit LCG): the test's own, independent of Eddy's.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// (user, window start) -> (count, sum).
type Counts = BTreeMap<(String, i64), (i64, i64)>;

/// Produces the input; returns the reference result and the bad records' values.
fn produce(brokers: &str, topic: &str) -> (Counts, Vec<String>) {
    let producer: ThreadedProducer<DefaultProducerContext> = config(brokers)
        .set("linger.ms", "20")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut rng = Lcg(42);
    let mut reference = BTreeMap::new();
    let base: i64 = 1_700_000_000_000;
    let mut bad = Vec::new();
    let send = |key: &str, value: &str| {
        loop {
            match producer.send(BaseRecord::to(topic).key(key).payload(value)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(_), _)) => {
                    producer.poll(Duration::from_millis(5))
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    };
    for i in 0..EVENTS {
        let user = format!("u{}", rng.next(USERS));
        let amount = 1 + rng.next(100) as i64;
        // Event time rises 5 ms per record, out of order by up to 2 s (within a partition
        // too: the watermark's 3 s bound covers it, so nothing is late).
        let ts = base + (i as i64) * 5 - rng.next(2000) as i64;
        send(
            &user,
            &format!(r#"{{"user":"{user}","amount":{amount},"ts":{ts}}}"#),
        );
        let e = reference
            .entry((user, ts - ts.rem_euclid(WINDOW)))
            .or_insert((0, 0));
        e.0 += 1;
        e.1 += amount;
        if i % 40_000 == 7 {
            let v = if bad.len() % 2 == 0 {
                format!("not json {i}")
            } else {
                format!(r#"{{"user":"bad{i}","amount":"lots","ts":{ts}}}"#)
            };
            send(&format!("bad{i}"), &v);
            bad.push(v);
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    (reference, bad)
}

/// A log line without its terminal colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn kafka_to_kafka_exactly_once_through_crashes() {
    let env = services();
    let brokers = env["KAFKA_BROKERS"].clone();
    let unique = format!("{}-{}", std::process::id(), common::now_ms());
    let (input, output) = (format!("in-{unique}"), format!("out-{unique}"));
    create_topics(
        &brokers,
        &[(&input, IN_PARTITIONS), (&output, OUT_PARTITIONS)],
        false,
    )
    .expect("create topics");
    let (reference, bad) = produce(&brokers, &input);

    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("dead.jsonl");
    let plan = dir.path().join("kafka-eos.yaml");
    std::fs::write(
        &plan,
        PLAN.replace("BROKERS", &brokers)
            .replace("IN", &input)
            .replace("OUT", &output)
            .replace("DEAD", dead.to_str().expect("utf8")),
    )
    .expect("plan");
    let ckpt = format!("s3://{}/tests/kafka-{unique}", env["S3_BUCKET"]);
    let cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_eddy"));
        c.arg("run")
            .arg(&plan)
            .args(["--quiet", "-p", "2", "--checkpoint-dir", &ckpt])
            .args(["--checkpoint-interval", "1s"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("EDDY_LOG", "eddy=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            if k.starts_with("AWS_") {
                c.env(k, v);
            }
        }
        c
    };

    // Kill at random moments: each run gets past at least one completed checkpoint first
    // (so the job makes progress), then dies somewhere in the following 0–1.5 s. The third
    // run dies at a chosen moment instead: after a checkpoint completed and before its results
    // reached Kafka (the commit is held back 2 s for it), so the next run must produce them.
    let mut rng = Lcg(common::now_ms() as u64);
    let mut logs: Vec<Vec<String>> = Vec::new();
    for kill in 0..5 {
        let chosen = kill == 2;
        let mut c = cmd();
        if chosen {
            c.env("EDDY_TEST_KAFKA_COMMIT_DELAY_MS", "2000");
        }
        let mut child = c.spawn().expect("eddy");
        let lines = stderr_lines(&mut child);
        let trigger = if chosen {
            "kafka sink: committing epoch"
        } else {
            "checkpoint completed"
        };
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => {
                    let l = plain(&l);
                    let hit = l.contains(trigger);
                    log.push(l);
                    if hit {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().expect("wait");
                    panic!(
                        "run {kill}: no `{trigger}` ({status}); its log:\n{}",
                        log.join("\n")
                    );
                }
            }
        }
        if !chosen {
            std::thread::sleep(Duration::from_millis(rng.next(1500)));
        }
        // SIGKILL: nothing gets to clean up.
        let _ = child.kill();
        let _ = child.wait();
        log.extend(lines.try_iter().map(|l| plain(&l)));
        logs.push(log);
    }
    let replayed = logs[3]
        .iter()
        .find(|l| l.contains("kafka sink ready"))
        .cloned()
        .unwrap_or_default();
    assert!(
        replayed.contains("replaying=") && !replayed.contains("replaying=0"),
        "the run after the kill between checkpoint and commit did not produce the pending results again: {replayed:?}"
    );
    let out = cmd().output().expect("eddy");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "final run failed:\n{log}");
    assert!(
        log.contains("restoring from"),
        "the final run did not restore:\n{log}"
    );
    let restarted = logs.len() + 1;

    let mut got: BTreeMap<(String, i64), Vec<(i64, i64)>> = BTreeMap::new();
    for v in read_committed(&brokers, &output, OUT_PARTITIONS) {
        let j: serde_json::Value = serde_json::from_str(&v).expect("output is JSON");
        let key = (
            j["user"].as_str().expect("user").to_string(),
            j["window_start"].as_i64().expect("window_start"),
        );
        got.entry(key).or_default().push((
            j["n"].as_i64().expect("n"),
            j["total"].as_i64().expect("total"),
        ));
    }
    let dups: Vec<_> = got.iter().filter(|(_, v)| v.len() > 1).take(5).collect();
    assert!(dups.is_empty(), "results seen twice: {dups:?}");
    let got: Counts = got.into_iter().map(|(k, v)| (k, v[0])).collect();
    let missing: Vec<_> = reference
        .keys()
        .filter(|k| !got.contains_key(k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "results missing after {restarted} runs: {missing:?} ({} of {})",
        got.len(),
        reference.len()
    );
    let wrong: Vec<_> = reference
        .iter()
        .filter(|(k, v)| got.get(k) != Some(v))
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "wrong results: {wrong:?}");
    assert_eq!(got.len(), reference.len(), "unexpected extra results");

    // Read offsets are committed to the source's consumer group (named after the namespace,
    // the job and the source), for lag monitoring.
    let group: BaseConsumer = config(&brokers)
        .set("group.id", "eddy-local-kafka-eos-events")
        .create()
        .expect("consumer");
    let mut q = TopicPartitionList::new();
    for p in 0..IN_PARTITIONS {
        q.add_partition(&input, p);
    }
    let committed = group
        .committed_offsets(q, Duration::from_secs(10))
        .expect("committed offsets");
    let positions: Vec<i64> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect();
    assert!(
        positions.iter().any(|o| *o > 0),
        "no offsets committed to the consumer group: {positions:?}"
    );

    // Bad records: dead-lettered (at least once: the dead-letter file is not transactional)
    // with where they came from.
    let dead_text = std::fs::read_to_string(&dead).unwrap_or_default();
    for b in &bad {
        let line = dead_text
            .lines()
            .find(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|j| j["record"] == *b))
            .unwrap_or_else(|| {
                panic!("bad record {b:?} not dead-lettered; dead letters:\n{dead_text}")
            });
        assert!(
            line.contains(&format!("{input}/")) && line.contains('@'),
            "dead letter without topic/partition@offset: {line}"
        );
    }
}
