//! Watermarks per Kafka partition, against the real broker: a partition that never gets a
//! record stops holding the watermark back after `idleTimeout` (windows fire without it), and a
//! partition added while the job runs is picked up (its records reach the results).

mod common;

use common::kafka::{config, create_topics};
use common::wait_line;

use common::services;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PLAN: &str = r#"
sources:
  - name: events
    kafka:
      brokers: BROKERS
      topic: IN
      idleTimeout: 1s
      partitionDiscovery: 1s
      schema: { user: string, ts: int }
    eventTime: { field: ts, maxOutOfOrderness: 0s }
steps:
  - name: per_user
    from: events
    keyBy: event.user
    window: { tumbling: 1s }
    aggregate: { n: "count()" }
sinks:
  - { name: out, from: per_user, stdout: {} }
"#;

fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    user: &str,
    ts: i64,
) {
    let v = format!(r#"{{"user":"{user}","ts":{ts}}}"#);
    p.send(
        BaseRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(&v),
    )
    .expect("send");
    p.flush(Duration::from_secs(30)).expect("flush");
}

#[test]
fn idle_partitions_do_not_stall_windows_and_new_partitions_are_read() {
    let env = services();
    let brokers = env["KAFKA_BROKERS"].clone();
    let topic = format!("parts-{}-{}", std::process::id(), common::now_ms());
    create_topics(&brokers, &[(&topic, 2)], false).expect("create topic");
    let p: ThreadedProducer<DefaultProducerContext> = config(&brokers).create().expect("producer");
    let base = 1_700_000_000_000i64;
    // Partition 0 only: partition 1 never gets a record.
    send(&p, &topic, 0, "early", base + 100);
    send(&p, &topic, 0, "early", base + 200);

    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("parts.yaml");
    std::fs::write(
        &plan,
        PLAN.replace("BROKERS", &brokers).replace("IN", &topic),
    )
    .expect("plan");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("run")
        .arg(&plan)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("eddy");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // A later record on partition 0 moves its watermark past the first window; the window
    // fires only once partition 1 counts as idle.
    send(&p, &topic, 0, "later", base + 5_000);
    let first = wait_line(&rx, "\"early\"", Duration::from_secs(30));

    // A third partition, discovered while the job runs.
    let admin: AdminClient<DefaultClientContext> = config(&brokers).create().expect("admin");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let added = rt
        .block_on(admin.create_partitions(&[NewPartitions::new(&topic, 3)], &AdminOptions::new()))
        .expect("create partitions");
    for r in added {
        r.expect("partition added");
    }
    // Repeated until the source has picked the partition up and read it (discovery runs every
    // second); the window result then shows up.
    // A new producer: the first one's metadata still says two partitions. FRESH records go
    // into the new partition right away, most likely before the source has discovered it:
    // it must read the partition from its start, so its window counts all of them.
    const FRESH: i64 = 50;
    let p: ThreadedProducer<DefaultProducerContext> = config(&brokers).create().expect("producer");
    let t = base + 10_000;
    for _ in 0..FRESH {
        send(&p, &topic, 2, "fresh", t);
    }
    // Partition 0 moves on; the window fires once partition 2 is idle.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fresh = None;
    let mut later = t + 3_000;
    while fresh.is_none() && Instant::now() < deadline {
        send(&p, &topic, 0, "later", later);
        fresh = wait_line(&rx, "\"fresh\"", Duration::from_secs(3));
        later += 1_000;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.is_some(),
        "the window of partition 0's records never fired: the empty partition held the watermark"
    );
    let fresh =
        fresh.expect("records of the partition added during the run never reached the results");
    let j: serde_json::Value = serde_json::from_str(&fresh).expect("JSON result");
    assert_eq!(
        j["n"].as_i64(),
        Some(FRESH),
        "the new partition was not read from its start: {fresh}"
    );
}
