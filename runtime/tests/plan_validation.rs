//! Every kind of plan error is reported with the path of the field at fault, all at once.

fn errors(yaml: &str) -> Vec<String> {
    match eddy::plan::compile(yaml) {
        Ok(_) => panic!("plan should be rejected:\n{yaml}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn has(errs: &[String], path: &str, words: &str) {
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(words)),
        "no error at `{path}` mentioning `{words}` in {errs:#?}"
    );
}

const GOOD_SOURCE: &str = "sources:\n  - { name: clicks, generator: { count: 10 } }\n";

#[test]
fn unknown_fields_are_all_reported_with_a_suggestion() {
    let e = errors(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: w, from: clicks, keyBy: event.user, window: {{ tumblng: 10s }}, aggregate: {{ c: count() }} }}\nsinks:\n  - {{ name: out, from: w, stdout: {{}}, colour: red }}\n"
    ));
    has(&e, "steps[0].window.tumblng", "did you mean `tumbling`");
    has(&e, "sinks[0].colour", "unknown field");
}

#[test]
fn dangling_from_names_the_known_inputs() {
    let e = errors(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: f, from: clickz, filter: 'true' }}\nsinks:\n  - {{ name: out, from: nowhere, stdout: {{}} }}\n"
    ));
    has(&e, "steps[0].from", "unknown input `clickz`; known: ");
    has(&e, "sinks[0].from", "unknown input `nowhere`");
}

#[test]
fn cycles_are_named() {
    let e = errors(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: a, from: b, filter: 'true' }}\n  - {{ name: b, from: a, filter: 'true' }}\nsinks:\n  - {{ name: out, from: a, stdout: {{}} }}\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.contains("cycle: ") && m.contains("a -> b") || m.contains("b -> a")),
        "{e:#?}"
    );
}

#[test]
fn bad_durations_get_an_example() {
    let e = errors(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: w, from: clicks, keyBy: event.user, window: {{ sliding: {{ size: 10 seconds, slide: 0s }} }}, aggregate: {{ c: count() }} }}\nsinks:\n  - {{ name: out, from: w, stdout: {{}} }}\nmaxWatermarkDrift: 0s\n"
    ));
    has(&e, "maxWatermarkDrift", "longer than 0");
    has(
        &e,
        "steps[0].window.sliding.size",
        "expected a duration like 10s",
    );
    has(&e, "steps[0].window.sliding.slide", "longer than 0");
}

#[test]
fn bad_cel_is_reported_with_the_expression() {
    let e = errors(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: a, from: clicks, filter: 'event.user == ' }}\n  - {{ name: b, from: clicks, filter: 'event.usr == \"x\"' }}\n  - {{ name: c, from: clicks, map: {{ x: 'event.amount + 1.5' }} }}\n  - {{ name: d, from: clicks, filter: '[1,2].exists(x, x > 1)' }}\n  - {{ name: e, from: clicks, filter: 'event.amount' }}\nsinks:\n  - {{ name: out, from: a, stdout: {{}} }}\n"
    ));
    has(&e, "steps[0].filter", "invalid CEL");
    has(
        &e,
        "steps[1].filter",
        "has no field `usr`; its fields are: id, user, page, amount, ts",
    );
    has(&e, "steps[2].map.x", "does not mix int and double");
    has(&e, "steps[3].filter", "not supported");
    has(&e, "steps[4].filter", "must be a bool expression");
}

#[test]
fn aggregates_and_step_shapes_are_checked() {
    let e = errors(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: w, from: clicks, keyBy: event.user, window: {{ tumbling: 1m }}, aggregate: {{ m: median(event.amount), s: sum(event.user) }} }}\n  - {{ name: x, from: clicks }}\n  - {{ name: y, from: clicks, filter: 'true', map: {{ a: event.id }} }}\n  - {{ name: t, from: clicks, top: {{ n: 1, orderBy: [event.id] }} }}\nsinks:\n  - {{ name: out, from: w, stdout: {{}}, file: {{ path: x }} }}\n"
    ));
    has(&e, "steps[0].aggregate.m", "unknown aggregate `median`");
    has(&e, "steps[0].aggregate.s", "needs a number");
    has(&e, "steps[1]", "says nothing to do");
    has(&e, "steps[2]", "a step does one thing");
    has(&e, "steps[3].from", "window_start");
    has(&e, "sinks[0]", "exactly one of");
}

#[test]
fn all_problems_come_at_once() {
    let e = errors(
        "sources:\n  - { name: s, generator: { count: 1, keyz: 3 } }\n  - { name: s, nexmark: { kind: bids } }\nsteps:\n  - { name: f, from: s, filter: 'event.nope' }\nsinks: []\n",
    );
    assert!(e.len() >= 4, "{e:#?}");
    has(&e, "sources[0].generator.keyz", "did you mean `keys`");
    has(&e, "sources[1].name", "already defined");
    has(&e, "sinks", "at least one sink");
}

#[test]
fn the_examples_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    std::env::set_current_dir(dir).expect("cd to repo");
    for f in std::fs::read_dir("examples").expect("examples dir") {
        let p = f.expect("entry").path();
        if p.extension().is_some_and(|e| e == "yaml") && !p.to_string_lossy().contains("streamjob")
        {
            eddy::plan::compile_file(&p.to_string_lossy())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

#[test]
fn sources_produce_only_the_fields_their_consumers_read() {
    use eddy::job::graph::NodeKind;
    let mask = |yaml: &str| -> Option<Vec<bool>> {
        let (_, graph) = eddy::plan::compile(yaml).unwrap_or_else(|e| panic!("{e}"));
        graph.nodes.iter().find_map(|n| match &n.kind {
            NodeKind::Source(s) => Some(s.projection.as_ref().map(|m| m.to_vec())),
            _ => None,
        })?
    };
    // id, user, page, amount, ts: the count reads `user`; `ts` is the event time.
    let counted = mask(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: w, from: clicks, keyBy: event.user, window: {{ tumbling: 10s }}, aggregate: {{ n: count() }} }}\nsinks:\n  - {{ name: out, from: w, stdout: {{}} }}\n"
    ));
    assert_eq!(counted, Some(vec![false, true, false, false, true]));
    // A filter passes whole records on to its consumers: their needs count too.
    let filtered = mask(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: f, from: clicks, filter: 'event.amount > 5' }}\n  - {{ name: w, from: f, keyBy: event.page, window: {{ tumbling: 10s }}, aggregate: {{ n: count() }} }}\nsinks:\n  - {{ name: out, from: w, stdout: {{}} }}\n"
    ));
    assert_eq!(filtered, Some(vec![false, false, true, true, true]));
    // A sink of the source itself, or a late output, needs every field.
    assert_eq!(
        mask(&format!(
            "{GOOD_SOURCE}sinks:\n  - {{ name: out, from: clicks, stdout: {{}} }}\n"
        )),
        None
    );
    let late = mask(&format!(
        "{GOOD_SOURCE}steps:\n  - {{ name: w, from: clicks, keyBy: event.user, window: {{ tumbling: 10s, lateOutput: l }}, aggregate: {{ n: count() }} }}\nsinks:\n  - {{ name: out, from: w, stdout: {{}} }}\n  - {{ name: late, from: l, stdout: {{}} }}\n"
    ));
    assert_eq!(late, None);
}

#[test]
fn file_paths_on_s3_are_checked() {
    // An absolute path: another test changes the working directory.
    let lines = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/lines.jsonl");
    let e = errors(&format!(
        "sources:\n  - {{ name: a, file: {{ path: '{lines}', watch: 5s }} }}\n  - {{ name: b, file: {{ path: 's3://eddy/in/', watch: 0s, schema: {{ n: int }} }} }}\nsinks:\n  - {{ name: out, from: a, file: {{ path: 's3://eddy/out.jsonl' }} }}\ndeadLetter: {{ file: {{ path: 's3://eddy/dead/' }} }}\n",
    ));
    has(&e, "sources[0].file.watch", "applies to S3 prefixes");
    has(&e, "sources[1].file.watch", "positive duration");
    has(&e, "sinks[0].file.path", "end the path with `/`");
    has(&e, "deadLetter.file.path", "not a directory or S3 prefix");
}
