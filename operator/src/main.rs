//! `eddy-operator`: the controller that turns StreamJob resources into runtime StatefulSets.
//! The reconciler lands with the operator issue; today the binary reports its version and the
//! CRD it serves so images and charts can be built and smoke-tested.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "eddy-operator",
    version,
    about = "Eddy's Kubernetes operator (reconciler not implemented yet)"
)]
struct Cli {
    /// Print the StreamJob CustomResourceDefinition as YAML and exit.
    #[arg(long)]
    print_crd: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_crd {
        print!("{}", eddy_crds::crd_yaml()?);
        return Ok(());
    }
    println!("eddy-operator {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
