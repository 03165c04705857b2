//! Validation of sources and sink targets.

use super::SinkTarget;
use super::validate::Builder;
use crate::connectors::file::{FileConfig, infer_schema};
use crate::connectors::generator::ClickConfig;
use crate::connectors::nexmark::{Kind, NexmarkConfig};
use crate::connectors::{SinkSpec, SourceConnector, SourceSpec, TimeField};
use crate::job::graph::{Node, NodeKind};
use crate::record::{Schema, Type};
use eddy_crds::plan::Source;
use std::sync::Arc;

pub(super) fn source(b: &mut Builder<'_>, i: usize, s: &Source) {
    let path = format!("sources[{i}]");
    let set = [s.generator.is_some(), s.nexmark.is_some(), s.file.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if set != 1 {
        b.err(&path, "set exactly one of `generator`, `nexmark` or `file`");
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
    } else if let Some(f) = &s.file {
        let schema = match &f.schema {
            Some(decl) => {
                let mut fields = Vec::new();
                for (name, ty) in decl {
                    match Type::parse(ty) {
                        Some(t) => fields.push((name.clone(), t)),
                        None => b.err(
                            format!("{path}.file.schema.{name}"),
                            format!("unknown type `{ty}`: use string, int, double, bool or any"),
                        ),
                    }
                }
                Schema::new(fields)
            }
            None => match infer_schema(&f.path) {
                Ok(s) => s,
                Err(e) => {
                    b.err(format!("{path}.file.path"), e.to_string());
                    return;
                }
            },
        };
        if let Err(e) = crate::connectors::file::list_files(&f.path) {
            b.err(format!("{path}.file.path"), e.to_string());
            return;
        }
        (
            SourceConnector::File(FileConfig {
                path: f.path.clone(),
            }),
            schema,
            None,
            None,
        )
    } else {
        return;
    };
    if rate == Some(0) {
        b.err(
            format!("{path}.generator.rate"),
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
        (None, Some((field, ooo))) => (TimeField::Field(schema.index_of(&field).unwrap_or(0)), ooo),
        (None, None) => (TimeField::Processing, 0),
    };
    let schema = Arc::new(schema);
    let spec = SourceSpec {
        connector,
        schema: schema.clone(),
        time,
        out_of_orderness: ooo,
        rate,
        projection: None,
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

pub(super) fn sink_target(b: &mut Builder<'_>, path: &str, t: &SinkTarget) -> Option<SinkSpec> {
    match (&t.stdout, &t.file) {
        (Some(_), None) => Some(SinkSpec::Stdout),
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
