//! The job plan: loading the YAML (shared with `spec.pipeline` of a StreamJob, see
//! `eddy_crds::plan`) and validating it into a runnable [`Graph`](crate::job::graph::Graph).
//!
//! Validation reports every problem at once, each with the path of the offending field and a
//! hint, before anything runs.

pub mod duration;
mod projection;
pub mod sources;
mod steps;
mod validate;

pub use duration::parse_duration;
pub use eddy_crds::plan::*;
pub use validate::{DEFAULT_MAX_PARALLELISM, validate};

use std::fmt;

/// One problem in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// Field path, like `steps[2].window.tumbling`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "the plan has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}

impl PlanErrors {
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> PlanErrors {
        PlanErrors(vec![PlanError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// Every field name the plan format knows, for "did you mean" hints.
const KNOWN_FIELDS: &[&str] = &[
    "maxParallelism",
    "sources",
    "steps",
    "sinks",
    "deadLetter",
    "name",
    "generator",
    "nexmark",
    "file",
    "eventTime",
    "seed",
    "count",
    "keys",
    "eventsPerSecond",
    "startTime",
    "maxDisorder",
    "rate",
    "kind",
    "path",
    "schema",
    "field",
    "maxOutOfOrderness",
    "from",
    "filter",
    "map",
    "keyBy",
    "window",
    "aggregate",
    "top",
    "join",
    "tumbling",
    "sliding",
    "session",
    "allowedLateness",
    "lateOutput",
    "time",
    "size",
    "slide",
    "gap",
    "n",
    "orderBy",
    "left",
    "right",
    "select",
    "key",
    "stdout",
];

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn did_you_mean(field: &str) -> String {
    let best = KNOWN_FIELDS
        .iter()
        .map(|k| {
            (
                edit_distance(&field.to_lowercase(), &k.to_lowercase()),
                k.len().abs_diff(field.len()),
                k,
            )
        })
        .min();
    match best {
        Some((d, _, k)) if d <= 2 => format!("unknown field `{field}`: did you mean `{k}`?"),
        _ => format!("unknown field `{field}`: remove it (see README.md, \"The job plan\")"),
    }
}

fn render_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_path(parent)),
        Path::Map { parent, key } => {
            let p = render_path(parent);
            if p.is_empty() {
                key.to_string()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render_path(parent),
    }
}

/// Parses and validates plan text, reporting unknown fields and every validation problem
/// together.
pub fn compile(yaml: &str) -> Result<(Pipeline, crate::job::graph::Graph), PlanErrors> {
    let (p, mut errors) = parse_lenient(yaml)?;
    match validate(&p) {
        Ok(g) if errors.is_empty() => Ok((p, g)),
        Ok(_) => Err(PlanErrors(errors)),
        Err(PlanErrors(more)) => {
            errors.extend(more);
            Err(PlanErrors(errors))
        }
    }
}

/// Reads a plan file and [`compile`]s it.
pub fn compile_file(path: &str) -> Result<(Pipeline, crate::job::graph::Graph), PlanErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PlanErrors::one(path, format!("cannot read the plan: {e}")))?;
    compile(&text)
}

/// Parses a plan, returning unknown fields as errors beside it rather than failing on them.
fn parse_lenient(yaml: &str) -> Result<(Pipeline, Vec<PlanError>), PlanErrors> {
    let mut unknown = Vec::new();
    let de = serde_yaml::Deserializer::from_str(yaml);
    let mut track = serde_path_to_error::Track::new();
    let pd = serde_path_to_error::Deserializer::new(de, &mut track);
    let result: Result<Pipeline, _> = serde_ignored::deserialize(pd, |path| {
        let full = render_path(&path);
        let field = full.rsplit(['.', ']']).next().unwrap_or(&full).to_string();
        unknown.push(PlanError {
            path: full,
            message: did_you_mean(&field),
        });
    });
    match result {
        Ok(p) => Ok((p, unknown)),
        Err(e) => {
            let path = track.path().to_string();
            let path = if path == "." {
                "(top)".to_string()
            } else {
                path
            };
            let mut msg = e.to_string();
            if let Some(rest) = msg.strip_prefix(&format!("{path}: ")) {
                msg = rest.to_string();
            }
            if let Some(i) = msg.find(" at line ") {
                msg.truncate(i);
            }
            unknown.push(PlanError { path, message: msg });
            Err(PlanErrors(unknown))
        }
    }
}
