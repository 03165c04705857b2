//! A big JSON-lines file, read in blocks that the workers take on demand, through crashes:
//! `eddy run` killed with SIGKILL at random moments and started again at another parallelism
//! each time. The committed output must equal an uninterrupted run's, record for record.

mod common;

use common::{finish, next};
use std::io::Write as _;
use std::time::Duration;

const PLAN: &str = r#"
sources:
  - name: clicks
    file: { path: INPUT, schema: { user: string, ts: int, pad: string }, rate: RATE }
    eventTime: { field: ts, maxOutOfOrderness: 1s }
steps:
  - name: per_user
    from: clicks
    keyBy: event.user
    window: { tumbling: 2s }
    aggregate: { clicks: "count()", last: "max(event.ts)" }
sinks:
  - { name: counts, from: per_user, file: { path: OUT/counts.jsonl } }
"#;

/// A file past the 16 MiB from which files are read in blocks: 200,000 lines in time order,
/// 1,000 users.
fn write_input(path: &std::path::Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let pad = "p".repeat(60);
    for i in 0..200_000u64 {
        let user = (i * 7_919) % 1_000;
        writeln!(
            f,
            r#"{{"user":"u{user}","ts":{},"pad":"{pad}"}}"#,
            1_700_000_000_000 + i * 10
        )
        .expect("write");
    }
    f.flush().expect("flush");
    let len = std::fs::metadata(path).expect("meta").len();
    assert!(
        len > 16 << 20,
        "input of {len} bytes is not split into blocks"
    );
}

fn new_job(input: &std::path::Path, rate: u64) -> common::CheckpointedJob {
    let input = input.to_str().expect("utf8").to_string();
    common::CheckpointedJob::write(|out| {
        PLAN.replace("INPUT", &input)
            .replace("RATE", &rate.to_string())
            .replace("OUT", out)
    })
}

#[test]
fn a_big_file_killed_with_sigkill_and_rescaled_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("clicks.jsonl");
    write_input(&input);
    let reference = new_job(&input, 100_000_000);
    finish(reference.cmd(&["-p", "1"]).spawn().expect("spawn"));
    let expected = reference.sorted_lines("out/counts.jsonl");
    assert!(
        expected.len() > 10_000,
        "reference too small: {}",
        expected.len()
    );

    // About 4 s of input at 50,000 records/s, checkpoints every 200 ms.
    let job = new_job(&input, 50_000);
    let mut seed = 7;
    let mut kills = 0;
    for p in ["2", "3", "1", "2", "3"] {
        let args = ["-p", p, "--checkpoint-interval", "200ms"];
        let mut child = job.cmd(&args).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(500 + next(&mut seed) % 500));
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills += 1;
    }
    assert!(kills >= 4, "the job finished after only {kills} kills");
    let log = finish(
        job.cmd(&["-p", "2", "--checkpoint-interval", "200ms"])
            .spawn()
            .expect("spawn"),
    );
    assert!(
        log.iter().any(|l| l.contains("restoring from")),
        "the last run did not restore: {log:?}"
    );
    assert_eq!(job.sorted_lines("out/counts.jsonl"), expected);
}
