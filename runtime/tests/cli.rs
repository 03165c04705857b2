//! The `eddy` binary as a user meets it: examples run to completion, malformed input is
//! dead-lettered and counted, bad plans exit non-zero with field paths.

use std::process::Command;

fn eddy() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eddy"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

fn run_lines(args: &[&str]) -> Vec<serde_json::Value> {
    let out = eddy().args(args).output().expect("run eddy");
    assert!(
        out.status.success(),
        "eddy {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn sorted(v: &[serde_json::Value]) -> Vec<String> {
    let mut s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    s.sort();
    s
}

#[test]
fn clicks_counts_every_record_once_per_window_type() {
    let rows = run_lines(&["run", "--quiet", "examples/clicks.yaml"]);
    let tumbling: i64 = rows
        .iter()
        .filter(|r| r.get("pages").is_some())
        .map(|r| r["clicks"].as_i64().expect("clicks"))
        .sum();
    let sessions: i64 = rows
        .iter()
        .filter(|r| r.get("first_page").is_some())
        .map(|r| r["clicks"].as_i64().expect("clicks"))
        .sum();
    // The generator makes 20,000 clicks, all valid, none later than the watermark allows.
    assert_eq!(tumbling, 20_000);
    assert_eq!(sessions, 20_000);
    let p2 = run_lines(&["run", "--quiet", "-p", "2", "examples/clicks.yaml"]);
    assert_eq!(sorted(&rows), sorted(&p2));
}

#[test]
fn every_example_runs_and_parallelism_does_not_change_results() {
    for ex in [
        "examples/wordcount.yaml",
        "examples/fraud-join.yaml",
        "examples/nexmark-q5.yaml",
    ] {
        let p1 = run_lines(&["run", "--quiet", ex]);
        assert!(!p1.is_empty(), "{ex} produced nothing");
        let p3 = run_lines(&["run", "--quiet", "-p", "3", ex]);
        assert_eq!(sorted(&p1), sorted(&p3), "{ex}");
    }
}

#[test]
fn wordcount_counts_every_word() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/data/lines.jsonl"
    ))
    .expect("data");
    let words: usize = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["line"]
                .as_str()
                .expect("line")
                .split(' ')
                .filter(|w| !w.is_empty())
                .count()
        })
        .sum();
    let rows = run_lines(&["run", "--quiet", "examples/wordcount.yaml"]);
    let counted: i64 = rows
        .iter()
        .map(|r| r["count"].as_i64().expect("count"))
        .sum();
    assert_eq!(counted as usize, words);
}

#[test]
fn q5_picks_the_auction_with_most_bids_per_window() {
    let rows = run_lines(&["run", "--quiet", "examples/nexmark-q5.yaml"]);
    let mut ends: Vec<i64> = rows
        .iter()
        .map(|r| r["window_end"].as_i64().expect("end"))
        .collect();
    let n = ends.len();
    ends.dedup();
    assert_eq!(ends.len(), n, "one hot item per window");
}

#[test]
fn malformed_lines_are_dead_lettered_counted_and_the_job_finishes() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"user\":\"a\",\"n\":1,\"ts\":1000}\nnot json at all\n{\"user\":\"b\",\"n\":\"two\",\"ts\":2000}\n{\"user\":\"a\",\"n\":3,\"ts\":3000}\n{\"user\":\"c\",\"n\":4}\n{\"user\":\"a\",\"n\":0,\"ts\":4000}\n",
    )
    .expect("write");
    let dead = dir.path().join("dead.jsonl");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "sources:\n  - {{ name: in, file: {{ path: \"{}\" }}, eventTime: {{ field: ts }} }}\nsteps:\n  - {{ name: m, from: in, map: {{ user: event.user, inv: '100 / event.n' }} }}\nsinks:\n  - {{ name: out, from: m, stdout: {{}} }}\ndeadLetter: {{ file: {{ path: \"{}\" }} }}\n",
            input.display(),
            dead.display()
        ),
    )
    .expect("plan");
    let out = eddy()
        .args(["run", plan.to_str().expect("path")])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf8")
        .lines()
        .collect();
    assert_eq!(good.len(), 2, "{good:?}");
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .expect("dead letters")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let reasons: Vec<&str> = dead
        .iter()
        .map(|d| d["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(dead.len(), 4, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains(":2: ")),
        "line number of the non-JSON line: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("field `n`")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("event time field `ts`")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("division by zero")),
        "{reasons:?}"
    );
    assert!(dead.iter().any(|d| d["record"] == "not json at all"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("4 dead letters"),
        "progress summary counts them: {stderr}"
    );
}

#[test]
fn validate_exits_nonzero_and_names_fields() {
    let dir = tempfile::tempdir().expect("dir");
    let plan = dir.path().join("bad.yaml");
    std::fs::write(
        &plan,
        "sources:\n  - { name: s, generator: {} }\nsinks:\n  - { name: o, from: t, stdout: {} }\n",
    )
    .expect("plan");
    let out = eddy()
        .args(["validate", plan.to_str().expect("path")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sinks[0].from: unknown input `t`"), "{err}");
    assert!(
        err.contains("run `eddy validate"),
        "ends with what to do: {err}"
    );
    let ok = eddy()
        .args(["validate", "examples/clicks.yaml"])
        .output()
        .expect("run");
    assert!(ok.status.success());
}

/// A killed run cannot remove its temporary state directory; the next run removes those of
/// processes that are gone, and leaves those of live ones alone.
#[test]
fn stale_state_directories_of_dead_runs_are_removed() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    let stale = tmp.path().join(format!("eddy-state-{dead}-0badc0de"));
    std::fs::create_dir_all(stale.join("1-counts-w0")).expect("stale dir");
    std::fs::write(stale.join("1-counts-w0/000001.sst"), b"x").expect("stale file");
    let live = tmp
        .path()
        .join(format!("eddy-state-{}-0badc0de", std::process::id()));
    std::fs::create_dir_all(&live).expect("live dir");
    let out = eddy()
        .env("TMPDIR", tmp.path())
        .args(["run", "--quiet", "examples/clicks.yaml"])
        .output()
        .expect("run eddy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stale.exists(), "the dead run's state is still there");
    assert!(live.exists(), "a live process's state was removed");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![live.file_name().expect("name").to_owned()],
        "the run's own state must go too"
    );
}
