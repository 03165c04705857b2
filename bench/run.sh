#!/usr/bin/env bash
# `make bench`: Eddy and Apache Flink side by side (bench/run.py), the checkpoint and restore
# cost of a large keyed state (runtime/benches/state_checkpoint.rs: 1 GiB, 64 MiB with QUICK=1),
# then the micro-benchmarks of each hot piece (runtime/benches/hot_path.rs; skipped with
# QUICK=1). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 bench/run.py
# pipefail: a failed state benchmark fails `make bench`; its error line is kept.
cargo bench -p eddy-runtime --bench state_checkpoint 2>&1 | grep -E '^(bench |state_checkpoint:)'
# Kafka -> keyed count -> Kafka against the broker's own perf tools, on the broker of
# e2e/services.sh (started here if it is not up, and stopped again afterwards).
was_up=$(bash e2e/services.sh status >/dev/null 2>&1 && echo 1 || true)
bash e2e/services.sh up >/dev/null
rc=0
cargo bench -p eddy-runtime --bench kafka_pipeline 2>&1 | grep -E '^(bench |kafka_pipeline|thread)' || rc=$?
[ -n "$was_up" ] || bash e2e/services.sh down >/dev/null
[ "$rc" -eq 0 ] || exit "$rc"
if [[ -z "${QUICK:-}" || "${QUICK}" == "0" ]]; then
  cargo bench -p eddy-runtime --bench hot_path -- --quick 2>&1 | grep -E '^[a-z_]+/|time:|thrpt:'
fi
