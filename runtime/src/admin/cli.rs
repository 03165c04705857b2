//! `eddy savepoint` and `eddy stop`: the admin API from a shell.
//!
//! Data goes to stdout (a savepoint's id, or its path once complete) so scripts can capture
//! it (`SP=$(eddy savepoint --wait)`); what is happening goes to stderr.

use super::client::{AdminClient, ClientError};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Where `--admin` points when not given: the admin port on this machine (`kubectl
/// port-forward pod/<job>-0 9249` makes a pod's reachable there).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9249";

/// `eddy savepoint`: take a savepoint of a running job.
#[derive(Debug, Clone, clap::Args)]
pub struct SavepointArgs {
    /// Admin API of the job's pod 0 (host:port).
    #[arg(long, env = "EDDY_ADMIN", default_value = DEFAULT_ADMIN)]
    pub admin: String,
    /// Wait until the savepoint completes and print its path instead of its id.
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait with --wait before giving up (the savepoint may still complete).
    #[arg(long, default_value_t = 300, requires = "wait")]
    pub timeout: u64,
}

/// `eddy stop`: stop a running job gracefully.
#[derive(Debug, Clone, clap::Args)]
pub struct StopArgs {
    /// Admin API of the job's pod 0 (host:port).
    #[arg(long, env = "EDDY_ADMIN", default_value = DEFAULT_ADMIN)]
    pub admin: String,
    /// Take a final savepoint before stopping, wait for it and print its path (to restart
    /// from, e.g. with another parallelism).
    #[arg(long)]
    pub savepoint: bool,
    /// With --savepoint: print the savepoint's id and return without waiting for its path.
    #[arg(long, requires = "savepoint")]
    pub no_wait: bool,
    /// Seconds to wait for the final savepoint before giving up.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// Runs `eddy savepoint`, writing its result to `out`.
pub async fn run_savepoint(args: &SavepointArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let client = AdminClient::new(&args.admin)?;
    let id = client.trigger_savepoint().await?;
    if !args.wait {
        eprintln!("eddy: savepoint {id} triggered");
        writeln!(out, "{id}")?;
        return Ok(());
    }
    eprintln!(
        "eddy: savepoint {id} triggered, waiting up to {}s",
        args.timeout
    );
    let path = client
        .wait_savepoint(id, Duration::from_secs(args.timeout))
        .await?;
    eprintln!("eddy: savepoint {id} completed");
    writeln!(out, "{path}")?;
    Ok(())
}

/// Runs `eddy stop`, writing the final savepoint's path (or id with `--no-wait`) to `out`.
pub async fn run_stop(args: &StopArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let client = AdminClient::new(&args.admin)?;
    let Some(id) = client.stop(args.savepoint).await? else {
        eprintln!("eddy: the job is stopping");
        return Ok(());
    };
    if args.no_wait {
        eprintln!("eddy: the job is stopping after savepoint {id}");
        writeln!(out, "{id}")?;
        return Ok(());
    }
    eprintln!(
        "eddy: the job is stopping after savepoint {id}; waiting up to {}s for it",
        args.timeout
    );
    match client
        .wait_savepoint(id, Duration::from_secs(args.timeout))
        .await
    {
        Ok(path) => {
            eprintln!("eddy: savepoint {id} completed");
            writeln!(out, "{path}")?;
            Ok(())
        }
        // The job may exit before we read the final status; the savepoint is in the logs.
        Err(ClientError::Connect { admin, reason }) => Err(CliError::Gone { id, admin, reason }),
        Err(e) => Err(e.into()),
    }
}

/// Why `eddy savepoint` or `eddy stop` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("writing the result: {0}")]
    Output(#[from] std::io::Error),
    #[error(
        "the job stopped serving at {admin} before savepoint {id}'s path could be read ({reason}); \
         its logs name the path (\"savepoint completed\")"
    )]
    Gone {
        id: u64,
        admin: String,
        reason: String,
    },
}

/// `eddy savepoint` for `main`: runs on a small runtime of its own, reports errors on stderr.
pub fn savepoint(args: SavepointArgs) -> ExitCode {
    block_on(async move { run_savepoint(&args, &mut std::io::stdout().lock()).await })
}

/// `eddy stop` for `main`: runs on a small runtime of its own, reports errors on stderr.
pub fn stop(args: StopArgs) -> ExitCode {
    block_on(async move { run_stop(&args, &mut std::io::stdout().lock()).await })
}

fn block_on(f: impl Future<Output = Result<(), CliError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
