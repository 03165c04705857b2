#!/usr/bin/env bash
# `make bench`: Eddy's benchmark cases (QUICK=1 for a short smoke run). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/run.py
