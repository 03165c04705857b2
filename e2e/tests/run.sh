#!/usr/bin/env bash
# Eddy's end-to-end smoke suite.
#
#   run.sh --own-cluster   e2e/cluster.sh up, the suite, down (whatever fails), then check that
#                          down left nothing behind
#   run.sh --existing      against $KUBECONFIG's cluster (images must already be there)
#   run.sh --kind          create a kind cluster, kind load the image archives, suite, delete
#
# Environment: EDDY (the host eddy binary, for the expected output), IMAGES_DIR (eddy.tar,
# eddy-operator.tar), EDDY_IMAGE, BUSYBOX_IMAGE, E2E_ONLY (a regex of test names to run).
# The last line is "e2e: N passed, N failed, N skipped"; the exit status is 0 only if none failed.
# shellcheck disable=SC2317  # the `...; exit $?` last line makes shellcheck think functions unreachable
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=e2e/lib/versions.sh
. "$REPO/e2e/lib/versions.sh"
MODE=${1:---existing}
EDDY=${EDDY:-${CARGO_TARGET_DIR:-$REPO/target}/release/eddy}
IMAGES_DIR=${IMAGES_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/images}
EDDY_IMAGE=${EDDY_IMAGE:-eddy.local/eddy:dev}
CRD_FILE=${CRD_FILE:-$REPO/crds/streamjob.yaml}
BUSYBOX_IMAGE=${BUSYBOX_IMAGE:-eddy.local/busybox:1.35}
KIND_CLUSTER=${KIND_CLUSTER:-eddy-e2e}
NS=eddy-e2e-$$
CLUSTER="$REPO/e2e/cluster.sh"
WORK=$(mktemp -d /tmp/eddy-e2e-run.XXXX)
PASSED=0 FAILED=0 SKIPPED=0 FAILED_NAMES=()

say() { echo "e2e: $*" >&2; }
# Local images are never pulled (there is nowhere to pull them from); others may be.
policy() { case $1 in eddy.local/*) echo Never ;; *) echo IfNotPresent ;; esac; }

# poll LIMIT_S CMD...: retries CMD until it succeeds or LIMIT_S pass; CMD returning 2 means
# "never going to succeed" and stops at once. The last output is kept in $WORK/poll.out.
poll() {
  local end=$((SECONDS + $1)) rc; shift
  while true; do
    "$@" >"$WORK/poll.out" 2>&1 && return 0
    rc=$?
    if ((rc == 2 || SECONDS >= end)); then cat "$WORK/poll.out"; return 1; fi
    sleep 1
  done
}

# ------------------------------------------------------------------------------------- runner
# run_test NAME: runs t_NAME with its output in a file; on failure shows that output and the
# namespace's state, so the cause is on screen without re-running anything.
run_test() {
  local name=$1 log="$WORK/$1.log" t0=$SECONDS rc
  if [ -n "${E2E_ONLY:-}" ] && ! [[ $name =~ $E2E_ONLY ]]; then return 0; fi
  ( set -e; "t_$name" ) >"$log" 2>&1
  rc=$?
  if ((rc == 0)); then
    PASSED=$((PASSED + 1)); say "PASS $name ($((SECONDS - t0)) s)"
  elif ((rc == 77)); then
    SKIPPED=$((SKIPPED + 1)); say "SKIP $name: $(tail -n 1 "$log")"
  else
    FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name")
    say "FAIL $name ($((SECONDS - t0)) s) -- its output:"
    sed 's/^/    | /' "$log" >&2
    if [ "$name" != down_leaves_nothing ]; then
      say "  state of namespace $NS:"
      { kubectl -n "$NS" get all,events -o wide 2>&1 | tail -n 40; } | sed 's/^/    | /' >&2
    fi
  fi
}
skip() { echo "$*"; exit 77; }
fail() { echo "FAILED: $*"; exit 1; }

# job_run NAME IMAGE command|args WORD...: a Job whose pod sees the examples at /work/examples
# (ConfigMap) under a writable /work, WORDs replacing the image's entrypoint (command) or
# following it (args); waits for completion and writes the pod's log to $WORK/NAME.out.
job_run() {
  local name=$1 image=$2 field=$3; shift 3
  local words; words=$(printf '%s\n' "$@" | jq -R . | jq -sc .)
  kubectl -n "$NS" apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: $name}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 300
  template:
    spec:
      restartPolicy: Never
      securityContext: {runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}
      containers:
      - name: main
        image: $image
        imagePullPolicy: $(policy "$image")
        $field: $words
        workingDir: /work
        volumeMounts:
        - {name: work, mountPath: /work}
        - {name: examples, mountPath: /work/examples}
      volumes:
      - {name: work, emptyDir: {}}
      - {name: examples, configMap: {name: examples, items: [$(paste -sd, "$WORK/examples-items")]}}
EOF
  if ! poll 240 job_finished "$name"; then
    kubectl -n "$NS" describe "job/$name" | tail -n 20
    kubectl -n "$NS" logs "job/$name" --tail=50 || true
    fail "job $name did not complete"
  fi
  kubectl -n "$NS" logs "job/$name" >"$WORK/$name.out"
}

# ------------------------------------------------------------------------------------- tests
# Succeeds once the Job completed; gives up (exit 2 ends poll at once) when it failed.
job_finished() {
  local s; s=$(kubectl -n "$NS" get "job/$1" -o jsonpath='{.status.succeeded}/{.status.failed}')
  case $s in 1/*) return 0 ;; */[1-9]*) echo "job $1 failed"; return 2 ;; esac
  # A pod that cannot get its image or config will not recover: say so now, not at the deadline.
  local why; why=$(kubectl -n "$NS" get pods -l "job-name=$1" \
    -o jsonpath='{.items[*].status.containerStatuses[*].state.waiting.reason}')
  case $why in
    *ErrImageNeverPull* | *ImagePullBackOff* | *ErrImagePull* | *InvalidImageName* | *CreateContainerConfigError* | *CreateContainerError*)
      echo "job $1: pod stuck: $why"; return 2 ;;
  esac
  return 1
}

t_node_ready() {
  kubectl version
  poll 60 kubectl wait node --all --for=condition=Ready --timeout=5s || fail "nodes not Ready"
  kubectl get nodes -o wide
  # Pods need the namespace's default ServiceAccount, which the controller-manager adds.
  poll 60 kubectl -n "$NS" get serviceaccount default || fail "no default ServiceAccount in $NS"
}

t_streamjob_crd() {
  local crd; crd=$(kubectl apply --dry-run=client -f "$CRD_FILE" -o name)
  [ -n "$crd" ] || fail "crds/streamjob.yaml names no resource"
  # A CRD already installed (the user's cluster) is not ours to remove afterwards.
  if ! kubectl get "$crd" >/dev/null 2>&1; then echo "$crd" >"$WORK/crd-created"; fi
  kubectl apply -f "$CRD_FILE" || fail "the API server rejected crds/streamjob.yaml"
  kubectl wait "$crd" --for=condition=Established --timeout=60s
  poll 30 kubectl -n "$NS" get streamjobs || fail "kubectl get streamjobs"
  cat "$WORK/poll.out"
}

# The examples the eddy Job runs (until examples/ exists, the suite's own fixtures, so the
# ConfigMap-mounted Job path is still exercised). ConfigMap keys cannot hold "/", so files in
# subdirectories (examples/data/...) get flattened keys and the volume's items put them back.
examples_src() { if [ -d "$REPO/examples" ]; then echo "$REPO/examples"; else echo "$HERE/fixtures"; fi; }
examples_configmap() {
  local src f key args=()
  src=$(examples_src)
  : >"$WORK/examples-items"
  while read -r f; do
    key=${f//\//__}
    args+=("--from-file=$key=$src/$f")
    echo "{\"key\": \"$key\", \"path\": \"$f\"}" >>"$WORK/examples-items"
  done < <(cd "$src" && find . -type f | sed 's,^\./,,' | LC_ALL=C sort)
  kubectl -n "$NS" get configmap examples >/dev/null 2>&1 && return 0
  kubectl -n "$NS" create configmap examples "${args[@]}"
}

t_job_busybox() {
  examples_configmap
  local src f; src=$(examples_src)
  f=clicks.yaml; [ -f "$src/$f" ] || f=lines.txt
  local want; want=$(wc -l <"$src/$f")
  local files; files=$(cd "$src" && find . -type f | sed 's,^\./,,' | LC_ALL=C sort | tr '\n' ' ')
  # The file, then a checksum of every file of the tree as the pod sees it.
  job_run busybox "$BUSYBOX_IMAGE" command sh -c \
    "cat examples/$f && echo '--- manifest' && cd examples && md5sum $files"
  sed '/^--- manifest$/,$d' "$WORK/busybox.out" >"$WORK/busybox.file"
  sed '1,/^--- manifest$/d' "$WORK/busybox.out" >"$WORK/busybox.manifest"
  local got; got=$(wc -l <"$WORK/busybox.file")
  echo "expected $want lines, got $got"
  [ "$got" -eq "$want" ] || fail "busybox Job printed $got lines, expected $want"
  cmp "$src/$f" "$WORK/busybox.file" || fail "busybox Job output differs from $f"
  # shellcheck disable=SC2086
  (cd "$src" && md5sum $files) >"$WORK/host.manifest"
  diff "$WORK/host.manifest" "$WORK/busybox.manifest" || fail "the mounted examples differ from $src"
  echo "all $(wc -l <"$WORK/host.manifest") example files mounted intact"
}

t_eddy_image() {
  # The image starts at all: entrypoint, copied shared libraries, non-root user, the mounts.
  examples_configmap
  job_run eddy-help "$EDDY_IMAGE" args --help
  head -n 5 "$WORK/eddy-help.out"
}

t_job_eddy() {
  [ -f "$REPO/examples/clicks.yaml" ] || skip "no examples/clicks.yaml in this tree yet"
  [ -x "$EDDY" ] || fail "no eddy binary at $EDDY (make release)"
  # The expectation comes from the same binary run on the host, never a constant.
  local want
  want=$(cd "$REPO" && "$EDDY" run --quiet examples/clicks.yaml | wc -l) ||
    fail "eddy run --quiet examples/clicks.yaml failed on the host"
  [ "$want" -gt 0 ] || skip "eddy prints no result lines on the host (runtime still a stub?)"
  examples_configmap
  job_run eddy "$EDDY_IMAGE" args run --quiet examples/clicks.yaml
  local got; got=$(wc -l <"$WORK/eddy.out")
  echo "expected $want result lines, got $got"
  [ "$got" -eq "$want" ] || { tail -n 20 "$WORK/eddy.out"; fail "eddy Job printed $got lines, expected $want"; }
}

t_statefulset_dns() {
  kubectl -n "$NS" apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: peers}
spec:
  clusterIP: None
  # Names resolve as soon as pods have IPs, not only once Ready.
  publishNotReadyAddresses: true
  selector: {app: peer}
  ports: [{name: tcp, port: 7000}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: peer}
spec:
  serviceName: peers
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: peer}}
  template:
    metadata: {labels: {app: peer}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}
      containers:
      - name: main
        image: $BUSYBOX_IMAGE
        imagePullPolicy: $(policy "$BUSYBOX_IMAGE")
        # Answers every TCP connection on 7000 with the pod's hostname.
        command: [sh, -c, "while true; do nc -l -p 7000 -e hostname; done"]
EOF
  kubectl -n "$NS" rollout status statefulset/peer --timeout=120s
  local i j host
  for i in 0 1; do
    j=$((1 - i)) host=peer-$((1 - i)).peers.$NS.svc.cluster.local
    if ! poll 60 ask "peer-$i" "$host" "peer-$j"; then
      kubectl -n "$NS" exec "peer-$i" -- nslookup "$host" || true
      kubectl -n "$NS" exec "peer-$i" -- cat /etc/resolv.conf || true
      fail "peer-$i could not reach $host:7000"
    fi
    echo "peer-$i -> $host:7000 answered $(cat "$WORK/poll.out")"
  done
}
ask() { # POD HOST WANT: POD connects to HOST:7000 and must hear WANT
  local got; got=$(kubectl -n "$NS" exec "$1" -- nc -w 3 "$2" 7000 </dev/null) || return 1
  echo "$got"; [ "$got" = "$3" ]
}

t_helm() {
  command -v helm >/dev/null || fail "helm not found on PATH"
  helm version --short
  helm install e2e-smoke "$HERE/chart" -n "$NS" --wait --timeout 120s \
    --set image="$BUSYBOX_IMAGE" --set pullPolicy="$(policy "$BUSYBOX_IMAGE")"
  helm -n "$NS" status e2e-smoke
  kubectl -n "$NS" get configmap e2e-smoke-greeting -o jsonpath='{.data.greeting}{"\n"}'
  kubectl -n "$NS" rollout status deploy/e2e-smoke --timeout=60s
  helm uninstall e2e-smoke -n "$NS" --wait --timeout 120s
  [ -z "$(helm -n "$NS" list -q)" ] || fail "helm list still shows a release after uninstall"
  poll 60 gone configmap/e2e-smoke-greeting || fail "the chart's ConfigMap outlived uninstall"
  poll 60 gone deploy/e2e-smoke || fail "the chart's Deployment outlived uninstall"
}
gone() { ! kubectl -n "$NS" get "$1" >/dev/null 2>&1; }

# A service on the node (as Kafka and the S3 server will be: inside the cluster's namespace,
# bound to the node IP) reached from a pod through `cluster.sh expose`'s Service name.
t_node_service() {
  [ -n "${OWN_CLUSTER:-}" ] || skip "needs e2e/cluster.sh's own cluster"
  "$CLUSTER" exec busybox nc -ll -p 9099 -e echo node-service >/dev/null 2>&1 &
  echo $! >"$WORK/nc.pid"
  "$CLUSTER" expose "$NS" node-echo 9099
  job_run node-service "$BUSYBOX_IMAGE" command sh -c \
    "for i in \$(seq 1 30); do nc -w 3 node-echo.$NS.svc.cluster.local 9099 </dev/null && exit 0; sleep 1; done; exit 1"
  grep -x node-service "$WORK/node-service.out" || fail "no answer through Service node-echo"
}

t_down_leaves_nothing() {
  "$CLUSTER" down || fail "cluster.sh down failed"
  "$CLUSTER" leftovers || fail "down left the above behind"
  echo "nothing left behind"
}

# -------------------------------------------------------------------------------------- main
cleanup_ns() {
  kubectl delete namespace "$NS" --wait=true --timeout=120s >/dev/null 2>&1 || true
  if [ -f "$WORK/crd-created" ]; then kubectl delete "$(cat "$WORK/crd-created")" >/dev/null 2>&1 || true; fi
}

suite() {
  kubectl create namespace "$NS" >/dev/null || { say "cannot create namespace $NS"; return 1; }
  run_test node_ready
  run_test streamjob_crd
  run_test job_busybox
  run_test eddy_image
  run_test job_eddy
  run_test statefulset_dns
  run_test helm
  run_test node_service
  if [ -f "$WORK/nc.pid" ]; then kill "$(cat "$WORK/nc.pid")" 2>/dev/null || true; fi
}

summary() {
  ((FAILED == 0)) || say "failed: ${FAILED_NAMES[*]}"
  echo "e2e: $PASSED passed, $FAILED failed, $SKIPPED skipped"
  rm -rf "$WORK"
  ((FAILED == 0))
}

t_start=$SECONDS
case $MODE in
  --own-cluster)
    PATH=$EDDY_CACHE/k8s/$K8S_VERSION/bin:$EDDY_CACHE/helm/$HELM_VERSION/bin:$PATH
    # Whatever happens from here on, the cluster goes away.
    trap '"$CLUSTER" down >/dev/null 2>&1 || true' EXIT
    if ! KUBECONFIG=$("$CLUSTER" up); then
      FAILED=1 FAILED_NAMES=(cluster_up); summary; exit 1
    fi
    export KUBECONFIG OWN_CLUSTER=1
    for img in "$IMAGES_DIR/eddy.tar" "$IMAGES_DIR/eddy-operator.tar"; do
      if [ -f "$img" ]; then "$CLUSTER" load "$img" >/dev/null || say "could not load $img"; fi
    done
    suite
    run_test down_leaves_nothing
    trap - EXIT
    ;;
  --existing)
    [ -n "${KUBECONFIG:-}" ] || { say "set KUBECONFIG to the cluster to test"; exit 2; }
    export KUBECONFIG
    trap cleanup_ns EXIT
    suite
    ;;
  --kind)
    for t in kind docker kubectl helm; do
      command -v "$t" >/dev/null || { say "$t not found on PATH (make e2e-kind needs Docker, kind, kubectl, helm)"; exit 2; }
    done
    KUBECONFIG=$WORK/kind.kubeconfig; export KUBECONFIG
    # busybox from Docker Hub: kind nodes can pull; our own images are loaded from the archives.
    BUSYBOX_IMAGE=${E2E_KIND_BUSYBOX:-docker.io/library/busybox:1.36}
    trap 'kind delete cluster --name "$KIND_CLUSTER" >/dev/null 2>&1 || true' EXIT
    kind create cluster --name "$KIND_CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s || exit 1
    for img in "$IMAGES_DIR/eddy.tar" "$IMAGES_DIR/eddy-operator.tar"; do
      kind load image-archive "$img" --name "$KIND_CLUSTER" || exit 1
    done
    suite
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
say "suite took $((SECONDS - t_start)) s"
summary; exit $?  # one line: see the end of cluster.sh
