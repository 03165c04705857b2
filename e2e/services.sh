#!/usr/bin/env bash
# Real services for integration tests, on 127.0.0.1 only, with their data in a temporary dir:
# an Apache Kafka broker (KRaft, one combined broker+controller node) and the Versity S3 Gateway.
#
#   services.sh up                 fetch/build once (cached), start both, wait until each really
#                                  serves, write e2e/.services.env; restarts only what is down
#   services.sh down               stop what `up` started (by recorded pid), delete the data dir
#   services.sh status             whether each runs and answers (exit 1 if either does not)
#   services.sh env                print the KEY=value lines of e2e/.services.env
#   services.sh stop-kafka [--kill] | start-kafka    stop / restart the broker, keeping its data
#   services.sh stop-s3 [--kill] | start-s3          stop / restart the S3 gateway, keeping its data
#   services.sh topic NAME [PARTITIONS]  create a topic (4 partitions by default) if it is missing
#   services.sh consume NAME [MAX]       print a topic's records as a read_committed consumer sees
#                                        them, from the beginning (stops after MAX or 5 s idle)
#
# Env: EDDY_KAFKA_PORT (19092), EDDY_KAFKA_CONTROLLER_PORT (19093), EDDY_S3_PORT (19000),
# EDDY_KAFKA_VERSION (4.4.0), EDDY_VERSITYGW_VERSION (v1.8.0), EDDY_KAFKA_HEAP (512m),
# EDDY_SERVICES_STATE (/tmp/eddy-services.state), EDDY_CACHE (~/.cache/eddy). See e2e/README.md.
# shellcheck disable=SC2317  # functions called through wait_for/start look unreachable to it
set -Eeuo pipefail
if [ -n "${EDDY_TRACE:-}" ]; then PS4='+ $(date +%T.%N) '; set -x; fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/lib/versions.sh
. "$HERE/lib/versions.sh"   # EDDY_CACHE

KAFKA_VERSION=${EDDY_KAFKA_VERSION:-4.4.0}
VGW_VERSION=${EDDY_VERSITYGW_VERSION:-v1.8.0}
STATE=${EDDY_SERVICES_STATE:-/tmp/eddy-services.state}
ENV_FILE=$HERE/.services.env
POM=$HERE/services/kafka/pom.xml
S3_ACCESS=eddy-test S3_SECRET=eddy-test-secret S3_REGION=us-east-1 S3_BUCKET=eddy
READY_TOPIC=eddy-services-ready   # the broker check's topic (and consumer group, transactional id)

log() { echo "services: $*" >&2; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_free() { ! port_open "$1" || { log "127.0.0.1:$1 is taken by another process"; return 1; }; }
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

# ------------------------------------------------------------------------------------ state
# The state file names the data dir and the ports chosen by the `up` that made it; it is parsed,
# not sourced. Everything else (pids, logs, configs, data) lives in the data dir.
DATA="" KAFKA_PORT="" CONTROLLER_PORT="" S3_PORT="" KAFKA_LIBS="" VGW_BIN=""
load_state() {
  [ -f "$STATE" ] || return 1
  local k v
  while IFS='=' read -r k v; do
    case $k in DATA | KAFKA_PORT | CONTROLLER_PORT | S3_PORT | KAFKA_LIBS | VGW_BIN) printf -v "$k" '%s' "$v" ;; esac
  done <"$STATE"
  # Only a dir that `up` made: `down` deletes it.
  [[ $DATA =~ ^/tmp/eddy-services\.[A-Za-z0-9]{6}$ ]] || DATA=""
  [ -n "$DATA" ] && [ -d "$DATA" ]
}
save_state() {
  printf '%s\n' "DATA=$DATA" "KAFKA_PORT=$KAFKA_PORT" "CONTROLLER_PORT=$CONTROLLER_PORT" \
    "S3_PORT=$S3_PORT" "KAFKA_LIBS=$KAFKA_LIBS" "VGW_BIN=$VGW_BIN" >"$STATE.tmp"
  mv "$STATE.tmp" "$STATE"
}

# our_pid NAME: the recorded pid, if it still runs and its command line names our data dir
# (pids get reused; the data dir is unique to this run).
our_pid() {
  local f=$DATA/pids/$1 pid
  [ -n "$DATA" ] && [ -f "$f" ] || return 1
  pid=$(cat "$f"); alive "$pid" || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DATA/" || return 1
  echo "$pid"
}
# Any process whose command line names our data dir (a pid file lost mid-start); the \Q..\E
# pattern keeps grep from matching its own command line.
stray_pids() {
  [ -n "$DATA" ] || return 0
  { grep -alP -- "\\Q$DATA\\E/(kafka|s3)/" /proc/[0-9]*/cmdline 2>/dev/null || true; } |
    cut -d/ -f3 | { grep -vxE "$$|$BASHPID" || true; }
}

# ------------------------------------------------------------------------------- fetch/build
need_tools() {
  local missing=() c
  for c in curl mvn "$JAVA"; do command -v "$c" >/dev/null || missing+=("$c"); done
  ((${#missing[@]} == 0)) || { log "missing ${missing[*]}: run e2e/deps.sh"; exit 1; }
  command -v go >/dev/null || [ -x "$EDDY_CACHE/versitygw/$VGW_VERSION/bin/versitygw" ] ||
    { log "missing go (needed once, to build versitygw)"; exit 1; }
  local v; v=$("$JAVA" -XshowSettings:properties -version 2>&1 | awk '/java.specification.version/ {print $3}')
  [ "${v%%.*}" -ge 17 ] 2>/dev/null || { log "Kafka $KAFKA_VERSION needs Java 17+, $JAVA is $v"; exit 1; }
}

install_dir() { rm -rf "$2.old"; [ ! -e "$2" ] || mv "$2" "$2.old"; mv "$1" "$2"; rm -rf "$2.old"; }

fetch_kafka() { # the broker's and tools' jars, from Maven Central via the pom, once per version
  local out=$EDDY_CACHE/kafka/$KAFKA_VERSION
  KAFKA_LIBS=$out/libs
  [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] && cmp -s "$POM" "$out/pom.xml" && return 0
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central"
  local t0=$SECONDS w; mkdir -p "$EDDY_CACHE/kafka"; w=$(mktemp -d "$EDDY_CACHE/kafka/fetch.XXXX")
  mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$EDDY_CACHE/m2" -f "$POM" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$w/libs" >"$w/mvn.log" 2>&1 ||
    { tail -n 30 "$w/mvn.log" >&2; rm -rf "$w"; log "fetching Kafka failed"; exit 1; }
  cp "$POM" "$w/pom.xml"; install_dir "$w" "$out"
  log "Kafka $KAFKA_VERSION: $(ls "$KAFKA_LIBS" | wc -l) jars in $((SECONDS - t0)) s"
}

build_versitygw() { # go install from the module proxy, once per version, like lib/build.sh
  local out=$EDDY_CACHE/versitygw/$VGW_VERSION
  VGW_BIN=$out/bin/versitygw
  [ -x "$VGW_BIN" ] && return 0
  log "building versitygw $VGW_VERSION (cold: ~1-2 min)"
  local t0=$SECONDS w; mkdir -p "$EDDY_CACHE/versitygw"; w=$(mktemp -d "$EDDY_CACHE/versitygw/build.XXXX")
  (
    export GOPATH="$EDDY_CACHE/go" GOMODCACHE="$EDDY_CACHE/go/mod" GOCACHE="$EDDY_CACHE/go/cache"
    export GOFLAGS="-buildvcs=false -modcacherw" CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$w/bin"
    go install -trimpath -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$VGW_VERSION"
  ) >"$w/go.log" 2>&1 || { tail -n 30 "$w/go.log" >&2; rm -rf "$w"; log "building versitygw failed"; exit 1; }
  install_dir "$w" "$out"
  log "versitygw built in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------- kafka
kafka_config() {
  local k=$DATA/kafka l="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
  mkdir -p "$k/data"
  # One combined broker+controller; every internal topic with one replica and one partition.
  printf '%s\n' process.roles=broker,controller node.id=1 controller.listener.names=CONTROLLER \
    "controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT" "listeners=$l" "advertised.listeners=$l" \
    listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT inter.broker.listener.name=PLAINTEXT \
    "log.dirs=$k/data" num.network.threads=2 num.io.threads=4 num.partitions=1 default.replication.factor=1 \
    auto.create.topics.enable=true group.initial.rebalance.delay.ms=0 \
    offsets.topic.replication.factor=1 offsets.topic.num.partitions=1 \
    transaction.state.log.replication.factor=1 transaction.state.log.min.isr=1 \
    transaction.state.log.num.partitions=1 share.coordinator.state.topic.replication.factor=1 \
    share.coordinator.state.topic.min.isr=1 log.cleaner.dedupe.buffer.size=33554432 >"$k/server.properties"
  # The broker logs to a file; the tools log warnings to stderr, so their stdout is their output.
  local common=("status = warn" "appender.out.name = out" "appender.out.layout.type = PatternLayout"
    "appender.out.layout.pattern = [%d] %p %m (%c)%n" "rootLogger.appenderRef.out.ref = out")
  printf '%s\n' "${common[@]}" "appender.out.type = File" "appender.out.fileName = $DATA/logs/kafka.log" \
    "rootLogger.level = info" >"$k/log4j2-server.properties"
  printf '%s\n' "${common[@]}" "appender.out.type = Console" "appender.out.target = SYSTEM_ERR" \
    "rootLogger.level = warn" >"$k/log4j2-tools.properties"
  printf '%s\n' request.timeout.ms=5000 default.api.timeout.ms=15000 >"$k/admin.properties"
  # Kafka's cluster ids are 16 random bytes in URL-safe base64, never starting with '-'.
  local id="-"; until [[ $id != -* ]]; do id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='); done
  "$JAVA" -Dlog4j2.configurationFile="$k/log4j2-tools.properties" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool \
    format -t "$id" -c "$k/server.properties" --standalone >"$DATA/logs/kafka-format.log" 2>&1 ||
    { cat "$DATA/logs/kafka-format.log" >&2; return 1; }
}

# kt CLASS ARGS...: a Kafka tool (org.apache.kafka.tools.CLASS), bounded in time.
kt() {
  local cls=$1; shift
  timeout 60 "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$DATA/kafka/log4j2-tools.properties" \
    -cp "$KAFKA_LIBS/*" "org.apache.kafka.tools.$cls" "$@"
}

# A record produced in a transaction and read back read_committed, by a consumer group: proves
# the listener, the metadata, the transaction and group coordinators. The group's committed
# offset makes each check read just its own record.
kafka_check() {
  local b=127.0.0.1:$KAFKA_PORT k=$DATA/kafka tok out
  kt TopicCommand --bootstrap-server "$b" --command-config "$k/admin.properties" --create \
    --if-not-exists --topic "$READY_TOPIC" --partitions 1 --replication-factor 1 >/dev/null || return 1
  tok="ready-$(date +%s%N)"; echo "$tok" >"$k/ready.payload"
  kt ProducerPerformance --bootstrap-server "$b" --topic "$READY_TOPIC" --num-records 1 --throughput -1 \
    --payload-file "$k/ready.payload" --transactional-id "$READY_TOPIC" \
    --command-property acks=all max.block.ms=15000 >/dev/null || return 1
  out=$(kt consumer.ConsoleConsumer --bootstrap-server "$b" --topic "$READY_TOPIC" --group "$READY_TOPIC" \
    --isolation-level read_committed --max-messages 1 --timeout-ms 15000 \
    --command-property auto.offset.reset=earliest 2>/dev/null) || return 1
  grep -qxF "$tok" <<<"$out"
}

kafka_start() {
  port_free "$KAFKA_PORT" && port_free "$CONTROLLER_PORT" || return 1
  local k=$DATA/kafka
  # setsid: its own session, so a ^C to the caller does not reach it; it execs, so $! is java's.
  setsid "$JAVA" "-Xmx${EDDY_KAFKA_HEAP:-512m}" -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -XX:ErrorFile="$DATA/logs/kafka-hs_err_%p.log" \
    -Dlog4j2.configurationFile="$k/log4j2-server.properties" -cp "$KAFKA_LIBS/*" \
    kafka.Kafka "$k/server.properties" >>"$DATA/logs/kafka.out" 2>&1 </dev/null 9>&- &
  echo $! >"$DATA/pids/kafka"
  # (Called in a condition, so errexit is off in here: every step checks its own result.)
  wait_for kafka 60 port_open "$KAFKA_PORT" || return 1
  wait_for kafka 120 kafka_check
}

# ------------------------------------------------------------------------------------- s3
s3curl() { # signed (SigV4) request to our gateway; never through a proxy
  curl -sS --noproxy '*' --max-time 10 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS:$S3_SECRET" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
s3_check() { # health, the bucket (made if missing), a small object put, read back, deleted
  local e=http://127.0.0.1:$S3_PORT tok code f=$DATA/s3/ready.txt
  curl -fsS --noproxy '*' --max-time 5 -o /dev/null "$e/health" || return 1
  code=$(s3curl -o /dev/null -w '%{http_code}' -X PUT "$e/$S3_BUCKET") || return 1
  [ "$code" = 200 ] || [ "$code" = 409 ] || return 1   # 409: BucketAlreadyOwnedByYou
  tok="ready-$(date +%s%N)"; echo "$tok" >"$f"
  s3curl -f -o /dev/null -T "$f" "$e/$S3_BUCKET/eddy-services-ready.txt" || return 1
  [ "$(s3curl -f "$e/$S3_BUCKET/eddy-services-ready.txt")" = "$tok" ] || return 1
  s3curl -f -o /dev/null -X DELETE "$e/$S3_BUCKET/eddy-services-ready.txt"
}

s3_start() {
  port_free "$S3_PORT" || return 1
  mkdir -p "$DATA/s3/root" || return 1
  # env -i: versitygw reads many settings from the environment (VGW_*, ROOT_ACCESS_KEY, LOGFILE...).
  setsid env -i PATH=/usr/bin:/bin HOME="$DATA/s3" "$VGW_BIN" --access "$S3_ACCESS" --secret "$S3_SECRET" \
    --region "$S3_REGION" --port "127.0.0.1:$S3_PORT" --health /health --quiet --keep-alive \
    --access-log "$DATA/logs/s3-access.log" posix "$DATA/s3/root" >>"$DATA/logs/s3.log" 2>&1 </dev/null 9>&- &
  echo $! >"$DATA/pids/s3"
  wait_for s3 30 s3_check
}

# --------------------------------------------------------------------------------- common
# wait_for NAME LIMIT CMD...: poll CMD until it succeeds; fail if NAME's process exits or time's up.
wait_for() {
  local name=$1 end=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    # Alive is enough here: `our_pid` also wants the data dir in its command line, which the
    # child has only once it has exec'd java or versitygw, and the first poll can come before
    # that ("kafka exited" at once, with an empty log, failed one CI run).
    alive "$(cat "$DATA/pids/$name" 2>/dev/null)" || { FAILED=$name; log "$name exited"; return 1; }
    ((SECONDS < end)) || { FAILED=$name; log "$name: no answer after $((SECONDS - end + $2)) s"; return 1; }
    sleep 0.5
  done
}

show_logs() { # NAME: the end of its logs, to stderr
  local f; for f in "$DATA/logs/$1".{out,log} "$DATA/logs/$1"-hs_err_*.log; do
    if [ -s "$f" ]; then log "last lines of $f:"; tail -n 30 "$f" >&2; fi; done
}

# stop NAME [SIGNAL]: SIGTERM (or SIGNAL), wait up to 30 s, then SIGKILL. Data stays.
stop() {
  local name=$1 sig=${2:-TERM} pid end
  pid=$(our_pid "$name") || { rm -f "$DATA/pids/$name"; log "$name: not running"; return 0; }
  kill -"$sig" "$pid" 2>/dev/null || true
  end=$((SECONDS + 30))
  while alive "$pid" && ((SECONDS < end)); do sleep 0.1; done
  if alive "$pid"; then log "$name: still running after 30 s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  end=$((SECONDS + 10)); while alive "$pid" && ((SECONDS < end)); do sleep 0.1; done
  rm -f "$DATA/pids/$name"; log "$name stopped (pid $pid, SIG$sig)"
}

start() { # NAME: start it on the existing data unless it already runs and answers
  local pid
  if pid=$(our_pid "$1"); then
    FAILED=""; if wait_for "$1" 60 "${1}_check"; then log "$1: already up (pid $pid)"; return 0; fi
    show_logs "$1"; return 1
  fi
  local t0=$SECONDS
  if "${1}_start"; then log "$1 up in $((SECONDS - t0)) s (pid $(cat "$DATA/pids/$1"))"; return 0; fi
  show_logs "$1"; return 1
}

env_lines() {
  cat <<EOF
KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
KAFKA_LIBS=$KAFKA_LIBS
KAFKA_TOOLS_LOG4J=$DATA/kafka/log4j2-tools.properties
S3_ENDPOINT=http://127.0.0.1:$S3_PORT
S3_BUCKET=$S3_BUCKET
S3_ROOT=$DATA/s3/root
AWS_ACCESS_KEY_ID=$S3_ACCESS
AWS_SECRET_ACCESS_KEY=$S3_SECRET
AWS_REGION=$S3_REGION
AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
AWS_ALLOW_HTTP=true
EDDY_SERVICES_DIR=$DATA
EOF
}

# ---------------------------------------------------------------------------------- commands
up() {
  local t0=$SECONDS p keep
  need_tools; fetch_kafka; build_versitygw
  # An earlier up's data dir is reused: whatever of it is stopped is started again.
  if ! load_state || [ ! -f "$DATA/kafka/data/meta.properties" ]; then
    [ ! -f "$STATE" ] || down
    KAFKA_PORT=${EDDY_KAFKA_PORT:-19092} CONTROLLER_PORT=${EDDY_KAFKA_CONTROLLER_PORT:-19093}
    S3_PORT=${EDDY_S3_PORT:-19000}
    for p in "$KAFKA_PORT" "$CONTROLLER_PORT" "$S3_PORT"; do [[ $p =~ ^[0-9]+$ ]] || { log "bad port '$p'"; exit 1; }; done
    fetch_kafka; build_versitygw   # again: load_state may have set KAFKA_LIBS and VGW_BIN
    DATA=$(mktemp -d /tmp/eddy-services.XXXXXX); mkdir -p "$DATA/pids" "$DATA/logs"; save_state
    kafka_config || { down; exit 1; }
  fi
  if start kafka && start s3; then
    env_lines >"$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"
    log "up in $((SECONDS - t0)) s; $ENV_FILE:"; cat "$ENV_FILE"; return 0
  fi
  keep=$(mktemp -d /tmp/eddy-services-logs.XXXX); cp -r "$DATA/logs/." "$keep/" 2>/dev/null || true
  log "FAILED: ${FAILED:-a service} did not come up; logs kept in $keep; tearing down"
  down; exit 1
}

down() {
  local t0=$SECONDS
  load_state || true
  if [ -n "$DATA" ] && [ -d "$DATA" ]; then
    stop s3; stop kafka
    local left; left=$(stray_pids)
    # shellcheck disable=SC2086
    [ -z "$left" ] || { log "stopping strays: $left"; kill -KILL $left 2>/dev/null || true; }
    rm -rf "$DATA"
  fi
  rm -f "$STATE" "$ENV_FILE"
  log "down in $((SECONDS - t0)) s"
}

status() {
  load_state || { echo "services: not up (no $STATE)"; return 1; }
  local rc=0 pid
  # Cheap: the process and its port (`up` is the thorough check).
  if ! pid=$(our_pid kafka); then echo "kafka: not running"; rc=1
  elif port_open "$KAFKA_PORT"; then echo "kafka: up (pid $pid) on 127.0.0.1:$KAFKA_PORT"
  else echo "kafka: starting (pid $pid), 127.0.0.1:$KAFKA_PORT not answering"; rc=1; fi
  if ! pid=$(our_pid s3); then echo "s3: not running"; rc=1
  elif curl -fsS --noproxy '*' --max-time 3 -o /dev/null "http://127.0.0.1:$S3_PORT/health" 2>/dev/null; then
    echo "s3: up (pid $pid) on http://127.0.0.1:$S3_PORT, bucket $S3_BUCKET"
  else echo "s3: starting (pid $pid), http://127.0.0.1:$S3_PORT not answering"; rc=1; fi
  echo "data: $DATA"
  return $rc
}


cmd=${1:-}
case $cmd in up | down | stop-* | start-*)
  # One command at a time changes the services (tests may call up concurrently).
  # The services must not inherit fd 9 (they would hold the lock): each start closes it.
  exec 9>>"$STATE.lock"; flock 9 ;;
esac
case $cmd in
  up) up ;;
  down) down ;;
  status) status ;;
  env) load_state || { log "not up"; exit 1; }; env_lines ;;
  topic)
    load_state || { log "not up: run '$0 up' first"; exit 1; }
    [ -n "${2:-}" ] || { log "usage: $0 topic NAME [PARTITIONS]"; exit 2; }
    kt TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --command-config "$DATA/kafka/admin.properties" \
      --create --if-not-exists --topic "$2" --partitions "${3:-4}" --replication-factor 1 ;;
  consume)
    load_state || { log "not up: run '$0 up' first"; exit 1; }
    [ -n "${2:-}" ] || { log "usage: $0 consume NAME [MAX]"; exit 2; }
    kt consumer.ConsoleConsumer --bootstrap-server "127.0.0.1:$KAFKA_PORT" --topic "$2" --from-beginning \
      --isolation-level read_committed --timeout-ms 5000 ${3:+--max-messages "$3"} 2>/dev/null || true ;;
  stop-kafka | stop-s3 | start-kafka | start-s3)
    load_state || { log "not up: run '$0 up' first"; exit 1; }
    case $cmd:${2:-} in
      stop-*:) stop "${cmd#stop-}" ;;
      stop-*:--kill) stop "${cmd#stop-}" KILL ;;
      start-*:) need_tools; start "${cmd#start-}" ;;
      *) sed -n '2,15p' "$0" >&2; exit 2 ;;
    esac ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
# `exit` on the same line: bash has read the whole command before running it, so editing this
# file while services come up cannot make the running script execute a shifted tail.
esac; exit $?
