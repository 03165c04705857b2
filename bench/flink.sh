#!/usr/bin/env bash
# The Apache Flink baseline of `make bench` (see bench/flink/README.md).
#
#   bench/flink.sh build
#       mvn package, skipped when the jar is newer than every source; Maven's local repository
#       is ~/.cache/eddy/m2 (override with EDDY_M2) so the Flink jars are downloaded once.
#   bench/flink.sh run CASE PARALLELISM COUNT OUTPUT [--state heap|rocksdb] [--input FILE] [--warmup N]
#       CASE: keyed-count | q5 | q7 | q8 | file-count, each also as CASE-sql (Flink SQL);
#       COUNT is ignored by file-count.
#       Prints one line: flink case=... records=... cpu_s=... per_cpu_s=... peak_rss_mb=...
#   bench/flink.sh dump KIND SEED COUNT [KEYS] [EVENTS_PER_SECOND] [MAX_DISORDER_MS]
#       The generator's records as JSON lines (KIND: generator | nexmark-bid | nexmark-person |
#       nexmark-auction), e.g. the input of file-count:
#       bench/flink.sh dump generator 42 20000000 10000 > clicks.jsonl
set -euo pipefail
here="$(cd "$(dirname "$0")/flink" && pwd)"
jar="$here/target/eddy-flink-baseline.jar"
m2="${EDDY_M2:-$HOME/.cache/eddy/m2}"

# JVM flags: a 2 GiB heap, fixed and pre-touched at start-up so that neither heap growth nor
# first-touch page faults land in the measurement (the cases keep little state: a few windows;
# peak_rss_mb therefore includes the whole pre-touched heap). ParallelGC is the throughput
# collector, the fair choice for a CPU-per-record comparison (G1's concurrent work costs CPU).
# The --add-opens are the ones Flink's own launch scripts pass on Java 17 (Kryo/reflection).
# FLINK_JAVA_OPTS adds flags (e.g. a profiler agent).
JAVA_OPTS_DEFAULT=(-Xms2g -Xmx2g -XX:+UseParallelGC -XX:+AlwaysPreTouch
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.time=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED)

build() {
  if [[ -f "$jar" && -d "$here/target/lib" ]] \
     && [[ -z "$(find "$here/pom.xml" "$here/src" "$here/gen" -newer "$jar" -type f -print -quit)" ]]; then
    return 0
  fi
  # Maven's output goes to stderr: stdout is the benchmark's one line.
  (cd "$here" && mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$m2" package) >&2
}

case "${1:-}" in
  build)
    build
    ;;
  run)
    [[ $# -ge 5 ]] || { echo "usage: $0 run CASE PARALLELISM COUNT OUTPUT [--state heap|rocksdb] [--input FILE]" >&2; exit 2; }
    build
    shift
    c="$1" p="$2" n="$3" out="$4"
    shift 4
    # shellcheck disable=SC2086
    exec java "${JAVA_OPTS_DEFAULT[@]}" ${FLINK_JAVA_OPTS:-} -cp "$jar:$here/target/lib/*" \
      eddy.bench.EddyBaseline --case "$c" --parallelism "$p" --count "$n" --output "$out" "$@"
    ;;
  dump)
    build
    shift
    exec java -cp "$jar" eddy.gen.Dump "$@"
    ;;
  *)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
    ;;
esac
