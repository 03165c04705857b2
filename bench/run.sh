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
if [[ -z "${QUICK:-}" || "${QUICK}" == "0" ]]; then
  cargo bench -p eddy-runtime --bench hot_path -- --quick 2>&1 | grep -E '^[a-z_]+/|time:|thrpt:'
fi
