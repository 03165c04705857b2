//! JSON-lines files on a real S3-compatible server (Versity S3 Gateway, started by
//! `e2e/services.sh up`): a job reads objects under a prefix and writes part files there,
//! with checkpoints on S3, killed with SIGKILL several times (at changing parallelism) and
//! restarted; the published parts equal an uninterrupted run's output, and a reader listing
//! the prefix during the runs only ever sees complete parts that never change. A watched prefix
//! picks up objects added while the job runs, exactly once across a crash.

mod common;

use common::{services, stderr_lines, wait_line};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The test's own S3 client (not Eddy's code, so it checks what Eddy wrote independently).
#[derive(Clone)]
struct S3 {
    store: Arc<dyn ObjectStore>,
    rt: Arc<tokio::runtime::Runtime>,
    bucket: String,
}

impl S3 {
    fn new(env: &HashMap<String, String>) -> S3 {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&env["S3_BUCKET"])
            .with_region(&env["AWS_REGION"])
            .with_endpoint(&env["AWS_ENDPOINT_URL"])
            .with_access_key_id(&env["AWS_ACCESS_KEY_ID"])
            .with_secret_access_key(&env["AWS_SECRET_ACCESS_KEY"])
            .with_allow_http(true)
            .build()
            .expect("s3 client");
        S3 {
            store: Arc::new(store),
            rt: Arc::new(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime"),
            ),
            bucket: env["S3_BUCKET"].clone(),
        }
    }

    fn put(&self, key: &str, body: String) {
        self.rt
            .block_on(self.store.put(&ObjPath::from(key), body.into()))
            .expect("put");
    }

    /// Keys under `prefix` (recursive).
    fn list(&self, prefix: &str) -> Vec<String> {
        use futures::StreamExt as _;
        let p = ObjPath::from(prefix);
        self.rt.block_on(async {
            let mut keys = Vec::new();
            let mut s = self.store.list(Some(&p));
            while let Some(m) = s.next().await {
                keys.push(m.expect("list").location.to_string());
            }
            keys.sort();
            keys
        })
    }

    /// An object's text, `None` if it disappeared between listing and reading.
    fn get(&self, key: &str) -> Option<String> {
        self.rt.block_on(async {
            let r = self.store.get(&ObjPath::from(key)).await.ok()?;
            let b = r.bytes().await.ok()?;
            Some(String::from_utf8(b.to_vec()).expect("utf8"))
        })
    }

    /// The published parts under `prefix` (`part-*.jsonl` directly under it): key -> text.
    fn parts(&self, prefix: &str) -> BTreeMap<String, String> {
        self.list(prefix)
            .into_iter()
            .filter(|k| {
                let rel = &k[prefix.len()..];
                rel.starts_with("part-") && !rel.contains('/')
            })
            .filter_map(|k| self.get(&k).map(|t| (k, t)))
            .collect()
    }

    /// Every line of every published part, sorted.
    fn lines(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .parts(prefix)
            .values()
            .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        v.sort();
        v
    }
}

fn eddy(env: &HashMap<String, String>, plan: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eddy"));
    c.arg("run")
        .arg(plan)
        .arg("--quiet")
        .args(args)
        .env("EDDY_LOG", "eddy=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        if k.starts_with("AWS_") {
            c.env(k, v);
        }
    }
    c
}

fn finish(mut c: Command) -> String {
    let out = c.output().expect("eddy");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "eddy failed: {log}");
    log
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

/// A pseudo-random number from the clock, for kill moments.
fn jitter(max_ms: u64) -> Duration {
    Duration::from_millis((common::now_ms() as u64 * 7919) % max_ms.max(1))
}

const PLAN: &str = r#"
sources:
  - name: clicks
    file: { path: "INPUT", rate: RATE }
    eventTime: { field: ts, maxOutOfOrderness: 2s }
steps:
  - name: per_user
    from: clicks
    keyBy: event.user
    window: { tumbling: 1s }
    aggregate: { clicks: "count()", spent: "sum(event.amount)" }
sinks:
  - { name: out, from: per_user, file: { path: "OUTPUT" } }
deadLetter: { file: { path: "DEAD" } }
"#;

/// Input objects: `objects` objects of `lines` events, one malformed line in the third.
fn upload_input(s3: &S3, prefix: &str, objects: usize, lines: usize) {
    for o in 0..objects {
        let mut body = String::new();
        for l in 0..lines {
            let i = o * lines + l;
            let ts = 1_700_000_000_000i64 + (i as i64) * 10 - ((i * 37) % 1500) as i64;
            body.push_str(&format!(
                "{{\"ts\":{ts},\"user\":\"u{}\",\"amount\":{}}}\n",
                (i * 13) % 40,
                i % 97
            ));
            if o == 2 && l == 6 {
                body.push_str("not json\n");
            }
        }
        s3.put(&format!("{prefix}obj-{o:02}.jsonl"), body);
    }
    // Neither data (extension) nor visible (a `_` segment): both skipped.
    s3.put(&format!("{prefix}README.txt"), "not data\n".into());
    s3.put(
        &format!("{prefix}_staging/x.jsonl"),
        "{\"ts\":1,\"user\":\"ghost\",\"amount\":1}\n".into(),
    );
}

/// Lists the output prefix until told to stop; checks that every published part is whole
/// JSON lines and never changes or disappears once seen. Returns how many parts it saw.
fn watch_parts(s3: S3, prefix: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            let parts = s3.parts(&prefix);
            for k in seen.keys() {
                assert!(
                    parts.contains_key(k),
                    "{k} disappeared after it was published"
                );
            }
            for (k, text) in parts {
                assert!(text.ends_with('\n'), "{k}: a published part ends mid-line");
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{k}: not a complete JSON line ({e}): {line}"));
                    assert!(v.get("clicks").is_some(), "{k}: {line}");
                }
                if let Some(before) = seen.get(&k) {
                    assert_eq!(before, &text, "{k} changed after it was published");
                }
                seen.insert(k, text);
            }
        }
        seen.len()
    })
}

#[test]
fn s3_files_exactly_once_across_crashes() {
    let env = services();
    let s3 = S3::new(&env);
    let bucket = s3.bucket.clone();
    let root = format!("tests/s3files-{}-{}/", std::process::id(), common::now_ms());
    let input = format!("{root}input/");
    upload_input(&s3, &input, 8, 2500);
    let dir = tempfile::tempdir().expect("tempdir");

    let plan = |name: &str, rate: u64| {
        let p = dir.path().join(format!("{name}.yaml"));
        let text = PLAN
            .replace("INPUT", &format!("s3://{bucket}/{input}"))
            .replace("RATE", &rate.to_string())
            .replace("OUTPUT", &format!("s3://{bucket}/{root}{name}/"))
            .replace(
                "DEAD",
                &dir.path()
                    .join(format!("{name}-dead.jsonl"))
                    .display()
                    .to_string(),
            );
        std::fs::write(&p, text).expect("plan");
        p
    };

    // The reference: one worker, no checkpoints (published at the end of input).
    finish(eddy(&env, &plan("reference", 1_000_000), &[]));
    let expected = s3.lines(&format!("{root}reference/"));
    assert!(expected.len() > 1000, "{} results", expected.len());
    assert!(
        s3.list(&format!("{root}reference/_staging/")).is_empty(),
        "staging objects left behind"
    );
    let dead = std::fs::read_to_string(dir.path().join("reference-dead.jsonl")).expect("dead");
    assert!(
        dead.contains(&format!("s3://{bucket}/{input}obj-02.jsonl:8:")),
        "dead letters name object and line: {dead}"
    );
    assert_eq!(dead.lines().count(), 1, "{dead}");

    // Crashes at random moments, restored from S3 at changing parallelism.
    // Paced so the input lasts ~13 s: three runs, each killed up to 0.9 s after its first
    // checkpoint, must not reach its end (a slow checkpoint start once let run 3 finish).
    let crash = plan("crash", 1_500);
    let out = format!("{root}crash/");
    let ckpt = format!("s3://{bucket}/{root}checkpoints");
    let state = dir.path().join("state");
    let args = |p: &'static str| {
        vec![
            "-p".to_string(),
            p.to_string(),
            "--checkpoint-interval".into(),
            "300ms".into(),
            "--checkpoint-dir".into(),
            ckpt.clone(),
            "--state-dir".into(),
            state.display().to_string(),
        ]
    };
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_parts(s3.clone(), out.clone(), stop.clone());
    for (i, p) in ["2", "3", "1"].into_iter().enumerate() {
        let a = args(p);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut child = eddy(&env, &crash, &a).spawn().expect("spawn");
        let rx = stderr_lines(&mut child);
        assert!(
            wait_line(&rx, "checkpoint completed", Duration::from_secs(60)).is_some(),
            "run {i}: no checkpoint completed"
        );
        // A random moment after a checkpoint: mid-epoch, mid-upload or mid-publish.
        std::thread::sleep(jitter(900));
        if let Some(status) = child.try_wait().expect("try_wait") {
            let tail: Vec<String> = rx.try_iter().collect();
            panic!(
                "run {i} ended ({status}) before it was killed (if it succeeded, slow the input down); its last log lines: {tail:#?}"
            );
        }
        kill(child);
    }
    let a = args("2");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let log = finish(eddy(&env, &crash, &a));
    stop.store(true, Ordering::Relaxed);
    let seen = watcher
        .join()
        .expect("a reader saw an incomplete or changed part");
    assert!(log.contains("restoring from s3://"), "{log}");
    assert!(seen > 1, "the reader saw {seen} parts during the runs");
    assert_eq!(
        s3.lines(&out),
        expected,
        "output differs from the reference"
    );
    assert!(
        s3.list(&format!("{out}_staging/")).is_empty(),
        "staging objects left behind"
    );
}

const WATCH_PLAN: &str = r#"
sources:
  - name: lines
    file: { path: "INPUT", watch: 200ms, schema: { n: int } }
sinks:
  - { name: out, from: lines, file: { path: "OUTPUT" } }
"#;

fn numbers(from: usize, to: usize) -> String {
    (from..to).map(|n| format!("{{\"n\":{n}}}\n")).collect()
}

/// Waits until the published output holds `want` lines; returns them as numbers.
fn wait_output(s3: &S3, prefix: &str, want: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got: Vec<i64> = s3
            .lines(prefix)
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["n"]
                    .as_i64()
                    .expect("n")
            })
            .collect();
        got.sort_unstable();
        if got.len() >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn watched_s3_prefix_picks_up_new_objects_exactly_once() {
    let env = services();
    let s3 = S3::new(&env);
    let bucket = s3.bucket.clone();
    let root = format!("tests/s3watch-{}-{}/", std::process::id(), common::now_ms());
    let input = format!("{root}input/");
    let out = format!("{root}out/");
    s3.put(&format!("{input}a.jsonl"), numbers(0, 100));
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("watch.yaml");
    std::fs::write(
        &plan,
        WATCH_PLAN
            .replace("INPUT", &format!("s3://{bucket}/{input}"))
            .replace("OUTPUT", &format!("s3://{bucket}/{out}")),
    )
    .expect("plan");
    let ckpt = format!("s3://{bucket}/{root}checkpoints");
    let state = dir.path().join("state").display().to_string();
    let args = [
        "-p",
        "2",
        "--checkpoint-interval",
        "200ms",
        "--checkpoint-dir",
        &ckpt,
        "--state-dir",
        &state,
    ];
    let child = eddy(&env, &plan, &args).spawn().expect("spawn");
    assert_eq!(wait_output(&s3, &out, 100), (0..100).collect::<Vec<_>>());
    // Added while the job runs, including a key that sorts before the first.
    s3.put(&format!("{input}0.jsonl"), numbers(100, 150));
    s3.put(&format!("{input}b.jsonl"), numbers(150, 300));
    assert_eq!(wait_output(&s3, &out, 300), (0..300).collect::<Vec<_>>());
    kill(child);
    // After a crash: nothing read again, new objects still picked up.
    s3.put(&format!("{input}c.jsonl"), numbers(300, 320));
    let mut child = eddy(&env, &plan, &args).spawn().expect("spawn");
    let rx = stderr_lines(&mut child);
    assert!(wait_line(&rx, "restoring from s3://", Duration::from_secs(30)).is_some());
    assert_eq!(wait_output(&s3, &out, 320), (0..320).collect::<Vec<_>>());
    s3.put(&format!("{input}d.jsonl"), numbers(320, 330));
    let got = wait_output(&s3, &out, 330);
    // A checkpoint more, so duplicates (if any) would have been published by now.
    assert!(wait_line(&rx, "checkpoint completed", Duration::from_secs(30)).is_some());
    assert!(wait_line(&rx, "checkpoint completed", Duration::from_secs(30)).is_some());
    kill(child);
    assert_eq!(got, (0..330).collect::<Vec<_>>());
    assert_eq!(wait_output(&s3, &out, 0), got, "results published twice");
}

#[test]
fn a_missing_bucket_is_refused_at_start_by_name() {
    let env = services();
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "sources:\n  - { name: g, generator: { count: 10 } }\nsinks:\n  - { name: out, from: g, file: { path: 's3://no-such-bucket/out/' } }\n",
            "sink",
        ),
        (
            "sources:\n  - { name: f, file: { path: 's3://no-such-bucket/in/', schema: { n: int } } }\nsinks:\n  - { name: out, from: f, stdout: {} }\n",
            "source",
        ),
    ];
    for (yaml, what) in cases {
        let plan = dir.path().join(format!("{what}.yaml"));
        std::fs::write(&plan, yaml).expect("plan");
        let out = eddy(&env, &plan, &[]).output().expect("eddy");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {err}");
        assert!(
            err.contains("NoSuchBucket") && err.contains("AWS_ACCESS_KEY_ID"),
            "{what}: {err}"
        );
        assert!(
            !err.contains(&env["AWS_SECRET_ACCESS_KEY"]),
            "{what}: credentials logged"
        );
    }
}
