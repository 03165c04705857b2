#!/usr/bin/env python3
"""Runs Eddy's benchmark cases and prints one line per case.

Each case runs the release `eddy` binary as a child process on a generated input; records per
second are over wall time, per CPU-second over the child's own user+system time (the machines
are shared), peak RSS from the child's rusage. Not a test: no assertion on speed.
"""
import os, resource, subprocess, sys, tempfile, time

EDDY = os.environ.get("EDDY", "target/release/eddy")
QUICK = os.environ.get("QUICK", "") not in ("", "0")
HERE = os.path.dirname(os.path.abspath(__file__))

CASES = [
    # name, plan, records, parallelism
    ("keyed-count-p1", "keyed-count.yaml", 20_000_000, 1),
    ("keyed-count-p2", "keyed-count.yaml", 20_000_000, 2),
    ("q5-p1", "q5.yaml", 10_000_000, 1),
    ("session-p1", "session.yaml", 10_000_000, 1),
]


def run(plan, count, parallelism, out_dir):
    text = open(os.path.join(HERE, "plans", plan)).read()
    out = os.path.join(out_dir, "out.jsonl")
    path = os.path.join(out_dir, plan)
    open(path, "w").write(text.replace("__COUNT__", str(count)).replace("__OUT__", out))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run([EDDY, "run", "--quiet", "-p", str(parallelism), path], capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"bench: {plan} failed: {p.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results = sum(1 for _ in open(out))
    return wall, cpu, after.ru_maxrss / 1024, results


def main():
    with tempfile.TemporaryDirectory() as d:
        for name, plan, count, par in CASES:
            if QUICK:
                count //= 100
            wall, cpu, rss, results = run(plan, count, par, d)
            if results == 0:
                sys.exit(f"bench: {name} produced no results")
            print(
                f"bench {name} records_per_sec={count / wall:.0f} records_per_cpu_s={count / max(cpu, 1e-9):.0f} "
                f"peak_rss_mb={rss:.0f} records={count} results={results}",
                flush=True,
            )


if __name__ == "__main__":
    main()
