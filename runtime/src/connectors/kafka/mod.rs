//! Kafka: a topic's partitions as source splits ([`source`]) and results into a topic,
//! at-least-once or exactly-once ([`sink`]), with librdkafka through `rdkafka`.

pub mod sink;
pub mod source;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a client connects: bootstrap servers and extra librdkafka properties.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub brokers: String,
    /// Passed through unchanged (TLS, SASL, tuning). Never logged: they may hold secrets.
    pub properties: Vec<(String, String)>,
}

impl ClientSettings {
    pub(crate) fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // Errors reach `Ctx::error`; librdkafka's own log lines only at debug level.
        c.set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// How long one warning of a kind stays the only one: a broker outage gives a clear line every
/// so often rather than a flood.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Client callbacks: errors through `tracing` (rate-limited) and the first failed delivery.
pub struct Ctx {
    name: String,
    warned: Mutex<HashMap<String, Instant>>,
    delivery_error: Mutex<Option<String>>,
}

impl Ctx {
    pub fn new(name: impl Into<String>) -> Ctx {
        Ctx {
            name: name.into(),
            warned: Mutex::new(HashMap::new()),
            delivery_error: Mutex::new(None),
        }
    }

    /// Logs `msg` unless a warning of the same `kind` was logged in the last [`WARN_EVERY`].
    pub fn warn(&self, kind: &str, msg: &str) {
        let mut w = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if w.get(kind)
            .is_some_and(|t| now.duration_since(*t) < WARN_EVERY)
        {
            return;
        }
        w.insert(kind.to_string(), now);
        tracing::warn!(client = %self.name, "{msg}");
    }

    /// The first delivery that failed since the last call, if any.
    pub fn take_delivery_error(&self) -> Option<String> {
        self.delivery_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(client = %self.name, ?level, fac, "{log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news for a bounded read, not an error.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        let kind = format!("{:?}", error.rdkafka_error_code());
        self.warn(
            &kind,
            &format!("kafka: {error}: {reason} (librdkafka retries on its own)"),
        );
    }
}

impl ConsumerContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut d = self
                .delivery_error
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if d.is_none() {
                *d = Some(e.to_string());
            }
        }
    }
}

/// A librdkafka duration property in ms.
pub(crate) fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}
