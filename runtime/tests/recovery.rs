//! Crash recovery as a user meets it: `eddy run` as a child process, killed with SIGKILL at
//! random moments (one of them during a checkpoint upload) and started again with the same
//! command; savepoints taken through the admin API and restored at other parallelisms; damaged
//! checkpoints skipped. Each time the committed output must equal an uninterrupted run's,
//! record for record.

mod common;

use common::{finish, next, start_admin, stderr_lines, stop_with_savepoint, wait_line};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PLAN: &str = r#"
sources:
  - name: clicks
    generator: { seed: 11, count: 40000, keys: 300, eventsPerSecond: 500, maxDisorder: 2s, rate: RATE }
    eventTime: { field: ts, maxOutOfOrderness: 3s }
steps:
  - name: per_user
    from: clicks
    keyBy: event.user
    window: { tumbling: 5s }
    aggregate: { clicks: "count()", spent: "sum(event.amount)", pages: "count_distinct(event.page)" }
  - name: sessions
    from: clicks
    keyBy: event.user
    window: { session: { gap: 20s } }
    aggregate: { clicks: "count()", first_page: "first(event.page)", last_page: "last(event.page)" }
sinks:
  - { name: windows, from: per_user, file: { path: OUT/windows.jsonl } }
  - { name: user_sessions, from: sessions, file: { path: OUT/sessions.jsonl } }
"#;

use common::CheckpointedJob as Job;

fn new_job(rate: u64) -> Job {
    Job::write(|out| PLAN.replace("RATE", &rate.to_string()).replace("OUT", out))
}

/// The committed output of both sinks, sorted together.
fn output(job: &Job) -> Vec<String> {
    let mut all = job.sorted_lines("out/windows.jsonl");
    all.extend(job.sorted_lines("out/sessions.jsonl"));
    all.sort();
    all
}

/// The reference: one uninterrupted run.
fn reference() -> Vec<String> {
    let job = new_job(1_000_000);
    finish(job.cmd(&["-p", "2"]).spawn().expect("spawn"));
    let out = output(&job);
    assert!(out.len() > 300, "reference too small: {}", out.len());
    out
}

#[test]
fn killed_with_sigkill_again_and_again_it_loses_and_repeats_nothing() {
    let expected = reference();
    // About 8 s of input at 5,000 records/s, checkpoints every 300 ms.
    let job = new_job(5_000);
    let args = ["-p", "2", "--checkpoint-interval", "300ms"];
    let mut seed = 42;
    let mut kills = 0;
    while kills < 6 {
        let mut cmd = job.cmd(&args);
        if kills == 2 {
            // Slow uploads down, so this kill lands in the middle of one.
            cmd.env("EDDY_TEST_UPLOAD_DELAY_MS", "400");
        }
        let mut child = cmd.spawn().expect("spawn");
        let rx = stderr_lines(&mut child);
        if kills == 2 {
            assert!(
                wait_line(&rx, "uploading checkpoint", Duration::from_secs(30)).is_some(),
                "no checkpoint upload started"
            );
            std::thread::sleep(Duration::from_millis(150));
        } else {
            std::thread::sleep(Duration::from_millis(400 + next(&mut seed) % 1200));
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills += 1;
    }
    assert!(kills >= 5, "the job finished after only {kills} kills");
    let log = finish(job.cmd(&args).spawn().expect("spawn"));
    assert!(
        log.iter().any(|l| l.contains("restoring from")),
        "the last run did not restore: {log:?}"
    );
    assert_eq!(output(&job), expected);
    // Running it again finds the job finished and leaves the output alone.
    let log = finish(job.cmd(&args).spawn().expect("spawn"));
    assert!(
        log.iter().any(|l| l.contains("already finished")),
        "{log:?}"
    );
    assert_eq!(output(&job), expected);
}

#[test]
fn savepoint_restores_at_parallelism_1_then_3_then_2_with_identical_results() {
    let expected = reference();
    let job = new_job(8_000);
    let mut restore: Option<String> = None;
    for p in ["1", "3"] {
        let mut args = vec!["-p", p];
        if let Some(r) = &restore {
            args.extend(["--restore", r.as_str()]);
        }
        let (mut child, _rx, addr) = start_admin(job.cmd(&args));
        std::thread::sleep(Duration::from_millis(1500));
        let path = stop_with_savepoint(&addr);
        assert!(Path::new(&path).join("_metadata.json").is_file(), "{path}");
        assert!(path.contains("/savepoints/sp-"), "{path}");
        let status = child.wait().expect("wait");
        assert!(status.success());
        restore = Some(path);
    }
    let r = restore.expect("a savepoint");
    let log = finish(
        job.cmd(&["-p", "2", "--restore", &r])
            .spawn()
            .expect("spawn"),
    );
    assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:?}");
    assert_eq!(output(&job), expected);
}

#[test]
fn damaged_checkpoints_are_skipped_for_the_previous_complete_one() {
    let expected = reference();
    let job = new_job(4_000);
    let args = [
        "-p",
        "2",
        "--checkpoint-interval",
        "200ms",
        "--checkpoints-retained",
        "20",
    ];
    let mut child = job.cmd(&args).spawn().expect("spawn");
    let rx = stderr_lines(&mut child);
    for _ in 0..4 {
        assert!(
            wait_line(&rx, "checkpoint completed", Duration::from_secs(30)).is_some(),
            "checkpoints do not complete"
        );
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let root = job.path("ckpt/local/job/checkpoints");
    let mut chks: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("checkpoints")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("_metadata.json").is_file())
        .collect();
    chks.sort();
    assert!(chks.len() >= 3, "{chks:?}");
    let newest = chks.pop().expect("newest");
    let second = chks.pop().expect("second");
    let good = chks.pop().expect("third");
    // Half-written: no metadata. Damaged: a state file cut short.
    std::fs::remove_file(newest.join("_metadata.json")).expect("remove metadata");
    let victim = std::fs::read_dir(&second)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .flat_map(|d| {
            std::fs::read_dir(d)
                .expect("dir")
                .map(|e| e.expect("entry").path())
        })
        .find(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("MANIFEST"))
        })
        .expect("a state file of the second newest checkpoint");
    let len = std::fs::metadata(&victim).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    let log = finish(job.cmd(&args).spawn().expect("spawn"));
    let good_name = good
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert!(
        log.iter()
            .any(|l| l.contains("restoring from") && l.contains(&good_name)),
        "did not restore from {good_name}: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("skipping an incomplete or damaged checkpoint")),
        "no warning: {log:?}"
    );
    assert_eq!(output(&job), expected);
}
