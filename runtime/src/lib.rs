//! Eddy's stream processing runtime.
//!
//! The data path reads in module order: a [`plan`] is validated into a graph whose
//! [`connectors`] produce [`record`] batches, which flow through [`operators`] (filters, maps,
//! keyed windows, joins) across the [`exchange`] to sinks; [`job`] runs it all, with
//! expressions compiled by [`expr`].

pub mod admin;
pub mod checkpoint;
pub mod connectors;
pub mod exchange;
pub mod expr;
pub mod job;
pub mod metrics;
pub mod objstore;
pub mod operators;
pub mod plan;
pub mod record;
pub mod state;

use std::sync::Arc;

/// Why [`run_graph`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Plan(#[from] plan::PlanErrors),
    #[error("{0}")]
    Job(#[from] job::launch::LaunchError),
}

/// Runs an already validated graph to completion with `parallelism` workers in this process,
/// without checkpoints (keyed state still lives in RocksDB under a temporary directory).
pub async fn run_graph(
    graph: job::graph::Graph,
    parallelism: usize,
    metrics: Arc<job::progress::Metrics>,
) -> Result<(), RunError> {
    let graph = Arc::new(graph);
    let opts = job::launch::LaunchOptions {
        run: job::RunOptions {
            parallelism,
            dead_letter: graph.dead_letter.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    job::launch::launch(graph, opts, metrics, Arc::new(metrics::JobMetrics::new())).await?;
    Ok(())
}
