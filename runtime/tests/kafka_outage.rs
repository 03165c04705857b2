//! The Kafka broker away, at start and in the middle of a run, against the real broker of
//! `e2e/services.sh`: the job logs that it cannot reach the cluster and retries (no crash, no
//! crash loop), carries on when the broker is back, and the exactly-once output read with
//! `read_committed` equals the reference computed from the input: nothing lost, nothing twice.
//!
//! Its own test binary: stopping the broker must not disturb the other Kafka tests.

mod common;

use common::{service, services, stderr_lines, wait_line};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
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

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

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

fn read_committed(brokers: &str, topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut eof = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < 2 {
        assert!(Instant::now() < deadline, "reading {topic} took too long");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).expect("utf8"))
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn the_job_waits_out_a_broker_outage_at_start_and_mid_run() {
    let env = services();
    let brokers = env["KAFKA_BROKERS"].clone();
    let unique = format!("{}-{}", std::process::id(), common::now_ms());
    let (input, output) = (format!("oin-{unique}"), format!("oout-{unique}"));
    with_retries("create topics", || {
        let admin: AdminClient<DefaultClientContext> =
            config(&brokers).create().map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let topics = [
            NewTopic::new(&input, 3, TopicReplication::Fixed(1)),
            NewTopic::new(&output, 2, TopicReplication::Fixed(1)),
        ];
        for r in rt
            .block_on(admin.create_topics(&topics, &AdminOptions::new()))
            .map_err(|e| e.to_string())?
        {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => return Err(format!("{t}: {e}")),
            }
        }
        Ok(())
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
    service("stop-kafka");
    // librdkafka's own report of the lost connection, or the sink's commit retry.
    let noticed = wait_line(&lines, "retr", Duration::from_secs(60));
    service("start-kafka");
    assert!(noticed.is_some(), "the outage left no log line");
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
    for v in read_committed(&brokers, &output) {
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
