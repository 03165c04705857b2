#!/usr/bin/env python3
"""Runs Eddy's benchmark cases and prints one line per case.

Each case runs the release `eddy` binary as a child process on a generated input; records per
second are over wall time, per CPU-second over the child's own user+system time (the machines
are shared), peak RSS from the child's rusage. Not a test: no assertion on speed.
"""
import os, subprocess, sys, tempfile

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
    # A fresh Python child per case, so its RUSAGE_CHILDREN peak RSS is this eddy run's alone.
    probe = (
        "import resource,subprocess,sys,time;t=time.monotonic();"
        "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE,text=True);"
        "w=time.monotonic()-t;u=resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(p.returncode,w,u.ru_utime+u.ru_stime,u.ru_maxrss);sys.stderr.write(p.stderr)"
    )
    p = subprocess.run([sys.executable, "-c", probe, EDDY, "run", "--quiet", "-p", str(parallelism), path],
                       capture_output=True, text=True)
    code, wall, cpu, rss_kb = p.stdout.split()
    if code != "0":
        sys.exit(f"bench: {plan} failed: {p.stderr}")
    results = sum(1 for _ in open(out))
    return float(wall), float(cpu), int(rss_kb) / 1024, results


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
