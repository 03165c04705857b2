//! The committed CRD must be what the types generate; run `make crds` after changing them.

#[test]
fn committed_crd_matches_the_types() {
    let generated = eddy_crds::crd_yaml().expect("render CRD");
    // Compiled in, so the test is rebuilt when the file changes; read at run time from
    // `CARGO_MANIFEST_DIR`, a test binary that cargo reused from a checkout elsewhere (a
    // target directory shared with CI's clone) read that checkout's copy, or none.
    let committed = include_str!("../streamjob.yaml");
    assert!(
        committed == generated,
        "crds/streamjob.yaml is stale: run `make crds` and commit the result"
    );
}
