use super::sources::{sink_target, source};
use super::steps::step;
use super::{Pipeline, PlanError, PlanErrors, Step, parse_duration};
use crate::expr::{self, Compiled, Scope};
use crate::job::graph::{Graph, Input, Node, NodeId, NodeKind, Route};
use std::collections::HashMap;

pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
/// `maxWatermarkDrift` when the plan does not say, in ms.
pub const DEFAULT_MAX_DRIFT: i64 = 5_000;

pub(super) struct Builder<'a> {
    pub(super) plan: &'a Pipeline,
    pub(super) errors: Vec<PlanError>,
    pub(super) nodes: Vec<Node>,
    pub(super) ids: HashMap<String, NodeId>,
    /// Sources to narrow to the fields their consumers read (see [`validate`]).
    pub(super) narrow: &'a HashMap<String, std::sync::Arc<[bool]>>,
}

impl Builder<'_> {
    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PlanError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, path: &str, s: &str) -> Option<i64> {
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    pub(super) fn positive(&mut self, path: &str, s: &str) -> Option<i64> {
        let d = self.duration(path, s)?;
        if d <= 0 {
            self.err(path, format!("must be longer than 0, got `{s}`"));
            return None;
        }
        Some(d)
    }

    pub(super) fn compile(&mut self, path: &str, src: &str, scope: &Scope) -> Option<Compiled> {
        match expr::compile(src, scope) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(path, format!("{e} (in `{src}`)"));
                None
            }
        }
    }

    pub(super) fn add(&mut self, name: &str, node: Node) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(node);
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The node of an input name; `None` when it failed to validate (reported there) or is
    /// unknown (reported by the name check).
    pub(super) fn input(&self, from: &str) -> Option<NodeId> {
        self.ids.get(from).copied()
    }
}

/// Validates a plan and compiles it into a runnable graph, reporting every problem at once.
///
/// A source whose consumers read only some of its fields is then narrowed: the plan is
/// compiled again with that source's schema cut to those fields, so its records are only as
/// wide as what the job reads. Every hop then moves fewer values (a keyed count reads one
/// of a click's five fields), and the expressions, compiled by field name, find their
/// fields at the narrowed positions. Errors always come from the first, full compile.
pub fn validate(plan: &Pipeline) -> Result<Graph, PlanErrors> {
    let full = build(plan, &HashMap::new())?;
    let narrow: HashMap<String, std::sync::Arc<[bool]>> = full
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            // A record of no fields would be no record at all (batches of width 0 hold no
            // rows): a source nothing reads a field of keeps its fields.
            NodeKind::Source(s) => s
                .projection
                .clone()
                .filter(|m| m.iter().any(|k| *k))
                .map(|m| (n.name.clone(), m)),
            _ => None,
        })
        .collect();
    let mut graph = if narrow.is_empty() {
        full
    } else {
        // Cannot fail where the full compile did not (the narrowed schemas keep every field
        // read); should it, the full graph runs as well.
        build(plan, &narrow).unwrap_or(full)
    };
    // A generator's mask names the fields it builds, in order: only a narrowed schema lists
    // exactly those. Any other generator builds every field.
    for n in &mut graph.nodes {
        if let NodeKind::Source(s) = &mut n.kind
            && !s.narrowed
            && matches!(
                s.connector,
                crate::connectors::SourceConnector::Generator(_)
                    | crate::connectors::SourceConnector::Nexmark(_)
            )
        {
            s.projection = None;
        }
    }
    Ok(graph)
}

fn build(
    plan: &Pipeline,
    narrow: &HashMap<String, std::sync::Arc<[bool]>>,
) -> Result<Graph, PlanErrors> {
    let mut b = Builder {
        plan,
        errors: Vec::new(),
        nodes: Vec::new(),
        ids: HashMap::new(),
        narrow,
    };
    let max_parallelism = plan.max_parallelism.unwrap_or(DEFAULT_MAX_PARALLELISM);
    if !(1..=32_768).contains(&max_parallelism) {
        b.err(
            "maxParallelism",
            format!("must be between 1 and 32768, got {max_parallelism}"),
        );
    }
    let max_drift = match &plan.max_watermark_drift {
        Some(d) => b
            .positive("maxWatermarkDrift", d)
            .unwrap_or(DEFAULT_MAX_DRIFT),
        None => DEFAULT_MAX_DRIFT,
    };
    if plan.sources.is_empty() {
        b.err("sources", "a job needs at least one source");
    }
    if plan.sinks.is_empty() {
        b.err(
            "sinks",
            "a job needs at least one sink: add `sinks: [{name: out, from: STEP, stdout: {}}]`",
        );
    }
    let order = check_names_and_order(&mut b);
    for (i, s) in plan.sources.iter().enumerate() {
        source(&mut b, i, s);
    }
    for i in order {
        step(&mut b, i, &plan.steps[i]);
    }
    for (i, s) in plan.sinks.iter().enumerate() {
        let path = format!("sinks[{i}]");
        let from = b.ids.get(&s.from).copied();
        let spec = match (&s.kafka, from) {
            (Some(k), _) if s.stdout.is_some() || s.file.is_some() => {
                b.err(&path, "set exactly one of `stdout`, `file` or `kafka`");
                let _ = k;
                None
            }
            (Some(k), Some(from)) => {
                let schema = b.nodes[from].schema.clone();
                super::sources::kafka_sink(&mut b, &format!("{path}.kafka"), &s.name, k, &schema)
            }
            (Some(_), None) => None,
            (None, _) => sink_target(&mut b, &path, &s.target()),
        };
        if from.is_none() && !b.plan_defines(&s.from) {
            b.err(
                format!("{path}.from"),
                format!("unknown input `{}`; known: {}", s.from, b.known_names()),
            );
        }
        if let (Some(spec), Some(from)) = (spec, from) {
            let schema = b.nodes[from].schema.clone();
            b.add(
                &format!("sink:{}", s.name),
                Node {
                    name: s.name.clone(),
                    kind: NodeKind::Sink(spec),
                    schema,
                    inputs: vec![Input {
                        from,
                        late: false,
                        route: Route::Global,
                    }],
                    single: true,
                    late_schema: None,
                },
            );
        }
    }
    let dead_letter = match &plan.dead_letter {
        Some(t) => match sink_target(&mut b, "deadLetter", t) {
            Some(crate::connectors::SinkSpec::Parts { .. }) => {
                b.err(
                    "deadLetter.file.path",
                    "dead letters are written as they come, to a file: not a directory or S3 prefix (a path ending in `/` or `s3://`)",
                );
                None
            }
            other => other,
        },
        None => None,
    };
    if b.errors.is_empty() {
        let mut graph = Graph {
            nodes: b.nodes,
            max_parallelism,
            max_drift,
            dead_letter,
        };
        super::projection::push_down(&mut graph);
        Ok(graph)
    } else {
        Err(PlanErrors(b.errors))
    }
}

impl Builder<'_> {
    fn plan_defines(&self, name: &str) -> bool {
        self.plan.sources.iter().any(|s| s.name == name)
            || self
                .plan
                .steps
                .iter()
                .any(|s| s.name == name || late_output(s) == Some(name))
    }

    fn known_names(&self) -> String {
        let mut names: Vec<&str> = self.plan.sources.iter().map(|s| s.name.as_str()).collect();
        for s in &self.plan.steps {
            names.push(&s.name);
            if let Some(l) = late_output(s) {
                names.push(l);
            }
        }
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    }
}

pub(super) fn late_output(s: &Step) -> Option<&str> {
    s.window
        .as_ref()
        .and_then(|w| w.late_output.as_deref())
        .or_else(|| {
            s.join
                .as_ref()
                .and_then(|j| j.window.late_output.as_deref())
        })
}

fn inputs_of(s: &Step) -> Vec<(String, &str)> {
    match &s.join {
        Some(j) => vec![
            ("join.left.from".into(), j.left.from.as_str()),
            ("join.right.from".into(), j.right.from.as_str()),
        ],
        None => s
            .from
            .iter()
            .map(|f| ("from".to_string(), f.as_str()))
            .collect(),
    }
}

/// Checks names are unique and every `from` exists; returns the steps in dependency order.
fn check_names_and_order(b: &mut Builder<'_>) -> Vec<usize> {
    let plan = b.plan;
    let mut defined: HashMap<&str, String> = HashMap::new();
    let mut owner: HashMap<&str, Option<usize>> = HashMap::new();
    let mut names: Vec<(&str, String, Option<usize>)> = Vec::new();
    for (i, s) in plan.sources.iter().enumerate() {
        names.push((&s.name, format!("sources[{i}].name"), None));
    }
    for (i, s) in plan.steps.iter().enumerate() {
        names.push((&s.name, format!("steps[{i}].name"), Some(i)));
        if let Some(l) = late_output(s) {
            let sub = if s.join.is_some() {
                "join.window"
            } else {
                "window"
            };
            names.push((l, format!("steps[{i}].{sub}.lateOutput"), Some(i)));
        }
    }
    for (name, path, step) in names {
        if name.trim().is_empty() {
            b.err(path, "a name is required");
            continue;
        }
        if let Some(first) = defined.get(name) {
            b.err(
                path,
                format!("`{name}` is already defined at {first}; names must be unique"),
            );
            continue;
        }
        defined.insert(name, path);
        owner.insert(name, step);
    }
    for (i, s) in plan.sinks.iter().enumerate() {
        if s.name.trim().is_empty() {
            b.err(format!("sinks[{i}].name"), "a name is required");
        }
    }
    // Depth-first order with cycle detection.
    let n = plan.steps.len();
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut order = Vec::new();
    let mut bad = vec![false; n];
    // A depth-first walk needs all of this state; bundling it would only rename it.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        i: usize,
        plan: &Pipeline,
        owner: &HashMap<&str, Option<usize>>,
        state: &mut Vec<u8>,
        stack: &mut Vec<usize>,
        order: &mut Vec<usize>,
        errors: &mut Vec<PlanError>,
        bad: &mut Vec<bool>,
    ) {
        state[i] = 1;
        stack.push(i);
        for (field, from) in inputs_of(&plan.steps[i]) {
            match owner.get(from) {
                None => {
                    let mut known: Vec<&str> = owner.keys().copied().collect();
                    known.sort();
                    errors.push(PlanError {
                        path: format!("steps[{i}].{field}"),
                        message: format!("unknown input `{from}`; known: {}", known.join(", ")),
                    });
                    bad[i] = true;
                }
                Some(None) => {}
                Some(Some(j)) => {
                    let j = *j;
                    if state[j] == 1 {
                        let pos = stack.iter().position(|s| *s == j).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[pos..]
                            .iter()
                            .map(|s| plan.steps[*s].name.as_str())
                            .collect();
                        cycle.push(&plan.steps[j].name);
                        errors.push(PlanError {
                            path: format!("steps[{i}].{field}"),
                            message: format!(
                                "cycle: {}; a step cannot read its own output",
                                cycle.join(" -> ")
                            ),
                        });
                        bad[i] = true;
                    } else if state[j] == 0 {
                        visit(j, plan, owner, state, stack, order, errors, bad);
                    }
                }
            }
        }
        stack.pop();
        state[i] = 2;
        order.push(i);
    }
    let mut stack = Vec::new();
    for i in 0..n {
        if state[i] == 0 {
            visit(
                i,
                plan,
                &owner,
                &mut state,
                &mut stack,
                &mut order,
                &mut b.errors,
                &mut bad,
            );
        }
        if plan.steps[i].join.is_none() && plan.steps[i].from.is_none() {
            b.err(
                format!("steps[{i}].from"),
                "missing: name the source or step this step reads",
            );
        }
    }
    order.retain(|i| !bad[*i]);
    order
}
