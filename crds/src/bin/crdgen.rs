//! Writes the StreamJob CRD to stdout; `make crds` redirects it to `crds/streamjob.yaml`.

fn main() {
    match eddy_crds::crd_yaml() {
        Ok(yaml) => print!("{yaml}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
