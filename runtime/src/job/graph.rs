//! The validated, compiled form of a plan: nodes with schemas and compiled expressions, and
//! the edges between them with how records are routed across workers.

use crate::connectors::{SinkSpec, SourceSpec};
use crate::expr::Compiled;
use crate::operators::aggregate::AggSpec;
use crate::operators::window::WindowSpec;
use crate::record::Schema;
use std::sync::Arc;

pub type NodeId = usize;

#[derive(Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub max_parallelism: u32,
    /// How far, in event-time ms, a source split may run ahead of the slowest (see `drift`).
    pub max_drift: i64,
    /// Where dead letters go; `None` means stderr (as log lines).
    pub dead_letter: Option<SinkSpec>,
}

impl Graph {
    /// Gives Kafka group and transactional ids left to their defaults the job's name
    /// (`eddy-<namespace>-<job>-<source or sink>`), so two jobs never fence each other.
    pub fn name_job(&mut self, namespace: &str, job: &str) {
        use crate::connectors::SourceConnector;
        use crate::plan::sources::DEFAULT_PREFIX;
        let default = |name: &str| format!("{DEFAULT_PREFIX}-{name}");
        let named = |name: &str| format!("{DEFAULT_PREFIX}-{namespace}-{job}-{name}");
        for n in &mut self.nodes {
            match &mut n.kind {
                NodeKind::Source(SourceSpec {
                    connector: SourceConnector::Kafka(k),
                    ..
                }) if k.group_id == default(&n.name) => k.group_id = named(&n.name),
                NodeKind::Sink(SinkSpec::Kafka(k)) if k.transactional_id == default(&n.name) => {
                    k.transactional_id = named(&n.name)
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// Schema of the records this node emits on its main output.
    pub schema: Arc<Schema>,
    /// Inputs by port (a join has two).
    pub inputs: Vec<Input>,
    /// One instance per worker, or a single instance (sinks) on worker 0.
    pub single: bool,
    /// Schema of the late side output (a window's input), if the node has one.
    pub late_schema: Option<Arc<Schema>>,
}

impl Node {
    pub fn schema_for(&self, late: bool) -> Arc<Schema> {
        match (&self.late_schema, late) {
            (Some(s), true) => s.clone(),
            _ => self.schema.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Input {
    pub from: NodeId,
    /// Read the upstream's late side output instead of its main output.
    pub late: bool,
    pub route: Route,
}

/// How records cross from an upstream instance to this node's instances.
#[derive(Debug, Clone)]
pub enum Route {
    /// Same worker.
    Forward,
    /// All to the single instance.
    Global,
    /// To the worker that owns the key group of these expressions' values.
    Key(Arc<Vec<Compiled>>),
}

#[derive(Debug)]
pub enum NodeKind {
    Source(SourceSpec),
    Filter(Arc<Compiled>),
    Map(Arc<Vec<Compiled>>),
    /// Expression to split and the separator.
    Split(Arc<(Compiled, String)>),
    Window(Arc<WindowAggSpec>),
    Top(Arc<TopSpec>),
    Join(Arc<JoinSpec>),
    /// A named late-data output of a window step; it forwards what its window sends it.
    Late,
    Sink(SinkSpec),
}

#[derive(Debug)]
pub struct WindowAggSpec {
    pub key: Vec<Compiled>,
    pub window: WindowSpec,
    pub aggs: Vec<AggSpec>,
}

#[derive(Debug)]
pub struct TopSpec {
    pub n: usize,
    /// Sort expressions and whether each is descending.
    pub order: Vec<(Compiled, bool)>,
    pub start_field: usize,
    pub end_field: usize,
}

#[derive(Debug)]
pub struct JoinSpec {
    pub left_key: Compiled,
    pub right_key: Compiled,
    pub window: WindowSpec,
    pub select: Vec<Compiled>,
}

impl Graph {
    /// Whether some node reads `id`'s late side output.
    pub fn has_late_consumer(&self, id: NodeId) -> bool {
        self.nodes
            .iter()
            .any(|n| n.inputs.iter().any(|i| i.from == id && i.late))
    }

    /// The first window step's spec, input schema (a narrowed source's holds only the fields
    /// the job reads) and output schema: what a window operator is built from outside a
    /// running job (unit tests, the window benchmarks).
    pub fn first_window(&self) -> Option<(Arc<WindowAggSpec>, Arc<Schema>, Arc<Schema>)> {
        self.nodes.iter().find_map(|n| match &n.kind {
            NodeKind::Window(w) => {
                let input = n.inputs.first()?;
                let from = self.nodes[input.from].schema_for(input.late);
                Some((w.clone(), from, n.schema.clone()))
            }
            _ => None,
        })
    }

    /// Nodes that read `id`, with the port they read it on.
    pub fn consumers(&self, id: NodeId) -> Vec<(NodeId, usize)> {
        let mut out = Vec::new();
        for (n, node) in self.nodes.iter().enumerate() {
            for (port, input) in node.inputs.iter().enumerate() {
                if input.from == id {
                    out.push((n, port));
                }
            }
        }
        out
    }
}
