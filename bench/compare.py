#!/usr/bin/env python3
"""Compare two JSON-lines result files as multisets (docs/generators.md: "compared as multisets
after sorting"). Each line is parsed and re-serialised with sorted keys, so field order and
spacing do not matter but names, values and types (1 vs "1" vs 1.0) do.

    bench/compare.py A.jsonl B.jsonl    -> prints results_match=yes|no, exits 0 if they match
"""
import json
import sys
from collections import Counter


def load(path):
    with open(path, encoding="utf-8") as f:
        return Counter(
            json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))
            for line in f
            if line.strip()
        )


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if a == b:
        print(f"results_match=yes rows={sum(a.values())}")
        return 0
    only_a, only_b = a - b, b - a
    print(
        f"results_match=no rows_a={sum(a.values())} rows_b={sum(b.values())}"
        f" only_in_a={sum(only_a.values())} only_in_b={sum(only_b.values())}"
    )
    for name, diff in ((sys.argv[1], only_a), (sys.argv[2], only_b)):
        for row in sorted(diff)[:5]:
            print(f"  only in {name}: {row}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
