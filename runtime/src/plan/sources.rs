//! Validation of sources and sink targets.

use super::SinkTarget;
use super::validate::Builder;
use crate::connectors::file::{FileConfig, infer_schema};
use crate::connectors::generator::ClickConfig;
use crate::connectors::kafka::ClientSettings;
use crate::connectors::kafka::sink::KafkaSinkConfig;
use crate::connectors::kafka::source::{KafkaSourceConfig, StartFrom};
use crate::connectors::nexmark::{Kind, NexmarkConfig};
use crate::connectors::object_files::{self, ObjectDir, ObjectSourceConfig};
use crate::connectors::{SinkSpec, SourceConnector, SourceSpec, TimeField};
use crate::job::graph::{Node, NodeKind};
use crate::record::{Schema, Type};
use eddy_crds::plan::Source;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn source(b: &mut Builder<'_>, i: usize, s: &Source) {
    let path = format!("sources[{i}]");
    let set = [
        s.generator.is_some(),
        s.nexmark.is_some(),
        s.file.is_some(),
        s.kafka.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set != 1 {
        b.err(
            &path,
            "set exactly one of `generator`, `nexmark`, `file` or `kafka`",
        );
        return;
    }
    let (connector, schema, default_time, mut rate) = if let Some(g) = &s.generator {
        let mut c = ClickConfig::default();
        c.seed = g.seed.unwrap_or(c.seed);
        c.count = g.count;
        c.keys = g.keys.unwrap_or(c.keys);
        c.events_per_second = g.events_per_second.unwrap_or(c.events_per_second);
        c.start_time = g.start_time.unwrap_or(c.start_time);
        if c.keys == 0 {
            b.err(format!("{path}.generator.keys"), "must be at least 1");
        }
        if c.events_per_second == 0 {
            b.err(
                format!("{path}.generator.eventsPerSecond"),
                "must be at least 1",
            );
        }
        if let Some(d) = &g.max_disorder {
            c.max_disorder_ms = b
                .duration(&format!("{path}.generator.maxDisorder"), d)
                .unwrap_or(0)
                .max(0) as u64;
        }
        let default = ("ts".to_string(), c.max_disorder_ms as i64);
        (
            SourceConnector::Generator(c),
            ClickConfig::schema(),
            Some(default),
            g.rate,
        )
    } else if let Some(n) = &s.nexmark {
        let Some(kind) = Kind::parse(&n.kind) else {
            b.err(
                format!("{path}.nexmark.kind"),
                format!("expected `bid`, `person` or `auction`, got `{}`", n.kind),
            );
            return;
        };
        let mut c = NexmarkConfig::new(kind);
        c.seed = n.seed.unwrap_or(c.seed);
        c.count = n.count;
        c.events_per_second = n.events_per_second.unwrap_or(c.events_per_second);
        c.start_time = n.start_time.unwrap_or(c.start_time);
        if c.events_per_second == 0 {
            b.err(
                format!("{path}.nexmark.eventsPerSecond"),
                "must be at least 1",
            );
        }
        (
            SourceConnector::Nexmark(c),
            NexmarkConfig::schema(kind),
            Some(("dateTime".to_string(), 0)),
            n.rate,
        )
    } else if let Some(k) = &s.kafka {
        let (config, schema) = kafka_source(b, &format!("{path}.kafka"), &s.name, k);
        (SourceConnector::Kafka(config), schema, None, k.rate)
    } else if let Some(f) = &s.file {
        let Some((connector, schema)) = file_source(b, &format!("{path}.file"), f) else {
            return;
        };
        (connector, schema, None, f.rate)
    } else {
        return;
    };
    if rate == Some(0) {
        b.err(
            format!(
                "{path}.{}.rate",
                if s.nexmark.is_some() {
                    "nexmark"
                } else if s.kafka.is_some() {
                    "kafka"
                } else if s.file.is_some() {
                    "file"
                } else {
                    "generator"
                }
            ),
            "must be at least 1 record per second (omit it to run flat out)",
        );
        rate = None;
    }
    let (time, ooo) = match (&s.event_time, default_time) {
        (Some(et), _) => {
            let ooo = match &et.max_out_of_orderness {
                Some(d) => b
                    .duration(&format!("{path}.eventTime.maxOutOfOrderness"), d)
                    .unwrap_or(0),
                None => 0,
            };
            if et.kafka_timestamp {
                if s.kafka.is_none() {
                    b.err(
                        format!("{path}.eventTime.kafkaTimestamp"),
                        "only a kafka source has record timestamps: name a `field` instead",
                    );
                } else if !et.field.is_empty() {
                    b.err(
                        format!("{path}.eventTime"),
                        "set either `field` or `kafkaTimestamp: true`, not both",
                    );
                }
                (TimeField::Record, ooo)
            } else {
                match schema.index_of(&et.field) {
                    Some(f) if matches!(schema.fields[f].ty, Type::Int | Type::Any) => {
                        (TimeField::Field(f), ooo)
                    }
                    Some(f) => {
                        b.err(
                            format!("{path}.eventTime.field"),
                            format!(
                                "`{}` is a {:?}; event time must be an int of ms since the epoch",
                                et.field, schema.fields[f].ty
                            ),
                        );
                        return;
                    }
                    None => {
                        let names: Vec<&str> = schema.names().collect();
                        b.err(
                            format!("{path}.eventTime.field"),
                            format!("no field `{}`; fields are: {}", et.field, names.join(", ")),
                        );
                        return;
                    }
                }
            }
        }
        (None, Some((field, ooo))) => (TimeField::Field(schema.index_of(&field).unwrap_or(0)), ooo),
        (None, None) => (TimeField::Processing, 0),
    };
    let (read, schema, time, projection) = match b.narrow.get(&s.name) {
        Some(mask) if mask.len() == schema.len() => narrowed(&connector, schema, time, mask),
        _ => (schema.clone(), schema, time, None),
    };
    let narrowed = projection.is_some() || b.narrow.contains_key(&s.name);
    let schema = Arc::new(schema);
    let spec = SourceSpec {
        connector,
        schema: Arc::new(read),
        time,
        out_of_orderness: ooo,
        rate,
        projection,
        narrowed,
    };
    b.add(
        &s.name,
        Node {
            name: s.name.clone(),
            kind: NodeKind::Source(spec),
            schema,
            inputs: vec![],
            single: false,
            late_schema: None,
        },
    );
}

/// `schema` cut to the fields `mask` keeps: the schema records are read with, the source's
/// output schema, the time field's position in the first, and the mask a generator needs to
/// build only the fields read (a JSON source decodes straight into the read schema, skipping
/// the others like unknown keys). A time field nothing downstream reads is read for the
/// time and then dropped ([`TimeField::Taken`]).
fn narrowed(
    connector: &SourceConnector,
    schema: crate::record::Schema,
    time: TimeField,
    mask: &Arc<[bool]>,
) -> (
    crate::record::Schema,
    crate::record::Schema,
    TimeField,
    Option<Arc<[bool]>>,
) {
    let generated = matches!(
        connector,
        SourceConnector::Generator(_) | SourceConnector::Nexmark(_)
    );
    let cut = |keep: &[bool]| crate::record::Schema {
        fields: (schema.fields.iter().zip(keep))
            .filter(|(_, k)| **k)
            .map(|(f, _)| f.clone())
            .collect(),
    };
    let out = cut(mask);
    let position = |keep: &[bool], f: usize| keep[..f].iter().filter(|k| **k).count();
    match time {
        TimeField::Field(f) if !mask.get(f).copied().unwrap_or(true) => {
            if generated {
                // A generator builds its fields in its record's order: the time field sits
                // among the others.
                let read: Arc<[bool]> = (mask.iter().enumerate())
                    .map(|(i, k)| *k || i == f)
                    .collect();
                let time = TimeField::Taken(position(&read, f));
                (cut(&read), out, time, Some(read))
            } else {
                // A JSON source decodes fields by name: the time field goes last, to be
                // popped off the row.
                let mut read = out.clone();
                read.fields.push(schema.fields[f].clone());
                let time = TimeField::Taken(out.len());
                (read, out, time, None)
            }
        }
        TimeField::Field(f) => {
            let time = TimeField::Field(position(mask, f));
            (out.clone(), out, time, generated.then(|| mask.clone()))
        }
        other => (out.clone(), out, other, generated.then(|| mask.clone())),
    }
}

pub(super) fn sink_target(b: &mut Builder<'_>, path: &str, t: &SinkTarget) -> Option<SinkSpec> {
    if t.kafka.is_some() {
        b.err(
            format!("{path}.kafka"),
            "dead letters go to `stdout: {}` or a `file`; a kafka dead-letter topic is not supported yet",
        );
        return None;
    }
    match (&t.stdout, &t.file) {
        (Some(_), None) => Some(SinkSpec::Stdout),
        (None, Some(f)) if f.path.ends_with('/') => Some(SinkSpec::Parts {
            path: f.path.clone(),
        }),
        (None, Some(f)) if crate::objstore::is_remote(&f.path) => {
            b.err(
                format!("{path}.file.path"),
                "an S3 file sink writes one part file per checkpoint under a prefix: end the path with `/` (s3://bucket/prefix/)",
            );
            None
        }
        (None, Some(f)) if !f.path.trim().is_empty() => Some(SinkSpec::File {
            path: f.path.clone(),
        }),
        (None, Some(_)) => {
            b.err(format!("{path}.file.path"), "a file sink needs a path");
            None
        }
        _ => {
            b.err(
                path,
                "set exactly one of `stdout: {}` or `file: {path: out.jsonl}`",
            );
            None
        }
    }
}

/// A file source: local files as they are, S3 prefixes through object_store. An S3 source's
/// schema is inferred from the first object's first line (a request at validation), unless
/// declared; a declared schema keeps validation offline.
fn file_source(
    b: &mut Builder<'_>,
    path: &str,
    f: &eddy_crds::plan::FileSource,
) -> Option<(SourceConnector, Schema)> {
    let remote = crate::objstore::is_remote(&f.path);
    let watch = match &f.watch {
        Some(_) if !remote => {
            b.err(
                format!("{path}.watch"),
                "`watch` applies to S3 prefixes (s3://bucket/prefix/); local files are read once",
            );
            return None;
        }
        Some(d) => match b.duration(&format!("{path}.watch"), d)? {
            ms if ms > 0 => Some(Duration::from_millis(ms as u64)),
            _ => {
                b.err(
                    format!("{path}.watch"),
                    "must be a positive duration, like `10s`",
                );
                return None;
            }
        },
        None => None,
    };
    if remote {
        let dir = match ObjectDir::open(&f.path, false) {
            Ok(d) => d,
            Err(e) => {
                b.err(format!("{path}.path"), e.to_string());
                return None;
            }
        };
        let schema = match &f.schema {
            Some(decl) => schema_of(b, &format!("{path}.schema"), decl),
            None => match infer_remote(&dir) {
                Ok(s) => s,
                Err(e) => {
                    b.err(format!("{path}.path"), e);
                    return None;
                }
            },
        };
        let config = ObjectSourceConfig { dir, watch };
        return Some((SourceConnector::Objects(config), schema));
    }
    let schema = match &f.schema {
        Some(decl) => schema_of(b, &format!("{path}.schema"), decl),
        None => match infer_schema(&f.path) {
            Ok(s) => s,
            Err(e) => {
                b.err(format!("{path}.path"), e.to_string());
                return None;
            }
        },
    };
    if let Err(e) = crate::connectors::file::list_files(&f.path) {
        b.err(format!("{path}.path"), e.to_string());
        return None;
    }
    let config = FileConfig {
        path: crate::objstore::local_path(&f.path).to_string(),
    };
    Some((SourceConnector::File(config), schema))
}

/// The schema of an S3 source from the first line of its first object.
fn infer_remote(dir: &ObjectDir) -> Result<Schema, String> {
    let first = crate::objstore::block_on(object_files::first_line(dir))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{e}; or declare `schema:` to validate without reading the store"))?;
    let Some((name, line)) = first else {
        return Err(format!(
            "{}: no records to infer a schema from (no *.json or *.jsonl object with a line); declare `schema:`",
            dir.display()
        ));
    };
    crate::connectors::file::schema_of_line(&name, &line).map_err(|e| e.to_string())
}

fn properties(p: &indexmap::IndexMap<String, String>) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn schema_of(b: &mut Builder<'_>, path: &str, decl: &indexmap::IndexMap<String, String>) -> Schema {
    let mut fields = Vec::new();
    for (name, ty) in decl {
        match Type::parse(ty) {
            Some(t) => fields.push((name.clone(), t)),
            None => b.err(
                format!("{path}.{name}"),
                format!("unknown type `{ty}`: use string, int, double, bool or any"),
            ),
        }
    }
    Schema::new(fields)
}

fn kafka_common(b: &mut Builder<'_>, path: &str, brokers: &str, topic: &str) {
    if brokers.trim().is_empty() {
        b.err(
            format!("{path}.brokers"),
            "set the bootstrap servers, e.g. `brokers: localhost:9092`",
        );
    }
    if topic.trim().is_empty() {
        b.err(format!("{path}.topic"), "set the topic to read or write");
    }
}

fn kafka_source(
    b: &mut Builder<'_>,
    path: &str,
    name: &str,
    k: &eddy_crds::plan::KafkaSource,
) -> (KafkaSourceConfig, Schema) {
    kafka_common(b, path, &k.brokers, &k.topic);
    if k.schema.is_empty() {
        b.err(
            format!("{path}.schema"),
            "declare the fields of the JSON values, e.g. `schema: {user: string, ts: int}`",
        );
    }
    let schema = schema_of(b, &format!("{path}.schema"), &k.schema);
    let start = match k.start_from.as_deref().map(StartFrom::parse) {
        None => StartFrom::Earliest,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            b.err(format!("{path}.startFrom"), e);
            StartFrom::Earliest
        }
    };
    let bounded = match k.stop_at.as_deref() {
        None => false,
        Some("latest") => true,
        Some(other) => {
            b.err(
                format!("{path}.stopAt"),
                format!("expected `latest` (or leave it out to run until stopped), got `{other}`"),
            );
            false
        }
    };
    let ms = |b: &mut Builder<'_>, field: &str, v: &Option<String>, default: u64| match v {
        Some(d) => b
            .positive(&format!("{path}.{field}"), d)
            .map_or(default, |x| x as u64),
        None => default,
    };
    let idle = ms(b, "idleTimeout", &k.idle_timeout, 30_000);
    let discovery = ms(b, "partitionDiscovery", &k.partition_discovery, 30_000);
    (
        KafkaSourceConfig {
            client: ClientSettings {
                brokers: k.brokers.clone(),
                properties: properties(&k.properties),
            },
            topic: k.topic.clone(),
            group_id: k
                .group_id
                .clone()
                .unwrap_or_else(|| format!("{DEFAULT_PREFIX}-{name}")),
            start,
            bounded,
            idle_timeout: Duration::from_millis(idle),
            discovery: Duration::from_millis(discovery),
        },
        schema,
    )
}

/// Group and transactional ids are `<prefix>-<name>` unless set; the prefix becomes
/// `eddy-<namespace>-<job>` once the job's name is known ([`crate::job::graph::Graph::name_job`]).
pub const DEFAULT_PREFIX: &str = "eddy";

pub(super) fn kafka_sink(
    b: &mut Builder<'_>,
    path: &str,
    name: &str,
    k: &eddy_crds::plan::KafkaSink,
    input: &Schema,
) -> Option<SinkSpec> {
    kafka_common(b, path, &k.brokers, &k.topic);
    let key = match &k.key {
        None => None,
        Some(f) => match input.index_of(f) {
            Some(i) => Some(i),
            None => {
                let names: Vec<&str> = input.names().collect();
                b.err(
                    format!("{path}.key"),
                    format!(
                        "no field `{f}` in the input; fields are: {}",
                        names.join(", ")
                    ),
                );
                None
            }
        },
    };
    let exactly_once = match k.delivery.as_deref() {
        None => None,
        Some("exactly-once") => Some(true),
        Some("at-least-once") => Some(false),
        Some(other) => {
            b.err(
                format!("{path}.delivery"),
                format!("expected `exactly-once` or `at-least-once`, got `{other}`"),
            );
            None
        }
    };
    let timeout = match &k.transaction_timeout {
        Some(d) => b.positive(&format!("{path}.transactionTimeout"), d)? as u64,
        None => 60_000,
    };
    // The broker refuses longer transactions by default (transaction.max.timeout.ms).
    if timeout > 900_000 {
        b.err(
            format!("{path}.transactionTimeout"),
            "at most 15m unless the brokers' transaction.max.timeout.ms is raised (then set it in `properties` as transaction.timeout.ms)",
        );
    }
    Some(SinkSpec::Kafka(KafkaSinkConfig {
        client: ClientSettings {
            brokers: k.brokers.clone(),
            properties: properties(&k.properties),
        },
        topic: k.topic.clone(),
        key,
        exactly_once,
        transactional_id: k
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{DEFAULT_PREFIX}-{name}")),
        transaction_timeout: Duration::from_millis(timeout),
    }))
}
