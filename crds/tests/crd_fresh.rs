//! The committed CRD must be what the types generate; run `make crds` after changing them.

#[test]
fn committed_crd_matches_the_types() {
    let generated = eddy_crds::crd_yaml().expect("render CRD");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/streamjob.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/streamjob.yaml is stale: run `make crds` and commit the result"
    );
}
