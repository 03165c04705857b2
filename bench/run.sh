#!/usr/bin/env bash
# `make bench`: Eddy and Apache Flink side by side (bench/run.py), then the micro-benchmarks of
# each hot piece (runtime/benches/hot_path.rs; skipped with QUICK=1). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 bench/run.py
if [[ -z "${QUICK:-}" || "${QUICK}" == "0" ]]; then
  cargo bench -p eddy-runtime --bench hot_path -- --quick 2>&1 | grep -E '^[a-z_]+/|time:|thrpt:'
fi
