#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, without Docker, inside a network namespace.
#
#   cluster.sh up            build (once, cached) and start; prints the KUBECONFIG path
#   cluster.sh down          stop and remove everything `up` made (safe to repeat)
#   cluster.sh status        what runs
#   cluster.sh load IMG.tar  import an OCI image archive into the node's containerd
#   cluster.sh kubeconfig    print the KUBECONFIG path
#   cluster.sh leftovers     list what a previous cluster left behind (exit 1 if anything)
#   cluster.sh exec CMD...   run CMD inside the cluster's network namespace (e.g. a test
#                            service that pods must reach: bind it to the node IP)
#   cluster.sh expose NS NAME PORT
#                            a Service NAME.NS.svc:PORT for something listening on the node IP
#                            inside the namespace (selector-less Service + EndpointSlice, since
#                            Endpoints cannot point at loopback)
#   cluster.sh node-ip       print the node IP
#
# Every component (etcd, the control plane, containerd, kubelet, kube-proxy) runs inside the
# network namespace $EDDY_NETNS, so the node IP, pod bridge, service IPs and DNS exist only
# there; the host reaches the API through a loopback forwarder (lib/apiproxy.py) only.
# Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range), used by nothing else here.
# shellcheck disable=SC2317  # the `...; exit $?` last line makes shellcheck think functions unreachable
set -Eeuo pipefail
# EDDY_TRACE=1: trace with timestamps, to see where time goes.
if [ -n "${EDDY_TRACE:-}" ]; then PS4='+ $(date +%T.%N) '; set -x; fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/lib/versions.sh
. "$HERE/lib/versions.sh"

NETNS=${EDDY_NETNS:-eddy-e2e}
DIR=${EDDY_CLUSTER_DIR:-/var/lib/eddy-e2e}
API_PORT=${EDDY_API_PORT:-16443}   # on the host's loopback
NODE=eddy-node
NODE_IP=198.18.0.1       # on veth0 inside the namespace (Endpoints reject 127.0.0.0/8)
PEER_IP=198.18.0.2       # veth1, the pair's other end, also inside the namespace
POD_CIDR=198.18.64.0/24
POD_GW=198.18.64.1
SVC_CIDR=198.18.128.0/24
API_SVC_IP=198.18.128.1
DNS_IP=198.18.128.10

K8S_BIN=$EDDY_CACHE/k8s/$K8S_VERSION/bin
ETCD_BIN=$EDDY_CACHE/etcd/$ETCD_VERSION/bin
COREDNS_BIN=$EDDY_CACHE/coredns/$COREDNS_VERSION/bin
PAUSE_BIN=$EDDY_CACHE/pause/$K8S_VERSION-$PAUSE_TAG/bin
IMAGES=$EDDY_CACHE/images
PAUSE_IMAGE=eddy.local/pause:$PAUSE_TAG
COREDNS_IMAGE=eddy.local/coredns:$COREDNS_VERSION
BUSYBOX_IMAGE=eddy.local/busybox:1.35
NSPATH=/run/netns/$NETNS
SOCK=$DIR/containerd/containerd.sock
# Paths written whatever our configs say (kubelet's device-plugins dir, CNI's cache, container
# log links, containerd 1.6's shim sockets and fifos, `ip netns`'s self-bind-mounted dir);
# `down` removes those that `up` created.
OUTSIDE_PATHS=(/var/lib/kubelet /var/lib/cni /var/log/containers /var/log/pods /run/containerd /run/netns)
# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver apiproxy containerd kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { echo "cluster: $*" >&2; }
in_ns() { nsenter --net="$NSPATH" -- "$@"; }
kc() { "$K8S_BIN/kubectl" --kubeconfig "$DIR/kubeconfig" "$@"; }
pidof_c() { [ -f "$DIR/pids/$1" ] && cat "$DIR/pids/$1"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# wait_for DEADLINE_S WHAT CMD...: polls CMD until it succeeds; fails naming WHAT.
wait_for() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then FAILED=$what; return 1; fi
    if [ -n "${WATCH_PID:-}" ] && ! alive "$WATCH_PID"; then FAILED=$what; return 1; fi
    sleep 0.3
  done
}

# ---------------------------------------------------------------------------------------- deps
ensure_packages() {
  local need=() p
  for p in containerd runc containernetworking-plugins iptables busybox-static iproute2 \
    util-linux openssl curl jq python3 gcc libc6-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  ((${#need[@]})) || return 0
  log "installing ${need[*]}"
  apt-get update -qq
  # containerd's package would start a system-wide daemon where systemd runs; ours is private.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

build_images() {
  mkdir -p "$IMAGES"
  local img="$HERE/image.sh"
  [ -f "$IMAGES/pause-$PAUSE_TAG.tar" ] ||
    "$img" --name "$PAUSE_IMAGE" --out "$IMAGES/pause-$PAUSE_TAG.tar" --entrypoint '["/pause"]' \
      "bin:$PAUSE_BIN/pause:/pause"
  [ -f "$IMAGES/coredns-$COREDNS_VERSION.tar" ] ||
    "$img" --name "$COREDNS_IMAGE" --out "$IMAGES/coredns-$COREDNS_VERSION.tar" \
      --entrypoint '["/coredns"]' "bin:$COREDNS_BIN/coredns:/coredns"
  if [ ! -f "$IMAGES/busybox.tar" ]; then
    # The test image: one static busybox with its applets linked, so pods can run sh/nc/nslookup.
    local specs=(bin:/bin/busybox:/bin/busybox) a
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || specs+=("link:/bin/$a:busybox"); done
    "$img" --name "$BUSYBOX_IMAGE" --out "$IMAGES/busybox.tar" --entrypoint '["/bin/sh"]' "${specs[@]}"
  fi
}

# ---------------------------------------------------------------------------------------- pki
pki() {
  local p=$DIR/pki; mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=eddy-e2e-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  cert() { # NAME SUBJECT [SAN]
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$p/$1.key" -out "$p/$1.csr" 2>/dev/null
    local ext=$p/$1.ext
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
    [ -z "${3:-}" ] || echo "subjectAltName=$3" >>"$ext"
    openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
      -days 3650 -extfile "$ext" -out "$p/$1.crt" 2>/dev/null
  }
  cert apiserver "/CN=kube-apiserver" \
    "IP:$NODE_IP,IP:127.0.0.1,IP:$API_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=eddy-e2e-admin"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE"
  cert kube-proxy "/CN=system:kube-proxy"
  kubeconfig() { # FILE CERTNAME SERVER
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: eddy-e2e
  cluster: {server: "$3", certificate-authority: "$p/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$p/$2.crt", client-key: "$p/$2.key"}
contexts:
- name: eddy-e2e
  context: {cluster: eddy-e2e, user: $2}
current-context: eddy-e2e
EOF
  }
  local inner=https://$NODE_IP:6443
  kubeconfig "$DIR/admin.kubeconfig" admin "$inner"
  kubeconfig "$DIR/kubeconfig" admin "https://127.0.0.1:$API_PORT"
  local c; for c in controller-manager scheduler kubelet kube-proxy; do
    kubeconfig "$DIR/$c.kubeconfig" "$c" "$inner"
  done
}

# ------------------------------------------------------------------------------------- configs
configs() {
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d" "$DIR/kubelet" "$DIR/logs" "$DIR/pids"
  : >"$DIR/resolv.conf"  # pods' upstream resolvers: none, so host DNS never leaks in
  cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$SOCK.debug"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj: every sandbox would fail with
  # "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # Our own runc state dir, so teardown can find and delete exactly our containers.
        Root = "$DIR/runc"
EOF
  cat >"$DIR/cni/net.d/10-eddy.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "eddy", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni/ipam"}}]}
EOF
  cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$DIR/pki/ca.crt"}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: ["$DNS_IP"]
resolvConf: "$DIR/resolv.conf"
podLogsDir: "$DIR/pod-logs"
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
failSwapOn: false
# A shared CI disk is often fuller than kubelet's defaults tolerate; evicting test pods for
# that would make failures that say nothing about Eddy.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$DIR/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: $NODE
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Zeros mean "leave alone": the conntrack table size and timeouts are host-wide settings.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
EOF
}

# ------------------------------------------------------------------------------------ network
netns_up() {
  ip netns add "$NETNS"
  in_ns ip link set lo up
  in_ns ip link add veth0 type veth peer name veth1
  in_ns ip addr add "$NODE_IP/24" dev veth0
  in_ns ip addr add "$PEER_IP/24" dev veth1
  in_ns ip link set veth0 up
  in_ns ip link set veth1 up
  # No default route: anything not inside the namespace is unreachable, by construction.
  in_ns sysctl -qw net.ipv4.ip_forward=1
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1
}

# -------------------------------------------------------------------------------------- start
# start NAME CMD...: runs CMD in the namespace, in its own session so a ^C to the caller does
# not reach it; nsenter and setsid exec, so the recorded pid is the component's own.
start() {
  local name=$1; shift
  setsid nsenter --net="$NSPATH" -- "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name"
  WATCH_PID=$!
  CURRENT=$name
}

https_ok() { in_ns curl -fsk --max-time 2 "$1"; }
node_ready() {
  [ "$(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

start_all() {
  local b=$K8S_BIN
  start etcd "$ETCD_BIN/etcd" --name eddy --data-dir "$DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster eddy=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
  wait_for 30 etcd in_ns curl -fs --max-time 2 http://127.0.0.1:2379/health

  local p=$DIR/pki
  start kube-apiserver "$b/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --advertise-address="$NODE_IP" --secure-port=6443 \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" --service-cluster-ip-range="$SVC_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP --profiling=false
  wait_for 90 kube-apiserver https_ok "https://127.0.0.1:6443/readyz"

  # The host's way in: a loopback port forwarded into the namespace.
  local py; py=$(command -v /usr/bin/python3 || command -v python3)
  setsid "$py" "$HERE/lib/apiproxy.py" "$NSPATH" "127.0.0.1:$API_PORT" "$NODE_IP:6443" \
    >"$DIR/logs/apiproxy.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/apiproxy"; WATCH_PID=$!; CURRENT=apiproxy
  wait_for 15 apiproxy curl -fsk --max-time 2 "https://127.0.0.1:$API_PORT/readyz"

  start containerd containerd --config "$DIR/containerd/config.toml"
  wait_for 30 containerd ctr --address "$SOCK" version
  CURRENT=containerd
  local tar; for tar in "$IMAGES/pause-$PAUSE_TAG.tar" "$IMAGES/coredns-$COREDNS_VERSION.tar" "$IMAGES/busybox.tar"; do
    load_image "$tar" >/dev/null || { FAILED=containerd; return 1; }
  done

  start kube-controller-manager "$b/kube-controller-manager" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --service-cluster-ip-range="$SVC_CIDR" --profiling=false
  wait_for 60 kube-controller-manager https_ok https://127.0.0.1:10257/healthz

  start kube-scheduler "$b/kube-scheduler" --kubeconfig="$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  wait_for 60 kube-scheduler https_ok https://127.0.0.1:10259/healthz

  start kubelet "$b/kubelet" --config="$DIR/kubelet/config.yaml" \
    --kubeconfig="$DIR/kubelet.kubeconfig" --root-dir="$DIR/kubelet" \
    --cert-dir="$DIR/kubelet/pki" --node-ip="$NODE_IP" --hostname-override="$NODE"
  wait_for 90 kubelet node_ready

  start kube-proxy "$b/kube-proxy" --config="$DIR/kube-proxy.yaml"
  wait_for 60 kube-proxy in_ns curl -fs --max-time 2 http://127.0.0.1:10256/healthz

  WATCH_PID=""; CURRENT=coredns
  coredns_manifest | kc apply -f - >/dev/null
  wait_for 120 coredns kc -n kube-system rollout status deploy/coredns --timeout=5s
}

coredns_manifest() {
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # Only cluster names: no forward (nothing outside the namespace to ask) and no loop plugin.
  Corefile: |
    .:53 {
        errors
        health
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 5
        }
        cache 5
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        securityContext:
          runAsUser: 0
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 1}
        livenessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 10}
        volumeMounts: [{name: config, mountPath: /etc/coredns}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

load_image() {
  [ -S "$SOCK" ] || { log "no cluster running (no $SOCK)"; return 1; }
  # --all-platforms: our archives carry one platform; without it ctr insists on a match list.
  ctr --address "$SOCK" -n k8s.io images import --all-platforms "$1"
}

up() {
  [ "$(id -u)" -eq 0 ] || { log "needs root (namespaces, mounts, cgroups)"; exit 1; }
  if [ -e "$NSPATH" ] || [ -d "$DIR/pids" ]; then
    if status >/dev/null 2>&1; then log "already up"; echo "$DIR/kubeconfig"; return 0; fi
    log "cleaning up a previous, broken cluster first"; down
  fi
  local t0=$SECONDS
  ensure_packages
  "$HERE/lib/build.sh" all
  build_images
  mkdir -p "$DIR"
  # Remember which of kubelet's outside paths did not exist, so `down` removes only those.
  local o; : >"$DIR/created-paths"
  for o in "${OUTSIDE_PATHS[@]}"; do [ -e "$o" ] || echo "$o" >>"$DIR/created-paths"; done
  FAILED="" CURRENT=setup
  trap 'on_fail' ERR
  pki
  configs
  netns_up
  start_all
  trap - ERR
  log "up in $((SECONDS - t0)) s; node $NODE ($NODE_IP) Ready, CoreDNS ready"
  echo "$DIR/kubeconfig"
}

on_fail() {
  trap - ERR
  local what=${FAILED:-${CURRENT:-setup}}
  log "FAILED: $what did not come up"
  if [ -f "$DIR/logs/$what.log" ]; then
    log "last lines of $DIR/logs/$what.log:"; tail -n 40 "$DIR/logs/$what.log" >&2
  elif [ "$what" = coredns ]; then
    kc -n kube-system get pods -o wide >&2 || true
    kc -n kube-system describe pods -l k8s-app=kube-dns 2>&1 | tail -n 30 >&2 || true
  fi
  # Keep the logs for a post-mortem: everything else goes.
  local keep; keep=$(mktemp -d /tmp/eddy-e2e-logs.XXXX)
  cp -r "$DIR/logs/." "$keep/" 2>/dev/null || true
  log "logs kept in $keep; tearing down"
  down >&2 || true
  exit 1
}

# ------------------------------------------------------------------------------------ teardown
ns_inode() { stat -L -c %i "$NSPATH" 2>/dev/null; }

# stop_pids LIMIT PID...: TERM them all at once (each takes a second or three to shut down
# gracefully; in parallel that is paid once), wait up to LIMIT s for all to be gone, then KILL.
stop_pids() {
  local limit=$1 end p left; shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  end=$((SECONDS + limit))
  while ((SECONDS < end)); do
    left=""; for p in "$@"; do alive "$p" && left+=" $p"; done
    [ -n "$left" ] || return 0
    sleep 0.1
  done
  log "still running after ${limit} s, killing:$left"
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null || true
  end=$((SECONDS + 10))
  for p in $left; do while alive "$p" && ((SECONDS < end)); do sleep 0.1; done; done
}
# our_pids NAME...: the recorded pids of those components that still run
our_pids() { local c; for c in "$@"; do our_pid "$c" || true; done; }

# A recorded pid is only ours if it still runs the binary we started (pids get reused).
our_pid() {
  local name=$1 pid; pid=$(pidof_c "$name") || return 1
  alive "$pid" || return 1
  local exe; exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  case $name in apiproxy) [[ $exe == *python* ]] ;; *) [[ ${exe##*/} == "$name" ]] ;; esac &&
    echo "$pid"
}

# Our containers' network namespaces: containerd names them /run/netns/cni-<uuid>. Ours are
# those our containerd recorded (its metadata db and runc state keep each sandbox's netns path,
# also after the sandbox stopped and CNI removed its interface) or, failing that, those with an
# address in our pod range.
our_cni_netns() {
  local f prefix=${POD_CIDR%.*}.
  {
    if [ -d "$DIR/containerd" ] || [ -d "$DIR/runc" ]; then
      grep -rahoE '/(var/)?run/netns/cni-[0-9a-f-]{36}' "$DIR/containerd/root" "$DIR/runc" \
        "$DIR/containerd/state" 2>/dev/null | sed 's,^/var/run/,/run/,'
    fi
    for f in /run/netns/cni-*; do
      [ -e "$f" ] || continue
      if nsenter --net="$f" -- ip -4 -o addr show 2>/dev/null | grep -q " inet ${prefix//./\\.}"; then
        echo "$f"
      fi
    done
  } | sort -u | while read -r f; do [ -e "$f" ] && echo "$f"; done
  return 0
}

# umount_all PATH: a path can carry several stacked mounts (propagation, repeated binds).
umount_all() {
  local _
  for _ in 1 2 3 4 5 6 7 8; do
    mountpoint -q "$1" 2>/dev/null || return 0
    umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
  done
  ! mountpoint -q "$1" 2>/dev/null
}

# Pids of processes inside our namespace or our pods' namespaces, or shims serving our socket
# (one stat and one grep over /proc, not a few processes per pid: down runs this in a loop).
stray_pids() {
  local inodes=" " f
  f=$(ns_inode) && inodes+="$f "
  for f in $(our_cni_netns); do inodes+="$(stat -L -c %i "$f") "; done
  {
    if [ "$inodes" != " " ]; then
      stat -L -c '%n %i' /proc/[0-9]*/ns/net 2>/dev/null |
        while read -r f ino; do
          case $inodes in *" $ino "*) f=${f#/proc/}; echo "${f%%/*}" ;; esac
        done
    fi
    # "-address<NUL>SOCK": a pattern that our own grep's command line cannot contain.
    grep -alsP -- "-address\\x00\\Q$SOCK\\E(\\x00|$)" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true
  } | sort -un | { grep -vx "$$" || true; }
}

our_mounts() { # under our dir, deepest first (pod netns and ours are handled on their own)
  awk -v d="$DIR/" '{ m = $5; gsub(/\\040/, " ", m); if (index(m "/", d) == 1) print m }' \
    /proc/self/mountinfo | sort -ru
}

cgroup_dirs() { # kubepods trees in every v1 hierarchy (and the v2 one, if kubelet used it)
  local h; for h in /sys/fs/cgroup/*/; do
    [ -d "${h}kubepods" ] && echo "${h}kubepods"
    [ -d "${h}kubepods.slice" ] && echo "${h}kubepods.slice"
  done
  return 0
}

down() {
  local t0=$SECONDS c pid
  # Kubelet (with the other node agents) first, so nothing restarts the containers we remove.
  # shellcheck disable=SC2046
  stop_pids 15 $(our_pids kube-proxy kubelet kube-scheduler kube-controller-manager)
  # Our containers, through our own runc root: kills their processes and frees their cgroups.
  if [ -d "$DIR/runc" ]; then
    local root id
    for root in "$DIR"/runc/*/; do
      [ -d "$root" ] || continue
      for id in $(runc --root "$root" list -q 2>/dev/null); do
        runc --root "$root" delete -f "$id" >/dev/null 2>&1 || true
      done
    done
  fi
  # The apiserver can outlive its port by 30 s after SIGTERM: wait for the pid, not the port.
  # shellcheck disable=SC2046
  stop_pids 60 $(our_pids containerd apiproxy kube-apiserver)
  # shellcheck disable=SC2046
  stop_pids 30 $(our_pids etcd)
  # Anything still inside our namespaces, and shims naming our socket (they outlive containerd).
  local tries=0
  while pid=$(stray_pids) && [ -n "$pid" ] && ((tries++ < 5)); do
    # shellcheck disable=SC2086
    stop_pids 5 $pid
  done
  # From here on every step is tolerant: a step that fails must not keep the later ones from
  # running; `leftovers` at the end says what, if anything, remains.
  local m cni; cni=$(our_cni_netns)
  for m in $(our_mounts); do umount_all "$m" || true; done
  for m in $cni; do if umount_all "$m"; then rm -f "$m"; fi; done
  if [ -e "$NSPATH" ] && umount_all "$NSPATH"; then rm -f "$NSPATH"; fi
  local d
  for d in $(cgroup_dirs); do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [ -f "$DIR/created-paths" ]; then
    while read -r m; do
      case $m in
        /run/netns)
          # Another netns made meanwhile keeps it; ours are gone by now.
          if [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
            umount /run/netns 2>/dev/null || true; rmdir /run/netns 2>/dev/null || true
          fi ;;
        /var/lib/kubelet | /var/lib/cni | /var/log/containers | /var/log/pods | /run/containerd)
          # Only if nothing is still mounted there (rm -rf through a mount deletes its content).
          grep -q " $m/" /proc/self/mountinfo || rm -rf "$m" || true ;;
      esac
    done <"$DIR/created-paths"
  fi
  if [ -d "$DIR" ]; then
    if grep -q " $DIR/" /proc/self/mountinfo; then
      log "mounts remain under $DIR: not deleting it"; return 1
    fi
    rm -rf "$DIR"
  fi
  log "down in $((SECONDS - t0)) s"
  if leftovers >&2; then :; else return 1; fi
}

# leftovers: exit 0 if `down` left nothing (processes, mounts, netns, cgroups, files), else list.
leftovers() {
  local bad=0 x
  x=$(stray_pids); [ -z "$x" ] || { echo "leftover processes: $x"; bad=1; }
  for c in "${COMPONENTS[@]}"; do
    if pid=$(our_pid "$c" 2>/dev/null); then echo "leftover $c: pid $pid"; bad=1; fi
  done
  x=$(awk -v d="$DIR" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo)
  [ -z "$x" ] || { echo "leftover mounts: $x"; bad=1; }
  [ ! -e "$NSPATH" ] || { echo "leftover netns: $NSPATH"; bad=1; }
  # Once our dir is gone nothing says which pod netns were ours: any left is suspect here.
  x=$( { our_cni_netns; ls -d /run/netns/cni-* 2>/dev/null || true; } | sort -u)
  [ -z "$x" ] || { echo "leftover pod netns (ours or another containerd's): $x"; bad=1; }
  x=$(cgroup_dirs); [ -z "$x" ] || { echo "leftover cgroups: $x"; bad=1; }
  [ ! -e "$DIR" ] || { echo "leftover dir: $DIR"; bad=1; }
  # iptables rules lived in the namespace and die with it; a host rule naming our ranges would not.
  x=$( { iptables-save 2>/dev/null || true; } | { grep -E '198\.18\.|KUBE-' || true; } | head -5)
  [ -z "$x" ] || { echo "leftover host iptables rules: $x"; bad=1; }
  return $bad
}

status() {
  local c pid rc=0
  if [ -e "$NSPATH" ]; then echo "netns $NETNS: present"; else echo "netns $NETNS: absent"; rc=1; fi
  for c in "${COMPONENTS[@]}"; do
    if pid=$(our_pid "$c"); then echo "$c: running (pid $pid)"; else echo "$c: not running"; rc=1; fi
  done
  if ((rc == 0)); then
    kc get nodes -o wide 2>&1 || rc=1
    kc -n kube-system get pods 2>&1 || true
    echo "KUBECONFIG=$DIR/kubeconfig"
  fi
  return $rc
}

expose() { # NAMESPACE NAME PORT
  kc create namespace "$1" --dry-run=client -o yaml | kc apply -f - >/dev/null
  kc apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: $2, namespace: $1}
spec:
  ports: [{name: tcp, port: $3, targetPort: $3, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $2-node
  namespace: $1
  labels: {kubernetes.io/service-name: $2, endpointslice.kubernetes.io/managed-by: eddy-e2e}
addressType: IPv4
ports: [{name: tcp, port: $3, protocol: TCP}]
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
EOF
}

case ${1:-} in
  up) up ;;
  exec) shift; [ -e "$NSPATH" ] || { log "no cluster namespace"; exit 1; }; exec nsenter --net="$NSPATH" -- "$@" ;;
  expose) [ $# -eq 4 ] || { echo "usage: $0 expose NAMESPACE NAME PORT" >&2; exit 2; }; expose "$2" "$3" "$4" ;;
  node-ip) echo "$NODE_IP" ;;
  down) down ;;
  status) status ;;
  load) [ -n "${2:-}" ] || { echo "usage: $0 load IMAGE.tar" >&2; exit 2; }; load_image "$2" ;;
  kubeconfig) echo "$DIR/kubeconfig" ;;
  leftovers) leftovers ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
# `exit` on the same line: bash has then read the whole command before running it, so editing
# this file while a cluster comes up cannot make the running script execute a shifted tail.
esac; exit $?
