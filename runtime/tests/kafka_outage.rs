//! The Kafka broker away, at start and in the middle of a run, against the real broker of
//! `e2e/services.sh`: the job logs that it cannot reach the cluster and retries (no crash, no
//! crash loop), carries on when the broker is back, and the exactly-once output read with
//! `read_committed` equals the reference computed from the input: nothing lost, nothing twice.
//!
//! Its own test binary: stopping the broker must not disturb the other Kafka tests.

mod common;

use common::kafka::{config, create_topics, read_committed};

use common::{service, services, stderr_lines, wait_line};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: i64 = 60_000;

const PLAN: &str = r#"
sources:
  - name: events
    kafka:
      brokers: BROKERS
      topic: IN
      stopAt: latest
      rate: 4000
      # A small prefetch, so the outage stalls reading instead of the whole topic being
      # fetched before it.
      properties: { queued.min.messages: "500" }
      schema: { user: string, ts: int }
    eventTime: { field: ts, maxOutOfOrderness: 1s }
steps:
  - name: per_user
    from: events
    keyBy: event.user
    window: { tumbling: 5s }
    aggregate: { n: "count()" }
sinks:
  - { name: out, from: per_user, kafka: { brokers: BROKERS, topic: OUT, key: user } }
"#;

/// A broker that was just restarted may take a moment to accept requests again.
fn with_retries<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn the_job_waits_out_a_broker_outage_at_start_and_mid_run() {
    let env = services();
    let brokers = env["KAFKA_BROKERS"].clone();
    let unique = format!("{}-{}", std::process::id(), common::now_ms());
    let (input, output) = (format!("oin-{unique}"), format!("oout-{unique}"));
    with_retries("create topics", || {
        create_topics(&brokers, &[(&input, 3), (&output, 2)], true)
    });
    let producer: ThreadedProducer<DefaultProducerContext> =
        config(&brokers).create().expect("producer");
    let mut reference: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let base = 1_700_000_000_000i64;
    for i in 0..EVENTS {
        let user = format!("u{}", (i * 7919) % 97);
        let ts = base + i * 2;
        let v = format!(r#"{{"user":"{user}","ts":{ts}}}"#);
        while let Err((e, _)) = producer.send(BaseRecord::to(&input).key(&user).payload(&v)) {
            assert!(
                matches!(e, KafkaError::MessageProduction(_)),
                "produce: {e}"
            );
            producer.poll(Duration::from_millis(5));
        }
        *reference
            .entry((user, ts - ts.rem_euclid(5000)))
            .or_default() += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("flush");

    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("kafka-outage.yaml");
    std::fs::write(
        &plan,
        PLAN.replace("BROKERS", &brokers)
            .replace("IN", &input)
            .replace("OUT", &output),
    )
    .expect("plan");

    // Broker down before the job starts.
    service("stop-kafka");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("run")
        .arg(&plan)
        .args(["--quiet", "-p", "2", "--checkpoint-interval", "1s"])
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ckpt"))
        .env("EDDY_LOG", "eddy=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("eddy");
    let lines = stderr_lines(&mut child);
    let waiting = wait_line(&lines, "retrying", Duration::from_secs(60));
    service("start-kafka");
    assert!(
        waiting.is_some(),
        "no log line saying the cluster is unreachable and retried"
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "eddy exited while the broker was down"
    );

    // Broker away in the middle of the run.
    assert!(
        wait_line(&lines, "checkpoint completed", Duration::from_secs(120)).is_some(),
        "no checkpoint completed after the broker came back"
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the job finished before the broker could be stopped mid-run (it should read at 4,000 a second for 15 s)"
    );
    service("stop-kafka");
    // librdkafka's own report of the lost connection, or the sink's commit retry.
    let noticed = wait_line(&lines, "retr", Duration::from_secs(60));
    service("start-kafka");
    if noticed.is_none() {
        let status = child.try_wait().expect("try_wait");
        let log: Vec<String> = lines.try_iter().collect();
        panic!(
            "the outage left no log line (eddy status: {status:?}); its log since the checkpoint:\n{}",
            log.join("\n")
        );
    }
    // It may have finished by now (the broker is back): only a failure is wrong.
    if let Some(status) = child.try_wait().expect("try_wait")
        && !status.success()
    {
        let log: Vec<String> = lines.try_iter().collect();
        panic!(
            "eddy failed during the outage ({status}); the line that noticed it: {noticed:?}; the rest of its log:\n{}",
            log.join("\n")
        );
    }

    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish after the outage"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "eddy failed: {}", log.join("\n"));

    let mut got: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for v in read_committed(&brokers, &output, 2) {
        let j: serde_json::Value = serde_json::from_str(&v).expect("JSON");
        got.entry((
            j["user"].as_str().expect("user").to_string(),
            j["window_start"].as_i64().expect("window_start"),
        ))
        .or_default()
        .push(j["n"].as_i64().expect("n"));
    }
    let dups: Vec<_> = got.iter().filter(|(_, v)| v.len() > 1).take(5).collect();
    assert!(dups.is_empty(), "results seen twice: {dups:?}");
    let got: BTreeMap<(String, i64), i64> = got.into_iter().map(|(k, v)| (k, v[0])).collect();
    assert_eq!(got.len(), reference.len(), "result count");
    assert!(got == reference, "results differ from the reference");
}
