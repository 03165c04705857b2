//! Kafka helpers for the tests that run against the broker of `e2e/services.sh`.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// A client configuration for `brokers`.
pub fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates `(topic, partitions)`; with `existing_ok`, a topic that already exists (a retry
/// after a half-done attempt) is no error.
pub fn create_topics(
    brokers: &str,
    topics: &[(&str, i32)],
    existing_ok: bool,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        config(brokers).create().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    for r in rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .map_err(|e| e.to_string())?
    {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if existing_ok => {}
            Err((t, e)) => return Err(format!("{t}: {e}")),
        }
    }
    Ok(())
}

/// Every committed record of `topic`'s `partitions`, read with
/// `isolation.level=read_committed` up to the end of each partition.
pub fn read_committed(brokers: &str, topic: &str, partitions: i32) -> Vec<String> {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut eof = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < partitions as usize {
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
