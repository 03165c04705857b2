//! Window and join correctness against a brute-force reference, on random out-of-order
//! streams, at parallelism 1, 2 and 4.
//!
//! The stream is one file (one source split), so the watermark sequence is the same at every
//! parallelism: the file source emits, after each batch of `BATCH_SIZE` lines, the watermark
//! `max event time - maxOutOfOrderness - 1`. The reference replays exactly that and applies
//! the documented semantics naively (lists, no maps): windows fire when the watermark reaches
//! `end - 1`, accept late records until `end - 1 + allowedLateness` (re-emitting the updated
//! result), and records too late for every window go to the late output.

use eddy::job::progress::Metrics;
use eddy::record::BATCH_SIZE;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct Rec {
    k: i64,
    ts: i64,
    v: i64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

/// One result row: key, start, end, count, sum, min, max, distinct, first, last.
type Row = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

fn windows_of(kind: Kind, ts: i64) -> Vec<(i64, i64)> {
    match kind {
        Kind::Tumbling(s) => {
            let st = ts - ts.rem_euclid(s);
            vec![(st, st + s)]
        }
        Kind::Sliding(size, slide) => {
            let mut v = Vec::new();
            let mut st = ts - ts.rem_euclid(slide);
            while st > ts - size {
                v.push((st, st + size));
                st -= slide;
            }
            v
        }
        Kind::Session(gap) => vec![(ts, ts + gap)],
    }
}

fn summarize(k: i64, start: i64, end: i64, recs: &[Rec]) -> Row {
    let count = recs.len() as i64;
    let sum = recs.iter().map(|r| r.v).sum();
    let min = recs.iter().map(|r| r.v).min().unwrap_or(0);
    let max = recs.iter().map(|r| r.v).max().unwrap_or(0);
    let mut d: Vec<i64> = recs.iter().map(|r| r.v % 5).collect();
    d.sort();
    d.dedup();
    let first = recs.iter().min_by_key(|r| r.ts).map_or(0, |r| r.v);
    let last = recs.iter().max_by_key(|r| r.ts).map_or(0, |r| r.v);
    (
        k,
        start,
        end,
        count,
        sum,
        min,
        max,
        d.len() as i64,
        first,
        last,
    )
}

struct Win {
    key: i64,
    start: i64,
    end: i64,
    recs: Vec<Rec>,
    fired: bool,
}

/// The brute-force reference: emitted rows and late records.
fn reference(recs: &[Rec], kind: Kind, lateness: i64, ooo: i64) -> (Vec<Row>, Vec<i64>) {
    let mut wins: Vec<Win> = Vec::new();
    let mut out = Vec::new();
    let mut late = Vec::new();
    let mut wm = i64::MIN;
    let is_late = |end: i64, wm: i64| end - 1 + lateness <= wm;
    let fire = |wins: &mut Vec<Win>, out: &mut Vec<Row>, wm: i64| {
        for w in wins.iter_mut() {
            if w.end - 1 <= wm && !w.fired {
                out.push(summarize(w.key, w.start, w.end, &w.recs));
                w.fired = true;
            }
        }
        wins.retain(|w| w.end - 1 + lateness > wm);
    };
    for chunk in recs.chunks(BATCH_SIZE) {
        for r in chunk {
            let mut any = false;
            match kind {
                Kind::Session(gap) => {
                    let (mut s, mut e) = (r.ts, r.ts + gap);
                    for w in wins.iter().filter(|w| w.key == r.k) {
                        if w.start <= e && w.end >= s {
                            s = s.min(w.start);
                            e = e.max(w.end);
                        }
                    }
                    if !is_late(e, wm) {
                        any = true;
                        let mut merged = vec![r.clone()];
                        wins.retain(|w| {
                            let hit = w.key == r.k && w.start <= e && w.end >= s;
                            if hit {
                                merged.extend(w.recs.iter().cloned());
                            }
                            !hit
                        });
                        let mut w = Win {
                            key: r.k,
                            start: s,
                            end: e,
                            recs: merged,
                            fired: false,
                        };
                        if e - 1 <= wm {
                            out.push(summarize(w.key, s, e, &w.recs));
                            w.fired = true;
                        }
                        wins.push(w);
                    }
                }
                _ => {
                    for (s, e) in windows_of(kind, r.ts) {
                        if is_late(e, wm) {
                            continue;
                        }
                        any = true;
                        match wins
                            .iter_mut()
                            .find(|w| w.key == r.k && w.start == s && w.end == e)
                        {
                            Some(w) => {
                                w.recs.push(r.clone());
                                if w.fired {
                                    out.push(summarize(w.key, s, e, &w.recs));
                                }
                            }
                            None => {
                                // A window that fired and was dropped cannot come back: it
                                // would be late. So a new window is never fired yet, except
                                // when the watermark already passed its end (within lateness).
                                let fired = e - 1 <= wm;
                                let w = Win {
                                    key: r.k,
                                    start: s,
                                    end: e,
                                    recs: vec![r.clone()],
                                    fired,
                                };
                                if fired {
                                    out.push(summarize(r.k, s, e, &w.recs));
                                }
                                wins.push(w);
                            }
                        }
                    }
                }
            }
            if !any {
                late.push(r.ts);
            }
        }
        let max = chunk.iter().map(|r| r.ts).max().unwrap_or(i64::MIN);
        let next = max.saturating_sub(ooo).saturating_sub(1);
        if next > wm {
            wm = next;
            fire(&mut wins, &mut out, wm);
        }
    }
    fire(&mut wins, &mut out, i64::MAX);
    out.sort();
    late.sort();
    (out, late)
}

/// The sum of field `n` over the JSON lines of `out`.
fn sum_of_n(out: &std::path::Path) -> i64 {
    std::fs::read_to_string(out)
        .expect("out")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["n"]
                .as_i64()
                .expect("n")
        })
        .sum()
}

/// Compiles and runs a plan to completion with `p` workers.
fn run_yaml(yaml: &str, p: usize) {
    let (_, graph) = eddy::plan::compile(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(eddy::run_graph(graph, p, Arc::new(Metrics::default())))
        .expect("job runs");
}

fn write_input(recs: &[Rec]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .expect("temp file");
    for r in recs {
        writeln!(f, r#"{{"k":{},"ts":{},"v":{}}}"#, r.k, r.ts, r.v).expect("write");
    }
    f.flush().expect("flush");
    f
}

fn window_yaml(kind: Kind) -> String {
    match kind {
        Kind::Tumbling(s) => format!("tumbling: {s}ms"),
        Kind::Sliding(a, b) => format!("sliding: {{size: {a}ms, slide: {b}ms}}"),
        Kind::Session(g) => format!("session: {{gap: {g}ms}}"),
    }
}

fn run_eddy(input: &str, kind: Kind, lateness: i64, ooo: i64, p: usize) -> (Vec<Row>, Vec<i64>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.jsonl");
    let late = dir.path().join("late.jsonl");
    let yaml = format!(
        r#"
sources:
  - name: in
    file: {{ path: "{input}", schema: {{ k: int, ts: int, v: int }} }}
    eventTime: {{ field: ts, maxOutOfOrderness: {ooo}ms }}
steps:
  - name: agg
    from: in
    keyBy: event.k
    window: {{ {w}, allowedLateness: {lateness}ms, lateOutput: too_late }}
    aggregate:
      count: count()
      sum: sum(event.v)
      min: min(event.v)
      max: max(event.v)
      distinct: count_distinct(event.v % 5)
      first: first(event.v)
      last: last(event.v)
sinks:
  - {{ name: out, from: agg, file: {{ path: "{out}" }} }}
  - {{ name: late, from: too_late, file: {{ path: "{late}" }} }}
"#,
        w = window_yaml(kind),
        out = out.display(),
        late = late.display()
    );
    run_yaml(&yaml, p);
    let text = std::fs::read_to_string(&out).expect("output");
    let mut rows: Vec<Row> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let g = |f: &str| v[f].as_i64().unwrap_or_else(|| panic!("field {f} in {l}"));
            (
                g("k"),
                g("window_start"),
                g("window_end"),
                g("count"),
                g("sum"),
                g("min"),
                g("max"),
                g("distinct"),
                g("first"),
                g("last"),
            )
        })
        .collect();
    rows.sort();
    let mut late_ts: Vec<i64> = std::fs::read_to_string(&late)
        .expect("late output")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["ts"]
                .as_i64()
                .expect("ts")
        })
        .collect();
    late_ts.sort();
    (rows, late_ts)
}

fn stream(n: usize, keys: i64, jitter: i64, seed: u64) -> Vec<Rec> {
    // Distinct timestamps (x * 4096 + i), so first/last have no ties to break.
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n)
        .map(|i| {
            let j = (next() % (2 * jitter as u64 + 1)) as i64 - jitter;
            let x = i as i64 / 4 + j;
            Rec {
                k: (next() % keys as u64) as i64,
                ts: 1_000_000 * 4096 + x * 4096 + i as i64,
                v: (next() % 1000) as i64,
            }
        })
        .collect()
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (1i64..40).prop_map(|s| Kind::Tumbling(s * 4096)),
        (1i64..10, 1i64..4).prop_map(|(a, b)| Kind::Sliding(a * b * 4096, b * 4096)),
        // A slide that does not divide the size: state is kept in gcd-wide slices.
        (2i64..30)
            .prop_flat_map(|s| (Just(s), 1..s))
            .prop_map(|(s, d)| Kind::Sliding(s * 4096, d * 4096)),
        (1i64..20).prop_map(|g| Kind::Session(g * 1024)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn windows_match_reference_at_every_parallelism(
        kind in kind_strategy(),
        lateness_units in prop_oneof![Just(0i64), 1i64..30],
        ooo_units in 0i64..20,
        jitter in 0i64..60,
        keys in 1i64..6,
        n in 1500usize..4000,
        seed in any::<u64>(),
    ) {
        let recs = stream(n, keys, jitter, seed);
        let (lateness, ooo) = (lateness_units * 4096, ooo_units * 4096);
        let expected = reference(&recs, kind, lateness, ooo);
        prop_assert!(!expected.0.is_empty());
        let file = write_input(&recs);
        let path = file.path().display().to_string();
        for p in [1, 2, 4] {
            let got = run_eddy(&path, kind, lateness, ooo, p);
            prop_assert_eq!(&got.1, &expected.1, "late records differ at P={} for {:?}", p, kind);
            let missing: Vec<_> = expected.0.iter().filter(|r| !got.0.contains(r)).take(5).collect();
            let extra: Vec<_> = got.0.iter().filter(|r| !expected.0.contains(r)).take(5).collect();
            prop_assert!(
                got.0 == expected.0,
                "results differ at P={} for {:?}: {} rows vs {} expected; missing {:?}; unexpected {:?}",
                p, kind, got.0.len(), expected.0.len(), missing, extra
            );
        }
    }
}

#[test]
fn late_records_exist_in_the_generated_streams() {
    // Guards the property test against streams too tidy to exercise lateness at all.
    let recs = stream(3000, 3, 50, 7);
    let (_, late) = reference(&recs, Kind::Tumbling(8 * 4096), 0, 0);
    assert!(!late.is_empty());
    let (rows, _) = reference(&recs, Kind::Tumbling(8 * 4096), 20 * 4096, 0);
    let keys_windows: std::collections::HashSet<_> = rows.iter().map(|r| (r.0, r.1)).collect();
    assert!(
        rows.len() > keys_windows.len(),
        "allowed lateness should re-emit some windows"
    );
}

/// Windowed inner join: pairs per key and window, against a nested loop.
#[test]
fn join_matches_nested_loop_at_every_parallelism() {
    let left = stream(2500, 7, 3, 11);
    let right = stream(2500, 7, 3, 23);
    let size = 16 * 4096;
    let mut expected: BTreeMap<(i64, i64, i64, i64), usize> = BTreeMap::new();
    for l in &left {
        for r in &right {
            let ws = l.ts - l.ts.rem_euclid(size);
            if l.k == r.k && r.ts - r.ts.rem_euclid(size) == ws {
                *expected.entry((ws, l.k, l.v, r.v)).or_default() += 1;
            }
        }
    }
    let lf = write_input(&left);
    let rf = write_input(&right);
    for p in [1, 2, 4] {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("out.jsonl");
        let yaml = format!(
            r#"
sources:
  - {{ name: l, file: {{ path: "{l}" }}, eventTime: {{ field: ts, maxOutOfOrderness: 1h }} }}
  - {{ name: r, file: {{ path: "{r}" }}, eventTime: {{ field: ts, maxOutOfOrderness: 1h }} }}
steps:
  - name: j
    join:
      left: {{ from: l, key: event.k }}
      right: {{ from: r, key: event.k }}
      window: {{ tumbling: {size}ms }}
      select: {{ k: left.k, lv: left.v, rv: right.v }}
sinks:
  - {{ name: out, from: j, file: {{ path: "{o}" }} }}
"#,
            l = lf.path().display(),
            r = rf.path().display(),
            o = out.display()
        );
        run_yaml(&yaml, p);
        let mut got: BTreeMap<(i64, i64, i64, i64), usize> = BTreeMap::new();
        for line in std::fs::read_to_string(&out).expect("out").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let g = |f: &str| v[f].as_i64().expect("int");
            *got.entry((g("window_start"), g("k"), g("lv"), g("rv")))
                .or_default() += 1;
        }
        assert_eq!(got, expected, "P={p}");
    }
}

#[test]
fn processing_time_windows_count_every_record() {
    let recs = stream(5000, 4, 0, 5);
    let f = write_input(&recs);
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("out.jsonl");
    let yaml = format!(
        r#"
sources:
  - {{ name: in, file: {{ path: "{i}" }} }}
steps:
  - {{ name: agg, from: in, keyBy: event.k, window: {{ tumbling: 50ms, time: processing }}, aggregate: {{ n: count() }} }}
sinks:
  - {{ name: out, from: agg, file: {{ path: "{o}" }} }}
"#,
        i = f.path().display(),
        o = out.display()
    );
    run_yaml(&yaml, 2);
    let total = sum_of_n(&out);
    assert_eq!(total, 5000);
}

/// Top-N per window over a windowed count, against sorting every window's results: the
/// operator keeps only the best `n` as they arrive, which must give the same rows, ties
/// (equal counts are common here) broken by the rest of the row.
#[test]
fn top_n_matches_a_full_sort_at_every_parallelism() {
    let recs = stream(4000, 40, 20, 17);
    let file = write_input(&recs);
    let ooo = 30 * 4096;
    for kind in [
        Kind::Tumbling(16 * 4096),
        Kind::Sliding(16 * 4096, 4 * 4096),
    ] {
        let (rows, _) = reference(&recs, kind, 0, ooo);
        for n in [1usize, 3] {
            let mut per_window: BTreeMap<(i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
            for r in &rows {
                per_window.entry((r.1, r.2)).or_default().push((r.3, r.0));
            }
            let mut expected: Vec<(i64, i64, i64, i64)> = Vec::new();
            for ((start, end), mut list) in per_window {
                // count desc, then key asc (the plan's orderBy).
                list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                expected.extend(list.into_iter().take(n).map(|(c, k)| (start, end, c, k)));
            }
            expected.sort();
            assert!(expected.len() > 20, "too few windows to test top-{n}");
            for p in [1, 2] {
                let dir = tempfile::tempdir().expect("dir");
                let out = dir.path().join("out.jsonl");
                let yaml = format!(
                    r#"
sources:
  - name: in
    file: {{ path: "{input}", schema: {{ k: int, ts: int, v: int }} }}
    eventTime: {{ field: ts, maxOutOfOrderness: {ooo}ms }}
steps:
  - {{ name: agg, from: in, keyBy: event.k, window: {{ {w} }}, aggregate: {{ count: count() }} }}
  - {{ name: best, from: agg, top: {{ n: {n}, orderBy: ["event.count desc", "event.k"] }} }}
sinks:
  - {{ name: out, from: best, file: {{ path: "{o}" }} }}
"#,
                    input = file.path().display(),
                    w = window_yaml(kind),
                    o = out.display()
                );
                run_yaml(&yaml, p);
                let mut got: Vec<(i64, i64, i64, i64)> = std::fs::read_to_string(&out)
                    .expect("out")
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).expect("json");
                        let g = |f: &str| v[f].as_i64().expect("int");
                        (g("window_start"), g("window_end"), g("count"), g("k"))
                    })
                    .collect();
                got.sort();
                assert_eq!(got, expected, "top-{n} of {kind:?} at P={p}");
            }
        }
    }
}

/// A constant key (`keyBy: {all: ...}`): batches move to its one owner whole instead of
/// being split row by row; every parallelism must still count every record once, in order-
/// free windows that match a reference over the input.
#[test]
fn constant_key_windows_match_the_reference_at_every_parallelism() {
    let recs = stream(6000, 7, 0, 23);
    let f = write_input(&recs);
    let size = 8 * 4096;
    let mut expected: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for r in &recs {
        let e = expected
            .entry(r.ts - r.ts.rem_euclid(size))
            .or_insert((0, i64::MIN));
        e.0 += 1;
        e.1 = e.1.max(r.v);
    }
    for p in [1, 2, 3] {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("out.jsonl");
        let yaml = format!(
            r#"
sources:
  - {{ name: in, file: {{ path: "{i}" }}, eventTime: {{ field: ts }} }}
steps:
  - {{ name: agg, from: in, keyBy: {{ all: "'everything'" }}, window: {{ tumbling: {size}ms }}, aggregate: {{ n: count(), top: max(event.v) }} }}
sinks:
  - {{ name: out, from: agg, file: {{ path: "{o}" }} }}
"#,
            i = f.path().display(),
            o = out.display()
        );
        run_yaml(&yaml, p);
        let mut got = BTreeMap::new();
        for line in std::fs::read_to_string(&out).expect("out").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let g = |f: &str| v[f].as_i64().expect("int");
            assert!(
                got.insert(g("window_start"), (g("n"), g("top"))).is_none(),
                "P={p}: window {} emitted twice",
                g("window_start")
            );
        }
        assert_eq!(got, expected, "P={p}");
    }
}

/// A source whose steps read only some of its fields is narrowed to them (its records carry
/// nothing else; the event-time field is read for the time and dropped); the results must be
/// those of the same job with every field kept, which an extra sink of the source's own
/// records forces.
#[test]
fn narrowed_sources_give_the_results_of_full_ones() {
    let cases = [
        (
            "generator: { seed: 3, count: 20000, keys: 50 }",
            "filter: \"event.amount > 5000\"",
            "keyBy: event.user, window: { tumbling: 2s }, aggregate: { n: count(), s: sum(event.amount) }",
            vec!["user", "amount"],
        ),
        (
            "nexmark: { kind: bid, seed: 3, count: 20000 }",
            "filter: \"event.channel != 'Apple'\"",
            "keyBy: event.bidder, window: { sliding: { size: 4s, slide: 2s } }, aggregate: { top: max(event.price) }",
            vec!["bidder", "price", "channel"],
        ),
        (
            concat!(
                "file: { path: '",
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/data/payments.jsonl', schema: { ts: int, user: string, amount: double, country: string } }, eventTime: { field: ts }"
            ),
            "filter: \"event.country != 'FR'\"",
            "keyBy: event.user, window: { tumbling: 10s }, aggregate: { n: count() }",
            vec!["user", "country"],
        ),
    ];
    for (source, filter, window, read) in cases {
        let dir = tempfile::tempdir().expect("dir");
        let plan = |extra: &str, out: &std::path::Path| {
            format!(
                "sources:\n  - {{ name: in, {source} }}\nsteps:\n  - {{ name: f, from: in, {filter} }}\n  - {{ name: w, from: f, {window} }}\nsinks:\n  - {{ name: out, from: w, file: {{ path: \"{}\" }} }}\n{extra}",
                out.display()
            )
        };
        let narrow_out = dir.path().join("narrow.jsonl");
        let narrow = plan("", &narrow_out);
        let (_, graph) = eddy::plan::compile(&narrow).expect("plan");
        let names: Vec<&str> = graph.nodes[0].schema.names().collect();
        let mut want = read.clone();
        want.sort();
        let mut got = names.clone();
        got.sort();
        assert_eq!(got, want, "{source}: fields carried");
        let eddy::job::graph::NodeKind::Source(spec) = &graph.nodes[0].kind else {
            panic!("node 0 is the source");
        };
        let mut read_fields: Vec<&str> = spec.schema.names().collect();
        read_fields.sort();
        let time = if source.starts_with("nexmark") {
            "dateTime"
        } else {
            "ts"
        };
        want.push(time);
        want.sort();
        assert_eq!(read_fields, want, "{source}: fields read");
        let full_out = dir.path().join("full.jsonl");
        let raw = dir.path().join("raw.jsonl");
        let full = plan(
            &format!(
                "  - {{ name: raw, from: in, file: {{ path: \"{}\" }} }}\n",
                raw.display()
            ),
            &full_out,
        );
        let (_, g) = eddy::plan::compile(&full).expect("plan");
        assert!(
            g.nodes[0].schema.len() > names.len(),
            "{source}: kept whole"
        );
        for p in [1, 2] {
            run_yaml(&narrow, p);
            run_yaml(&full, p);
            let sorted = |f: &std::path::Path| {
                let mut l: Vec<String> = std::fs::read_to_string(f)
                    .expect("out")
                    .lines()
                    .map(String::from)
                    .collect();
                l.sort();
                l
            };
            let (a, b) = (sorted(&narrow_out), sorted(&full_out));
            assert!(a.len() > 10, "{source}: only {} results", a.len());
            assert_eq!(a, b, "{source} P={p}");
            for f in [&narrow_out, &full_out, &raw] {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// A job that reads no field of its source (a count of everything on processing time) still
/// counts every record: the source is not narrowed to nothing.
#[test]
fn a_source_no_step_reads_a_field_of_still_counts_every_record() {
    let recs = stream(3000, 5, 0, 7);
    let f = write_input(&recs);
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("out.jsonl");
    let yaml = format!(
        "sources:\n  - {{ name: in, file: {{ path: \"{}\" }} }}\nsteps:\n  - {{ name: w, from: in, keyBy: {{ all: \"'x'\" }}, window: {{ tumbling: 1h, time: processing }}, aggregate: {{ n: count() }} }}\nsinks:\n  - {{ name: out, from: w, file: {{ path: \"{}\" }} }}\n",
        f.path().display(),
        out.display()
    );
    let (_, graph) = eddy::plan::compile(&yaml).expect("plan");
    assert!(!graph.nodes[0].schema.is_empty(), "narrowed to no fields");
    for p in [1, 2] {
        let _ = std::fs::remove_file(&out);
        run_yaml(&yaml, p);
        let total = sum_of_n(&out);
        assert_eq!(total, recs.len() as i64, "P={p}");
    }
}
