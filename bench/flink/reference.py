#!/usr/bin/env python3
"""A slow, obviously-correct reference for the benchmark cases of docs/generators.md, used to
check the Flink jobs (and Eddy) on small inputs. It reads the generator's records (the JSON
lines of `bench/flink.sh dump`) rather than regenerating them, so it checks only the queries.

    reference.py keyed-count CLICKS.jsonl
    reference.py q5|q7 BIDS.jsonl
    reference.py q8 PERSONS.jsonl AUCTIONS.jsonl
prints the expected results as JSON lines.
"""
import json
import sys
from collections import Counter, defaultdict

TEN_S, TWO_S = 10_000, 2_000


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def tumble(t, size):
    return t - t % size  # Python's % is a floor modulo, as the spec's alignment needs


def out(obj):
    print(json.dumps(obj, separators=(",", ":")))


def keyed_count(clicks):
    counts = Counter((c["user"], tumble(c["ts"], TEN_S)) for c in clicks)
    for (user, start), n in counts.items():
        out({"user": user, "window_start": start, "window_end": start + TEN_S, "count": n})


def q5(bids):
    counts = defaultdict(Counter)  # window_start -> auction -> bids
    for b in bids:
        t = b["dateTime"]
        k = tumble(t, TWO_S)  # latest window start holding t, then earlier ones
        while k > t - TEN_S:
            counts[k][b["auction"]] += 1
            k -= TWO_S
    for start, per_auction in counts.items():
        auction, n = min(per_auction.items(), key=lambda an: (-an[1], an[0]))
        out({"window_start": start, "window_end": start + TEN_S, "auction": auction, "count": n})


def q7(bids):
    best = {}
    for b in bids:
        start = tumble(b["dateTime"], TEN_S)
        best[start] = max(best.get(start, b["price"]), b["price"])
    for start, price in best.items():
        out({"window_start": start, "window_end": start + TEN_S, "price": price})


def q8(persons, auctions):
    by_key = defaultdict(list)
    for p in persons:
        by_key[(p["id"], tumble(p["dateTime"], TEN_S))].append(p)
    for a in auctions:
        start = tumble(a["dateTime"], TEN_S)
        for p in by_key.get((a["seller"], start), []):
            out({"window_start": start, "window_end": start + TEN_S, "id": p["id"], "name": p["name"],
                 "auction": a["id"]})


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    case, files = sys.argv[1], [rows(p) for p in sys.argv[2:]]
    {"keyed-count": keyed_count, "file-count": keyed_count, "q5": q5, "q7": q7, "q8": q8}[case](*files)
