//! Big files read in blocks by several workers: every line once, through checkpoints,
//! crashes, rescaling and positions of earlier versions.

use super::*;
use crate::connectors::file::tests::taken_ns as ns;
use crate::connectors::file::{FileConfig, FileSource};
use crate::connectors::generator::mix64;
use crate::connectors::{Source, TimeField};
use crate::operators::Emit;
use crate::record::{Schema, Type};
use std::io::Write as _;
use std::path::Path;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new([("n", Type::Int)]))
}

/// The `p` workers of one run over `path` in `block`-byte blocks (every file big), resumed
/// from `parts`.
fn workers(
    path: &str,
    p: usize,
    block: u64,
    parts: Option<&[serde_json::Value]>,
) -> Vec<FileSource> {
    let shared = Arc::new(plan_splits(path, block, 0, parts).expect("splits"));
    (0..p)
        .map(|w| {
            let config = FileConfig { path: path.into() };
            let mut src = FileSource::open(
                &config,
                schema(),
                (w, p),
                shared.clone(),
                TimeField::Processing,
                None,
            )
            .expect("open");
            src.chunk = 7;
            if let Some(parts) = parts {
                src.resume(parts).expect("resume");
            }
            src
        })
        .collect()
}

/// Lines of many lengths (some longer than a block), a blank one and a bad one; the `n`s of
/// the good ones, and every line's start offset and `n` (-1: none).
fn big_input(dir: &Path) -> (String, Vec<i64>, Vec<(u64, i64)>) {
    let path = dir.join("big.jsonl");
    let mut f = File::create(&path).expect("create");
    let (mut want, mut starts, mut at) = (Vec::new(), Vec::new(), 0u64);
    for n in 0..400i64 {
        let pad = "x".repeat(((n * 37) % 150) as usize);
        let line = match n {
            77 => "\n".to_string(),
            201 => "{\"n\": oops}\n".to_string(),
            _ => {
                want.push(n);
                format!("{{\"pad\":\"{pad}\",\"n\":{n}}}\n")
            }
        };
        starts.push((at, if n == 77 || n == 201 { -1 } else { n }));
        at += line.len() as u64;
        f.write_all(line.as_bytes()).expect("write");
    }
    (path.display().to_string(), want, starts)
}

/// What a run of workers did: the `n`s emitted before each worker's barrier, all `n`s, the
/// checkpoint's positions (if one completed) and the dead letters' reasons.
#[derive(Default)]
struct Run {
    covered: Vec<i64>,
    all: Vec<i64>,
    parts: Vec<serde_json::Value>,
    dead: Vec<String>,
}

/// Polls the workers in a pseudo-random order, `max` records a poll. After `checkpoint`
/// polls, checkpoint 1 is triggered and each worker injects it at a random later turn of its
/// own (reading on until then, as a task does between its looks at the trigger); after `stop`
/// polls the run "crashes".
fn drive(
    srcs: &mut [FileSource],
    max: usize,
    seed: u64,
    checkpoint: Option<usize>,
    stop: Option<usize>,
) -> Run {
    let mut rng = seed;
    let mut rand = move |m: u64| {
        rng = mix64(rng);
        rng % m.max(1)
    };
    let p = srcs.len();
    let mut outs: Vec<Emit> = (0..p).map(|_| Emit::new("src".into(), schema())).collect();
    let (mut ended, mut injected) = (vec![false; p], vec![false; p]);
    let mut parts: Vec<Option<serde_json::Value>> = vec![None; p];
    let mut run = Run::default();
    for turn in 0.. {
        if ended.iter().all(|e| *e) || stop.is_some_and(|s| turn >= s) {
            break;
        }
        let w = rand(p as u64) as usize;
        if ended[w] {
            continue;
        }
        let triggered = checkpoint.is_some_and(|c| turn >= c);
        if triggered && !injected[w] && rand(2) == 0 {
            srcs[w].barrier(1);
            parts[w] = Some(srcs[w].position());
            injected[w] = true;
            let before = ns(&mut outs[w]);
            run.covered.extend(&before);
            run.all.extend(before);
            continue;
        }
        let more = srcs[w].poll(&mut outs[w], max).expect("poll");
        run.dead
            .extend(outs[w].dead.drain(..).map(|d| d.reason.clone()));
        if !more {
            ended[w] = true;
            let last = ns(&mut outs[w]);
            if !injected[w] {
                // Ended before injecting: its final position stands for it.
                parts[w] = Some(srcs[w].position());
                run.covered.extend(&last);
            }
            run.all.extend(last);
        }
    }
    for out in &mut outs {
        run.all.extend(ns(out));
    }
    if parts.iter().all(Option::is_some) {
        run.parts = parts.into_iter().flatten().collect();
    }
    run
}

#[test]
fn big_files_are_read_in_blocks_by_every_worker_each_line_once() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, want, _) = big_input(dir.path());
    for block in [64u64, 100, 4096] {
        // One worker reads every block in order, line numbers and all.
        let run = drive(&mut workers(&path, 1, block, None), 50, 1, None, None);
        assert_eq!(run.all, want, "block {block}");
        assert_eq!(run.dead.len(), 1, "{:?}", run.dead);
        assert!(run.dead[0].contains("big.jsonl:202: "), "{:?}", run.dead);
        for p in [2usize, 3] {
            for seed in 0..4 {
                let mut srcs = workers(&path, p, block, None);
                let run = drive(&mut srcs, 5, seed, None, None);
                let mut all = run.all;
                all.sort_unstable();
                assert_eq!(all, want, "block {block} P={p} seed {seed}");
                assert_eq!(run.dead.len(), 1, "block {block} P={p}: {:?}", run.dead);
            }
        }
    }
}

#[test]
fn a_busier_worker_reads_fewer_blocks() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, want, _) = big_input(dir.path());
    let mut srcs = workers(&path, 2, 64, None);
    let mut outs: Vec<Emit> = (0..2).map(|_| Emit::new("src".into(), schema())).collect();
    let mut got = [Vec::new(), Vec::new()];
    let mut more = [true, true];
    // Worker 0 gets one turn for every three of worker 1's.
    for turn in 0usize.. {
        let w = usize::from(turn % 4 != 0);
        if !more[0] && !more[1] {
            break;
        }
        if more[w] {
            more[w] = srcs[w].poll(&mut outs[w], 3).expect("poll");
            got[w].extend(ns(&mut outs[w]));
        }
    }
    assert!(
        got[1].len() > 2 * got[0].len(),
        "worker 1 read {} lines, worker 0 {}",
        got[1].len(),
        got[0].len()
    );
    let mut all: Vec<i64> = got.concat();
    all.sort_unstable();
    assert_eq!(all, want);
}

#[test]
fn block_positions_restore_at_another_parallelism_without_loss_or_repeat() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, want, _) = big_input(dir.path());
    for (p1, p2) in [(2usize, 3usize), (3, 1), (1, 2), (2, 2)] {
        for seed in 0..6 {
            let at = 20 + 13 * seed as usize;
            let run1 = drive(
                &mut workers(&path, p1, 64, None),
                3,
                seed,
                Some(at),
                Some(at + 30),
            );
            assert!(
                !run1.parts.is_empty(),
                "{p1}->{p2} seed {seed}: no checkpoint"
            );
            assert!(
                run1.covered.len() < want.len(),
                "{p1}->{p2}: run 1 read everything before its checkpoint"
            );
            let mut srcs = workers(&path, p2, 64, Some(&run1.parts));
            let run2 = drive(&mut srcs, 7, seed + 100, None, None);
            let mut seen = run1.covered;
            seen.extend(run2.all);
            seen.sort_unstable();
            assert_eq!(seen, want, "{p1}->{p2} seed {seed}");
        }
    }
}

#[test]
fn positions_of_earlier_versions_resume_where_they_stopped() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, want, starts) = big_input(dir.path());
    let (block, shift) = (64u64, shift_of(&path));
    // Blocks dealt round-robin to 2 workers: each class of blocks read to some offset (in
    // the shifted index space).
    let next: BTreeMap<u64, u64> = BTreeMap::from([
        (shift % 2, 9_000 + shift * block),
        ((shift + 1) % 2, 12_345 + shift * block),
    ]);
    let frontier = Frontier {
        block,
        stride: 2,
        next,
    };
    let old = serde_json::json!({ "files": {}, "blocks": { path.clone(): frontier.clone() } });
    let emitted = |o: u64| frontier.emitted(o + shift * block);
    // Read whole by one worker, before big files were split.
    let whole = serde_json::json!({ "files": { path.clone(): [20_000, 0] } });
    for (part, before) in [
        (old, &emitted as &dyn Fn(u64) -> bool),
        (whole, &|o: u64| o < 20_000),
    ] {
        let mut seen: Vec<i64> = starts
            .iter()
            .filter(|&&(o, n)| n >= 0 && before(o))
            .map(|&(_, n)| n)
            .collect();
        assert!(!seen.is_empty() && seen.len() < want.len());
        let run = drive(
            &mut workers(&path, 2, block, Some(&[part])),
            7,
            3,
            None,
            None,
        );
        seen.extend(run.all);
        seen.sort_unstable();
        assert_eq!(seen, want);
    }
}
