//! Keyed state larger than the in-memory cache: windows spill to RocksDB and come back, with
//! results identical to a run that keeps everything in memory, including late updates within
//! the allowed lateness and a crash restored from spilled state.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PLAN: &str = r#"
sources:
  - name: clicks
    generator: { seed: 3, count: 120000, keys: 30000, eventsPerSecond: 4000, maxDisorder: 4s, rate: RATE }
    eventTime: { field: ts, maxOutOfOrderness: 1s }
steps:
  - name: per_user
    from: clicks
    keyBy: event.user
    window: { sliding: { size: 6s, slide: 2s }, allowedLateness: 5s }
    aggregate: { clicks: "count()", spent: "sum(event.amount)", pages: "count_distinct(event.page)" }
sinks:
  - { name: out, from: per_user, file: { path: OUT } }
"#;

/// Per-user sessions (2 s gap) over the same kind of stream: 30,000 keys, most with a
/// session open at any time.
const SESSIONS: &str = r#"
sources:
  - name: clicks
    generator: { seed: 5, count: 120000, keys: 30000, eventsPerSecond: 4000, maxDisorder: 2s, rate: RATE }
    eventTime: { field: ts, maxOutOfOrderness: 1s }
steps:
  - name: per_user
    from: clicks
    keyBy: event.user
    window: { session: { gap: 2s }, allowedLateness: 3s }
    aggregate: { clicks: "count()", spent: "sum(event.amount)" }
sinks:
  - { name: out, from: per_user, file: { path: OUT } }
"#;

fn plan_of(text: &str, dir: &Path, name: &str, rate: u64) -> (String, String) {
    let out = dir.join(format!("{name}.jsonl"));
    let plan = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &plan,
        text.replace("OUT", out.to_str().expect("utf8"))
            .replace("RATE", &rate.to_string()),
    )
    .expect("plan");
    (
        plan.to_str().expect("utf8").to_string(),
        out.to_str().expect("utf8").to_string(),
    )
}

fn eddy(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eddy"));
    c.args(["run", "--quiet"]).args(args);
    c
}

fn run(args: &[&str]) {
    let out = eddy(args).output().expect("eddy");
    assert!(
        out.status.success(),
        "eddy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sorted(path: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path)
        .expect("output")
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Fails with a short account of the difference (the outputs have tens of thousands of lines).
fn same(got: &[String], expected: &[String], what: &str) {
    if got != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|l| !got.contains(l))
            .take(3)
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|l| !expected.contains(l))
            .take(3)
            .collect();
        panic!(
            "{what}: {} lines, expected {}; missing {missing:?}; extra {extra:?}",
            got.len(),
            expected.len()
        );
    }
}

#[test]
fn windows_spill_past_the_cache_and_agree_with_memory() {
    spill_and_crash(PLAN);
}

#[test]
fn sessions_spill_past_the_cache_and_agree_with_memory() {
    spill_and_crash(SESSIONS);
}

/// Runs `text` with everything in memory, with a cache of 1,000 entries, and with that cache
/// through a SIGKILL and a restore: all three outputs must be the same.
fn spill_and_crash(text: &str) {
    let plan = |dir: &Path, name: &str, rate: u64| plan_of(text, dir, name, rate);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem_plan, mem_out) = plan(dir.path(), "memory", 100_000_000);
    run(&[&mem_plan, "--state-cache-entries", "100000000"]);
    let expected = sorted(&mem_out);
    // 30,000 keys (in three overlapping windows, or in sessions): far more than 1,000 entries.
    let (spill_plan, spill_out) = plan(dir.path(), "spill", 100_000_000);
    run(&[&spill_plan, "--state-cache-entries", "1000"]);
    assert!(expected.len() > 30_000, "{}", expected.len());
    same(&sorted(&spill_out), &expected, "spilled");

    // And through a crash: checkpoints of spilled state, a kill, a restore.
    let (plan_k, out_k) = plan(dir.path(), "killed", 40_000);
    let ck = dir.path().join("ckpt");
    let state = dir.path().join("state");
    let args = [
        plan_k.as_str(),
        "--state-cache-entries",
        "1000",
        "--checkpoint-dir",
        ck.to_str().expect("utf8"),
        "--checkpoint-interval",
        "300ms",
        "--state-dir",
        state.to_str().expect("utf8"),
    ];
    let mut child = eddy(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Poll for a completed checkpoint (with a deadline) before killing.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let chks = ck.join("local/killed/checkpoints");
    loop {
        let done = std::fs::read_dir(&chks)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().join("_metadata.json").is_file())
                    .count()
            })
            .unwrap_or(0);
        if done >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoints");
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "finished too soon"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    run(&args);
    same(&sorted(&out_k), &expected, "spilled, killed and restored");
}
