//! The object source against a local directory through object_store (the S3 path is the same
//! code; `tests/s3_files.rs` runs it against a real S3 server).

use super::*;
use crate::record::{Type, Value};
use std::time::Instant;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new([("n", Type::Int)]))
}

fn write(dir: &std::path::Path, name: &str, from: i64, to: i64) {
    let mut s = String::new();
    for n in from..to {
        s.push_str(&format!("{{\"n\":{n}}}\n"));
    }
    std::fs::write(dir.join(name), s).unwrap();
}

fn source(dir: &std::path::Path, watch: Option<Duration>, w: usize, p: usize) -> ObjectFileSource {
    let config = ObjectSourceConfig {
        dir: ObjectDir::local(dir).unwrap(),
        watch,
    };
    ObjectFileSource::new(config, schema(), w, p, TimeField::Processing, 0, None)
}

/// Polls until `until` holds for the values read so far, or the source ends; a deadline
/// fails the test instead of hanging.
async fn read(
    s: &mut ObjectFileSource,
    out: &mut Emit,
    got: &mut Vec<i64>,
    max: usize,
    until: impl Fn(&[i64]) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let more = s.poll(out, max).unwrap();
        for b in out.take() {
            for i in 0..b.len() {
                if let Value::Int(n) = b.row(i)[0] {
                    got.push(n);
                }
            }
        }
        if !more || until(got) {
            return more;
        }
        assert!(Instant::now() < deadline, "timed out; read {got:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn emit() -> Emit {
    Emit::new(Arc::from("src"), schema())
}

#[tokio::test]
async fn reads_split_across_workers_and_resumes_at_other_parallelism() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "a.jsonl", 0, 100);
    write(tmp.path(), "b.json", 100, 250);
    write(tmp.path(), "c.jsonl", 250, 300);
    std::fs::create_dir(tmp.path().join("_staging")).unwrap();
    write(&tmp.path().join("_staging"), "x.jsonl", 1000, 1010);
    std::fs::write(tmp.path().join("notes.txt"), "not data\n").unwrap();
    // Run 1 with two workers, each stopped part-way; a checkpoint of their positions.
    let mut got = Vec::new();
    let mut parts = Vec::new();
    for (w, stop) in [(0usize, 130usize), (1, 40)] {
        let mut s = source(tmp.path(), None, w, 2);
        let mut out = emit();
        let mut mine = Vec::new();
        read(&mut s, &mut out, &mut mine, 10, |g| g.len() >= stop).await;
        got.extend(mine);
        parts.push(s.position());
    }
    // Run 2 with three workers restores the merged positions.
    for w in 0..3 {
        let mut s = source(tmp.path(), None, w, 3);
        s.resume(&parts).unwrap();
        let mut out = emit();
        let more = read(&mut s, &mut out, &mut got, 64, |_| false).await;
        assert!(!more);
    }
    got.sort_unstable();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
}

#[tokio::test]
async fn dead_letters_name_object_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.jsonl"), "{\"n\":1}\nnot json\n{\"n\":2}").unwrap();
    let mut s = source(tmp.path(), None, 0, 1);
    let mut out = emit();
    let mut got = Vec::new();
    read(&mut s, &mut out, &mut got, 64, |_| false).await;
    assert_eq!(got, vec![1, 2], "a last line without newline is read too");
    assert_eq!(out.dead.len(), 1);
    let reason = &out.dead[0].reason;
    assert!(reason.contains("a.jsonl:2:"), "{reason}");
    let pos = s.position();
    let name = format!("{}/a.jsonl", tmp.path().display());
    assert_eq!(pos["files"][&name][1], 3, "{pos}");
}

#[tokio::test]
async fn watch_picks_up_new_objects_once_and_goes_idle() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "1.jsonl", 0, 10);
    let mut s = source(tmp.path(), Some(Duration::from_millis(20)), 0, 1);
    let mut out = emit();
    let mut got = Vec::new();
    assert!(read(&mut s, &mut out, &mut got, 64, |g| g.len() >= 10).await);
    // Nothing new: the source reports idle so it does not hold other workers' watermark.
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.watermark() != Some(crate::exchange::IDLE) {
        assert!(Instant::now() < deadline, "never idle");
        s.poll(&mut out, 64).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    write(tmp.path(), "0.jsonl", 10, 15); // sorts first: must not disturb anything
    write(tmp.path(), "2.jsonl", 15, 30);
    assert!(read(&mut s, &mut out, &mut got, 64, |g| g.len() >= 30).await);
    // A restored source skips the finished objects.
    let pos = s.position();
    write(tmp.path(), "3.jsonl", 30, 33);
    let mut s = source(tmp.path(), Some(Duration::from_millis(20)), 0, 1);
    s.resume(&[pos]).unwrap();
    assert!(read(&mut s, &mut out, &mut got, 64, |g| g.len() >= 33).await);
    got.sort_unstable();
    assert_eq!(got, (0..33).collect::<Vec<_>>());
}
