//! Crash recovery of a window join (nexmark q8: persons who opened an auction in the same
//! window; its buffers spill past a small state cache) and a top-N per window
//! (nexmark q5: the hottest auctions of each sliding window). `eddy run` is killed with SIGKILL
//! at random moments and started again with the same command, and a savepoint is restored at
//! another parallelism; the committed output must equal an uninterrupted run's, record for
//! record.

mod common;

use common::{finish, next, start_admin, stderr_lines, stop_with_savepoint, wait_line};
use std::path::Path;
use std::time::Duration;

/// 100,000 nexmark events (2,000 persons, 6,000 auctions, 92,000 bids) over 200 s of event
/// time. Each kind's pace is its share of `RATE` events per second, so the three sources move
/// through event time together, as one nexmark stream would, and the join holds both sides.
const PLAN: &str = r#"
sources:
  - name: persons
    nexmark: { kind: person, seed: 9, count: 100000, eventsPerSecond: 500, rate: PERSONS }
  - name: auctions
    nexmark: { kind: auction, seed: 9, count: 100000, eventsPerSecond: 500, rate: AUCTIONS }
  - name: bids
    nexmark: { kind: bid, seed: 9, count: 100000, eventsPerSecond: 500, rate: BIDS }
steps:
  - name: per_auction
    from: bids
    keyBy: event.auction
    window: { sliding: { size: 2s, slide: 500ms } }
    aggregate: { bids: "count()", top_price: "max(event.price)" }
  - name: hot
    from: per_auction
    top: { n: 3, orderBy: ["event.bids desc", "event.auction"] }
  - name: per_second
    from: bids
    map:
      window_start: "event.dateTime - event.dateTime % 1000"
      window_end: "event.dateTime - event.dateTime % 1000 + 1000"
      auction: event.auction
      bidder: event.bidder
      price: event.price
  - name: priciest
    from: per_second
    top: { n: 2, orderBy: ["event.price desc"] }
  - name: sellers
    join:
      left: { from: persons, key: event.id }
      right: { from: auctions, key: event.seller }
      window: { tumbling: 5s }
      select: { id: left.id, name: left.name, city: left.city, auction: right.id, reserve: right.reserve }
sinks:
  - { name: hot, from: hot, file: { path: OUT/hot.jsonl } }
  - { name: priciest, from: priciest, file: { path: OUT/priciest.jsonl } }
  - { name: sellers, from: sellers, file: { path: OUT/sellers.jsonl } }
"#;

const OUTPUTS: [&str; 3] = ["out/hot.jsonl", "out/priciest.jsonl", "out/sellers.jsonl"];

use common::CheckpointedJob as Job;

/// A job whose sources emit `rate` events per second in all.
fn new_job(rate: u64) -> Job {
    // 1 person, 3 auctions and 46 bids in every 50 events; at least 1 per second each.
    let share = |n: u64| (rate * n / 50).max(1).to_string();
    Job::write(|out| {
        PLAN.replace("PERSONS", &share(1))
            .replace("AUCTIONS", &share(3))
            .replace("BIDS", &share(46))
            .replace("OUT", out)
    })
}

/// Each output's committed lines, sorted.
fn output(job: &Job) -> Vec<Vec<String>> {
    OUTPUTS.iter().map(|f| job.sorted_lines(f)).collect()
}

/// The reference: one uninterrupted, unpaced run.
fn reference() -> Vec<Vec<String>> {
    let job = new_job(10_000_000);
    finish(job.cmd(&["-p", "2"]).spawn().expect("spawn"));
    let out = output(&job);
    // About 400 sliding windows with 3 auctions each; thousands of (person, auction) pairs.
    assert!(out[0].len() > 1100, "top rows: {}", out[0].len());
    assert_eq!(out[1].len(), 200 * 2, "top bids per second");
    assert!(out[2].len() > 1000, "join rows: {}", out[2].len());
    out
}

/// Where the two outputs first differ, for a readable failure.
fn assert_same(got: &[Vec<String>], expected: &[Vec<String>]) {
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        if g != e {
            let missing: Vec<_> = e.iter().filter(|l| !g.contains(l)).take(5).collect();
            let extra: Vec<_> = g.iter().filter(|l| !e.contains(l)).take(5).collect();
            panic!(
                "{}: {} rows, expected {}; missing {missing:?}; extra or repeated {extra:?}",
                OUTPUTS[i],
                g.len(),
                e.len()
            );
        }
    }
}

/// Waits for a line containing `needle`; says whether it came and whether a line containing
/// `note` came before it.
fn wait_noting(
    rx: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    note: &str,
    within: Duration,
) -> (bool, bool) {
    let deadline = std::time::Instant::now() + within;
    let mut noted = false;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return (true, noted),
            Ok(l) => noted |= l.contains(note),
            Err(_) => break,
        }
    }
    (false, noted)
}

/// The number of complete checkpoints in the job's checkpoint directory.
fn complete_checkpoints(job: &Job) -> usize {
    std::fs::read_dir(job.path("ckpt/local/job/checkpoints"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("_metadata.json").is_file())
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn join_and_top_killed_with_sigkill_lose_and_repeat_nothing() {
    let expected = reference();
    // About 8 s of input at 12,500 events/s, checkpoints every 300 ms.
    let job = new_job(12_500);
    // A small state cache: the join's buffers and the window's entries spill to RocksDB, so
    // restores start from spilled state too.
    let args = [
        "-p",
        "2",
        "--checkpoint-interval",
        "300ms",
        "--state-cache-entries",
        "200",
    ];
    let mut seed = 7;
    let mut kills = 0;
    let mut restored_runs = 0;
    while kills < 4 {
        let mut cmd = job.cmd(&args);
        // The second run slows uploads down, so its kill lands in the middle of one.
        let mid_upload = kills == 1;
        if mid_upload {
            cmd.env("EDDY_TEST_UPLOAD_DELAY_MS", "400");
        }
        let mut child = cmd.spawn().expect("spawn");
        let rx = stderr_lines(&mut child);
        // Every run but the first waits for a checkpoint (or its upload) before the kill, so
        // the next run has one to restore join and top state from.
        let needle = if mid_upload {
            "uploading checkpoint"
        } else {
            "checkpoint completed"
        };
        let (found, restored) = wait_noting(&rx, needle, "restoring from", Duration::from_secs(30));
        assert!(found, "no `{needle}` in run {}", kills + 1);
        if mid_upload {
            // The upload's first file takes 400 ms: this lands inside it.
            std::thread::sleep(Duration::from_millis(150));
        } else {
            std::thread::sleep(Duration::from_millis(next(&mut seed) % 1500));
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        restored_runs += usize::from(restored);
        kills += 1;
    }
    assert!(kills >= 3, "the job finished after only {kills} kills");
    assert!(complete_checkpoints(&job) > 0, "no checkpoint survived");
    let log = finish(job.cmd(&args).spawn().expect("spawn"));
    assert!(
        log.iter().any(|l| l.contains("restoring from")),
        "the last run did not restore: {log:?}"
    );
    assert!(
        restored_runs >= 2,
        "{restored_runs} restored runs were killed"
    );
    assert_same(&output(&job), &expected);
}

#[test]
fn join_and_top_savepoint_restores_at_parallelism_1_then_3() {
    let expected = reference();
    let job = new_job(12_500);
    let (mut child, rx, addr) =
        start_admin(job.cmd(&["-p", "1", "--checkpoint-interval", "500ms"]));
    // Some state in both operators: wait for a checkpoint, so the sources have run a while.
    assert!(
        wait_line(&rx, "checkpoint completed", Duration::from_secs(30)).is_some(),
        "no checkpoint completed"
    );
    let sp = stop_with_savepoint(&addr);
    assert!(Path::new(&sp).join("_metadata.json").is_file(), "{sp}");
    assert!(child.wait().expect("wait").success());
    let partial = output(&job);
    assert!(
        partial
            .iter()
            .zip(&expected)
            .all(|(p, e)| p.len() < e.len()),
        "the job finished before the savepoint"
    );
    let log = finish(
        job.cmd(&["-p", "3", "--restore", &sp])
            .spawn()
            .expect("spawn"),
    );
    assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:?}");
    assert_same(&output(&job), &expected);
}
