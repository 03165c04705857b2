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
        /// Threads running the job's tasks, each worker's on one thread (default: the
        /// parallelism, at most the number of CPUs). Kafka flushes, RocksDB compactions, the
        /// checkpoint coordinator and the admin API run on threads of their own.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
        /// Pin each of those threads to a CPU of its own (default `off`): `auto` does when they
        /// are as many as the CPUs this process may use (two or more) and no CPU quota (a
        /// container's CPU limit) shares those with others; `on` whenever there is a CPU for
        /// each. For machines or pods that own their CPUs; on a shared host it did not pay.
        #[arg(long, value_enum, default_value_t, env = "EDDY_PIN_LANES")]
        pin_lanes: eddy::job::Pinning,
        /// No progress lines on stderr.
        #[arg(short, long)]
        quiet: bool,
        /// Seconds between progress lines.
        #[arg(long, default_value_t = 2.0)]
        progress_interval: f64,
        #[command(flatten)]
        checkpoints: CheckpointArgs,
    },
    /// Take a savepoint of a running job (prints its id, or its path with --wait).
    Savepoint(eddy::admin::cli::SavepointArgs),
    /// Stop a running job, optionally after a final savepoint (prints its path).
    Stop(eddy::admin::cli::StopArgs),
    /// Check a plan and print every problem with its field path; exits 1 if there are any.
    Validate {
        /// The job plan (YAML).
        plan: String,
    },
}

#[derive(clap::Args, Clone)]
struct CheckpointArgs {
    /// Keep checkpoints here (a directory or file:// URL); with it, a restart resumes from the
    /// latest complete checkpoint and file sinks write exactly once.
    #[arg(long)]
    checkpoint_dir: Option<String>,
    /// Time between checkpoints, like 2s or 1m (needs --checkpoint-dir).
    #[arg(long, value_parser = parse_duration)]
    checkpoint_interval: Option<std::time::Duration>,
    /// A checkpoint fails (and is retried at the next interval) if it takes longer.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    checkpoint_timeout: std::time::Duration,
    /// Completed checkpoints to keep.
    #[arg(long, default_value_t = 3)]
    checkpoints_retained: usize,
    /// Start from this checkpoint or savepoint directory (…/checkpoints/chk-N or …/savepoints/sp-…).
    #[arg(long)]
    restore: Option<String>,
    /// Job name in the checkpoint layout (default: the plan file's name).
    #[arg(long)]
    job: Option<String>,
    /// Namespace in the checkpoint layout.
    #[arg(long, default_value = "local")]
    namespace: String,
    /// Serve the admin API (/healthz, /metrics, /v1/savepoints, /v1/stop) here, like 127.0.0.1:9249.
    #[arg(long, env = "EDDY_ADMIN_ADDR")]
    admin_addr: Option<String>,
    /// Local directory for keyed state (RocksDB); default: a temporary directory.
    #[arg(long)]
    state_dir: Option<std::path::PathBuf>,
    /// Window entries each operator instance keeps in memory before spilling to RocksDB.
    #[arg(long, default_value_t = 2_000_000)]
    state_cache_entries: usize,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    eddy::plan::duration::parse_duration(s)
        .map(|ms| std::time::Duration::from_millis(ms.max(1) as u64))
        .map_err(|e| format!("{e} (like 500ms, 2s or 1m)"))
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
        Command::Savepoint(a) => eddy::admin::cli::savepoint(a),
        Command::Stop(a) => eddy::admin::cli::stop(a),
        Command::Run {
            plan,
            parallelism,
            threads,
            pin_lanes,
            quiet,
            progress_interval,
            checkpoints,
        } => match run(
            &plan,
            parallelism as usize,
            (threads.map(|t| t as usize), pin_lanes),
            quiet,
            progress_interval,
            checkpoints,
        ) {
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

fn launch_options(
    path: &str,
    graph: &eddy::job::graph::Graph,
    parallelism: usize,
    (threads, pinning): (Option<usize>, eddy::job::Pinning),
    c: CheckpointArgs,
) -> anyhow::Result<eddy::job::launch::LaunchOptions> {
    use eddy::job::launch::{CheckpointConfig, LaunchOptions};
    if c.checkpoint_interval.is_some() && c.checkpoint_dir.is_none() {
        anyhow::bail!("--checkpoint-interval needs --checkpoint-dir: where should checkpoints go?");
    }
    let job = job_name(path, &c.job);
    Ok(LaunchOptions {
        run: eddy::job::RunOptions {
            parallelism,
            dead_letter: graph.dead_letter.clone(),
            threads,
            pinning,
            ..Default::default()
        },
        checkpoints: c.checkpoint_dir.map(|dir| CheckpointConfig {
            dir,
            namespace: c.namespace,
            job,
            interval: c.checkpoint_interval,
            timeout: c.checkpoint_timeout,
            retain: c.checkpoints_retained,
        }),
        restore: c.restore,
        state_dir: c.state_dir,
        state: eddy::state::StateOptions {
            cache_entries: c.state_cache_entries.max(1),
            ..Default::default()
        },
        admin: c.admin_addr,
    })
}

/// The job's name: `--job`, else the plan file's stem.
fn job_name(path: &str, job: &Option<String>) -> String {
    job.clone().unwrap_or_else(|| {
        std::path::Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into())
    })
}

fn run(
    path: &str,
    parallelism: usize,
    threads: (Option<usize>, eddy::job::Pinning),
    quiet: bool,
    every: f64,
    checkpoints: CheckpointArgs,
) -> anyhow::Result<ExitCode> {
    let mut graph = match eddy::plan::compile_file(path) {
        Ok((_, g)) => g,
        Err(errors) => {
            eprint!("{path}: {errors}");
            eprintln!("fix the fields above and run `eddy validate {path}` again");
            return Ok(ExitCode::FAILURE);
        }
    };
    graph.name_job(&checkpoints.namespace, &job_name(path, &checkpoints.job));
    // The job's tasks run on threads of their own (`RunOptions::threads`); this one runs the
    // coordinator, the admin API and progress lines.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::default());
        let reporter = (!quiet)
            .then(|| Reporter::start(metrics.clone(), Duration::from_secs_f64(every.max(0.1))));
        let opts = launch_options(path, &graph, parallelism, threads, checkpoints)?;
        let job_metrics = Arc::new(eddy::metrics::JobMetrics::new());
        let launched =
            eddy::job::launch::launch(Arc::new(graph), opts, metrics.clone(), job_metrics);
        let result = tokio::select! {
            r = launched => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("eddy: interrupted");
                return Ok(ExitCode::from(130));
            }
        };
        if let Some(r) = reporter {
            r.finish().await;
        }
        match result {
            Ok(eddy::job::launch::Ended::AlreadyFinished) => Ok(ExitCode::SUCCESS),
            Ok(eddy::job::launch::Ended::Stopped) => {
                eprintln!("eddy: stopped");
                Ok(ExitCode::SUCCESS)
            }
            Ok(eddy::job::launch::Ended::Finished) => {
                if !quiet {
                    let s = metrics.snapshot();
                    let busy = s.busy_s.map_or_else(String::new, |b| {
                        format!(", {b:.3} s from the first record to the last result")
                    });
                    eprintln!(
                        "eddy: done: {}{busy}",
                        eddy::job::progress::line(&s, 0.0).replace(", 0 rec/s", "")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e.into()),
        }
    })
}
