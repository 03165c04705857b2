//! Checkpoints on a real S3-compatible server (Versity S3 Gateway, started by
//! `e2e/services.sh up`): crashes restored from S3, an S3 outage during a run (checkpoints fail
//! and are retried, processing goes on, a later crash restores from the first checkpoint after
//! the outage), and wrong credentials or a missing bucket refused at start by name.
//!
//! One test function, because stopping the S3 server affects every test using it.

use std::collections::HashMap;
mod common;

use common::{service, services, stderr_lines as lines, wait_line};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const PLAN: &str = r#"
sources:
  - name: clicks
    generator: { seed: 5, count: 30000, keys: 200, eventsPerSecond: 500, maxDisorder: 1s, rate: RATE }
    eventTime: { field: ts, maxOutOfOrderness: 2s }
steps:
  - name: per_user
    from: clicks
    keyBy: event.user
    window: { tumbling: 5s }
    aggregate: { clicks: "count()", spent: "sum(event.amount)" }
sinks:
  - { name: out, from: per_user, file: { path: OUT } }
"#;

struct Job {
    dir: tempfile::TempDir,
    plan: PathBuf,
    out: PathBuf,
    env: HashMap<String, String>,
    ckpt: String,
}

impl Job {
    fn new(env: &HashMap<String, String>, name: &str, rate: u64) -> Job {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.jsonl");
        let plan = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &plan,
            PLAN.replace("RATE", &rate.to_string())
                .replace("OUT", out.to_str().expect("utf8")),
        )
        .expect("plan");
        let unique = format!("{name}-{}-{}", std::process::id(), common::now_ms());
        Job {
            dir,
            plan,
            out,
            env: env.clone(),
            ckpt: format!("s3://{}/tests/{unique}", env["S3_BUCKET"]),
        }
    }

    fn cmd(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_eddy"));
        c.arg("run")
            .arg(&self.plan)
            .args(["--quiet", "--checkpoint-dir", &self.ckpt])
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(extra)
            .env("EDDY_LOG", "eddy=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            if k.starts_with("AWS_") {
                c.env(k, v);
            }
        }
        c
    }

    fn output(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

fn finish(mut c: Command) -> Vec<String> {
    let out = c.output().expect("eddy");
    let log: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(out.status.success(), "eddy failed: {}", log.join("\n"));
    log
}

#[test]
fn checkpoints_on_s3_survive_crashes_and_an_outage() {
    let env = services();
    let reference = Job::new(&env, "reference", 1_000_000);
    finish(reference.cmd(&[]));
    let expected = reference.output();
    assert!(expected.len() > 100);

    // Crashes, restored from S3.
    let job = Job::new(&env, "crash", 4_000);
    let args = ["-p", "2", "--checkpoint-interval", "300ms"];
    for i in 0..3 {
        let mut child = job.cmd(&args).spawn().expect("spawn");
        let rx = lines(&mut child);
        assert!(
            wait_line(&rx, "checkpoint completed", Duration::from_secs(30)).is_some(),
            "run {i}: no checkpoint completed on S3"
        );
        std::thread::sleep(Duration::from_millis(200 * i));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let log = finish(job.cmd(&args));
    assert!(
        log.iter().any(|l| l.contains("restoring from s3://")),
        "{log:?}"
    );
    assert_eq!(job.output(), expected);

    // An outage: checkpoints fail while S3 is down, processing goes on, the first checkpoint
    // after it completes, and a crash then restores from S3 with nothing lost.
    let job = Job::new(&env, "outage", 2_500);
    let args = [
        "--checkpoint-interval",
        "300ms",
        "--checkpoint-timeout",
        "5s",
    ];
    let mut child = job.cmd(&args).spawn().expect("spawn");
    let rx = lines(&mut child);
    assert!(wait_line(&rx, "checkpoint completed", Duration::from_secs(30)).is_some());
    service("stop-s3");
    let failed = wait_line(
        &rx,
        "failed; the next interval tries again",
        Duration::from_secs(60),
    )
    .is_some();
    service("start-s3");
    assert!(failed, "no checkpoint failed while S3 was down");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the job stopped during the outage"
    );
    assert!(
        wait_line(&rx, "checkpoint completed", Duration::from_secs(60)).is_some(),
        "no checkpoint completed after S3 came back"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let log = finish(job.cmd(&args));
    assert!(
        log.iter().any(|l| l.contains("restoring from s3://")),
        "{log:?}"
    );
    assert_eq!(job.output(), expected);

    // Wrong credentials and a missing bucket: refused at start, naming what to check.
    let job = Job::new(&env, "badcreds", 1_000_000);
    let out = job
        .cmd(&[])
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .output()
        .expect("eddy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("SignatureDoesNotMatch") && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    let mut nobucket = Job::new(&env, "nobucket", 1_000_000);
    nobucket.ckpt = "s3://no-such-bucket/x".into();
    let out = nobucket.cmd(&[]).output().expect("eddy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("NoSuchBucket") && err.contains("--checkpoint-dir"),
        "{err}"
    );
}
