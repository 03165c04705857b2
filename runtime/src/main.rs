//! `eddy`: run a streaming job locally, or validate its plan.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use eddy::job::progress::{Metrics, Reporter};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "Eddy: a stream processor. Runs a job plan (sources, CEL filters and maps, keyed windows, joins, sinks).",
    long_about = "Eddy runs streaming jobs described in YAML.\n\n\
                  Try:  eddy run examples/clicks.yaml\n      \
                  eddy validate my-job.yaml\n\n\
                  The plan format is described in README.md (\"The job plan\")."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job plan in this process until its sources end (or Ctrl-C).
    ///
    /// Results go to the plan's sinks (stdout sinks print JSON lines); progress goes to stderr.
    Run {
        /// The job plan (YAML).
        plan: String,
        /// Number of workers; records after `keyBy` go to the worker owning their key group.
        #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
        parallelism: u32,
        /// No progress lines on stderr.
        #[arg(short, long)]
        quiet: bool,
        /// Seconds between progress lines.
        #[arg(long, default_value_t = 2.0)]
        progress_interval: f64,
    },
    /// Check a plan and print every problem with its field path; exits 1 if there are any.
    Validate {
        /// The job plan (YAML).
        plan: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Validate { plan } => validate(&plan),
        Command::Run {
            plan,
            parallelism,
            quiet,
            progress_interval,
        } => match run(&plan, parallelism as usize, quiet, progress_interval) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                eprintln!(
                    "hint: run `eddy validate {plan}` to check the plan, or set EDDY_LOG=debug for details"
                );
                ExitCode::FAILURE
            }
        },
    }
}

fn validate(path: &str) -> ExitCode {
    match eddy::plan::compile_file(path).map(|_| ()) {
        Ok(()) => {
            println!("{path}: ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{path}: {errors}");
            eprintln!("fix the fields above and run `eddy validate {path}` again");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str, parallelism: usize, quiet: bool, every: f64) -> anyhow::Result<ExitCode> {
    let graph = match eddy::plan::compile_file(path) {
        Ok((_, g)) => g,
        Err(errors) => {
            eprint!("{path}: {errors}");
            eprintln!("fix the fields above and run `eddy validate {path}` again");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::default());
        let reporter = (!quiet)
            .then(|| Reporter::start(metrics.clone(), Duration::from_secs_f64(every.max(0.1))));
        let result = tokio::select! {
            r = eddy::run_graph(graph, parallelism, metrics.clone()) => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("eddy: interrupted");
                return Ok(ExitCode::from(130));
            }
        };
        if let Some(r) = reporter {
            r.finish().await;
        }
        match result {
            Ok(()) => {
                if !quiet {
                    let s = metrics.snapshot();
                    eprintln!(
                        "eddy: done: {}",
                        eddy::job::progress::line(&s, 0.0).replace(", 0 rec/s", "")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(eddy::RunError::Plan(errors)) => {
                eprint!("{path}: {errors}");
                eprintln!("fix the fields above and run `eddy validate {path}` again");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        }
    })
}
