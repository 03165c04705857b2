//! Micro-benchmarks of each hot piece, so a change that slows one shows up in `make bench`:
//! expression evaluation (compiled vs the `cel` interpreter), JSON decoding, the window update,
//! JSON encoding of results, and an exchange hop (the channel, and splitting a batch by key).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eddy::connectors::generator::{ClickConfig, mix64};
use eddy::connectors::json::{RowDecoder, RowSeed};
use eddy::exchange::{Envelope, Msg, group_of, owner, short_key_hash};
use eddy::expr::{Scope, compile};
use eddy::operators::window_agg::WindowAgg;
use eddy::operators::{Emit, Operator};
use eddy::record::{BATCH_SIZE, Batch, JsonLines, Schema, Type, Value};
use serde::de::DeserializeSeed;
use std::hint::black_box;
use std::sync::Arc;

fn clicks(n: usize) -> Batch {
    let cfg = ClickConfig {
        keys: 10_000,
        ..Default::default()
    };
    let s = mix64(cfg.seed);
    let mut b = Batch::with_capacity(Arc::new(ClickConfig::schema()), n);
    for i in 0..n as u64 {
        let row = cfg.record(s, i);
        let ts = match row[4] {
            Value::Int(t) => t,
            _ => 0,
        };
        b.push(row, ts);
    }
    b
}

fn expressions(c: &mut Criterion) {
    let src = "event.user != '' && event.amount > 100";
    let schema = Arc::new(ClickConfig::schema());
    let compiled = compile(src, &Scope::event(schema.clone())).expect("compiles");
    let batch = clicks(BATCH_SIZE);
    let mut g = c.benchmark_group("expr");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    g.bench_function("compiled_filter", |b| {
        b.iter(|| {
            batch
                .rows()
                .filter(|(row, _)| compiled.eval_bool(&[row]).unwrap_or(false))
                .count()
        })
    });
    let program = cel::Program::compile(src).expect("cel");
    let maps: Vec<std::collections::HashMap<String, cel::Value>> = batch
        .rows()
        .map(|(row, _)| {
            schema
                .fields
                .iter()
                .zip(row)
                .map(|(f, v)| {
                    let cv = match v {
                        Value::Int(i) => cel::Value::Int(*i),
                        Value::Str(s) => cel::Value::String(Arc::new(s.to_string())),
                        _ => cel::Value::Null,
                    };
                    (f.name.clone(), cv)
                })
                .collect()
        })
        .collect();
    g.bench_function("cel_interpreter_filter", |b| {
        b.iter(|| {
            let mut n = 0;
            for m in &maps {
                let mut ctx = cel::Context::default();
                ctx.add_variable_from_value("event", m.clone());
                if program.execute(&ctx) == Ok(cel::Value::Bool(true)) {
                    n += 1;
                }
            }
            n
        })
    });
    g.finish();
}

fn json_decode(c: &mut Criterion) {
    let schema = Arc::new(ClickConfig::schema());
    let batch = clicks(BATCH_SIZE);
    let lines: Vec<String> = (0..batch.len())
        .map(|i| {
            let mut s = String::new();
            batch.row_json(i, &mut s);
            s
        })
        .collect();
    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("decode_click_rows", |b| {
        // The decoder the JSON sources use (fast scanner, serde fallback).
        let decoder = RowDecoder::new(schema.clone(), None);
        let mut row = Vec::new();
        b.iter(|| {
            for l in &lines {
                decoder.decode(l, &mut row).expect("decodes");
                black_box(&row);
            }
        })
    });
    // As a job reading two of the five fields decodes them (the file case of `make bench`):
    // the others are skipped.
    g.bench_function("decode_click_rows_narrowed", |b| {
        let mask: Arc<[bool]> = schema
            .fields
            .iter()
            .map(|f| f.name == "user" || f.name == "ts")
            .collect();
        let decoder = RowDecoder::new(schema.clone(), Some(mask));
        let mut row = Vec::new();
        b.iter(|| {
            for l in &lines {
                decoder.decode(l, &mut row).expect("decodes");
                black_box(&row);
            }
        })
    });
    // The serde path alone (the decoder's fallback), for comparison.
    g.bench_function("decode_click_rows_serde", |b| {
        let mut row = Vec::new();
        b.iter(|| {
            for l in &lines {
                row.clear();
                row.resize(schema.len(), Value::Null);
                let mut de = serde_json::Deserializer::from_str(l);
                RowSeed {
                    schema: &schema,
                    row: &mut row,
                    mask: None,
                }
                .deserialize(&mut de)
                .expect("decodes");
                black_box(&row);
            }
        })
    });
    g.finish();
}

fn window_update(c: &mut Criterion) {
    let clicks = clicks(BATCH_SIZE);
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    // Tumbling: one slice per window; sliding 10 s / 2 s: five windows per record, one slice.
    for (name, window) in [
        ("tumbling_count_update", "{ tumbling: 10s }"),
        (
            "sliding_count_update",
            "{ sliding: { size: 10s, slide: 2s } }",
        ),
    ] {
        let yaml = format!(
            "sources:\n  - {{ name: c, generator: {{ keys: 10000 }} }}\nsteps:\n  - {{ name: w, from: c, keyBy: event.user, window: {window}, aggregate: {{ n: count() }} }}\nsinks:\n  - {{ name: o, from: w, stdout: {{}} }}\n"
        );
        let (_, graph) = eddy::plan::compile(&yaml).expect("plan");
        let (spec, input, out_schema) = graph.first_window().expect("window node");
        // Rows as the narrowed source makes them: the fields the job reads.
        let full = ClickConfig::schema();
        let mut batch = Batch::with_capacity(input.clone(), clicks.len());
        for (row, t) in clicks.rows() {
            batch.push(input.project(&full, row), t);
        }
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    (
                        WindowAgg::new(spec.clone(), input.clone(), false),
                        batch.clone(),
                    )
                },
                |(mut op, batch)| {
                    let mut emit = Emit::new("w".into(), out_schema.clone());
                    op.on_batch(0, batch, &mut emit);
                    op
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Window results (key, bounds, count) encoded as JSON lines, as a sink receives them.
fn json_encode(c: &mut Criterion) {
    let schema = Arc::new(Schema::new([
        ("user", Type::String),
        ("window_start", Type::Int),
        ("window_end", Type::Int),
        ("n", Type::Int),
    ]));
    let mut batch = Batch::with_capacity(schema.clone(), BATCH_SIZE);
    for i in 0..BATCH_SIZE as i64 {
        let start = 1_700_000_000_000 + (i / 100) * 10_000;
        batch.push(
            [
                Value::from(format!("u{}", i * 7 % 10_000).as_str()),
                Value::Int(start),
                Value::Int(start + 10_000),
                Value::Int(i % 13 + 1),
            ],
            start + 9_999,
        );
    }
    let enc = JsonLines::new(&schema);
    let mut out = Vec::new();
    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    g.bench_function("encode_result_rows", |b| {
        b.iter(|| {
            out.clear();
            enc.encode(black_box(&batch), &mut out);
            out.len()
        })
    });
    g.finish();
}

fn exchange_hop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let batch = clicks(BATCH_SIZE);
    let mut g = c.benchmark_group("exchange");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    g.bench_function("channel_hop_batch", |b| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Envelope>(16);
        b.iter_batched(
            || batch.clone(),
            |batch| {
                rt.block_on(async {
                    tx.send(Envelope {
                        port: 0,
                        from: 0,
                        msg: Msg::Data(batch),
                    })
                    .await
                    .expect("send");
                    rx.recv().await.expect("recv")
                })
            },
            BatchSize::SmallInput,
        )
    });
    // What a keyed hop does to each batch before the channel, as `Outputs::partition` does
    // for a one-field key: hash each row's key, then move each row into its owner's batch.
    // Each input is cloned just before (hot in cache, as a batch a source has just written)
    // and the parts are reused: fresh inputs and parts per iteration measured the allocator
    // and cold memory more than the split.
    let users = {
        let schema = Arc::new(Schema::new(vec![("user".to_string(), Type::String)]));
        let mut b = Batch::with_capacity(schema, BATCH_SIZE);
        for (row, ts) in batch.rows() {
            b.push([row[1].clone()], ts);
        }
        b
    };
    g.bench_function("keyed_split_batch", |b| {
        let mut owners = Vec::with_capacity(BATCH_SIZE);
        let mut parts: Vec<Batch> = (0..2)
            .map(|_| Batch::with_capacity(users.schema.clone(), BATCH_SIZE))
            .collect();
        b.iter_batched(
            || users.clone(),
            |batch| {
                parts.iter_mut().for_each(Batch::clear);
                owners.clear();
                for (row, _) in batch.rows() {
                    let h = short_key_hash(&row[0]).unwrap_or(0);
                    owners.push(owner(group_of(h, 128), 2, 128));
                }
                batch.scatter(&owners, &mut parts);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    expressions,
    json_decode,
    window_update,
    json_encode,
    exchange_hop
);
criterion_main!(benches);
