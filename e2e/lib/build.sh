#!/usr/bin/env bash
# Builds (once) the cluster's binaries from the Go module proxy into $EDDY_CACHE/<part>/<version>.
# Each part is built in a scratch dir and moved into place only when complete, so an interrupted
# build never looks finished; a present directory means "skip".
#   build.sh [all|k8s|etcd|coredns|helm|pause]...
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/lib/versions.sh
. "$HERE/versions.sh"

# Everything Go downloads or compiles stays under our cache, so emptying ~/.cache/eddy is a
# true cold start and nothing of ours lands in the user's own Go caches.
export GOPATH="$EDDY_CACHE/go" GOMODCACHE="$EDDY_CACHE/go/mod" GOCACHE="$EDDY_CACHE/go/cache"
export GOFLAGS="-buildvcs=false -modcacherw" CGO_ENABLED=0 GOTOOLCHAIN=local

log() { echo "build: $*" >&2; }

# done_dir PART VERSION -> prints the final dir; returns 0 if it already exists.
final_dir() { echo "$EDDY_CACHE/$1/$2"; }

install_dir() { # SCRATCH FINAL: atomically publish a finished build
  mkdir -p "$(dirname "$2")"
  rm -rf "$2.old"; [ ! -e "$2" ] || mv "$2" "$2.old"
  mv "$1" "$2"; rm -rf "$2.old"
}

build_k8s() {
  local out; out=$(final_dir k8s "$K8S_VERSION")
  [ -x "$out/bin/kubelet" ] && return 0
  log "kubernetes $K8S_VERSION (cold: ~10-15 min on 2 cores)"
  local t0=$SECONDS w; w=$(mktemp -d "$EDDY_CACHE/k8s-build.XXXX")
  local gomod; gomod=$(cd "$w" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)
  # `go install` refuses modules with replace directives, and k8s.io/kubernetes replaces its 31
  # staging modules with ./staging paths; a wrapper module replaces each with its published
  # version instead. godebug is copied so the binaries behave as upstream's do.
  {
    echo "module eddy.local/k8sbuild"
    grep -E '^go [0-9.]+$' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" |
      awk -v v="$K8S_STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
  } >"$w/go.mod"
  local n; n=$(grep -c '^replace ' "$w/go.mod")
  [ "$n" -ge 30 ] || { log "expected ~31 staging replaces in upstream go.mod, found $n"; exit 1; }
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  {
    echo "//go:build tools"; echo "package tools"; echo "import ("
    for c in "${cmds[@]}"; do echo "  _ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } >"$w/tools.go"
  (cd "$w" && go mod tidy >/dev/null)
  local minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$K8S_BUILD_DATE"
  done
  mkdir -p "$w/out/bin"
  local pkgs=(); for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$w" && go build -trimpath -ldflags "$ld" -o out/bin/ "${pkgs[@]}")
  # pause.c ships in the module zip: the pause image is built from it (build_pause).
  local src; src=$(cd "$w" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  mkdir -p "$w/out/src"; cp "$src/build/pause/linux/pause.c" "$w/out/src/"
  install_dir "$w/out" "$out"; rm -rf "$w"
  log "kubernetes done in $((SECONDS - t0)) s"
}

build_etcd() {
  local out; out=$(final_dir etcd "$ETCD_VERSION")
  [ -x "$out/bin/etcd" ] && return 0
  log "etcd $ETCD_VERSION (cold: ~2 min)"
  local t0=$SECONDS w; w=$(mktemp -d "$EDDY_CACHE/etcd-build.XXXX")
  # server/v3's go.mod replaces its sibling modules with ../ paths; use their published tags.
  {
    echo "module eddy.local/etcdbuild"; echo "go 1.24"
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $ETCD_VERSION"
    done
  } >"$w/go.mod"
  # etcd's own main (module go.etcd.io/etcd/v3) is just this call.
  cat >"$w/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$w" && go mod tidy >/dev/null && mkdir -p out/bin &&
    go build -trimpath -ldflags "-s -w" -o out/bin/etcd .)
  install_dir "$w/out" "$out"; rm -rf "$w"
  log "etcd done in $((SECONDS - t0)) s"
}

go_install() { # PART VERSION PKG
  local out; out=$(final_dir "$1" "$2")
  [ -d "$out/bin" ] && return 0
  log "$1 $2"
  local t0=$SECONDS w; w=$(mktemp -d "$EDDY_CACHE/$1-build.XXXX")
  mkdir -p "$w/bin"
  GOBIN="$w/bin" go install -trimpath -ldflags "-s -w" "$3@$2"
  install_dir "$w" "$out"
  log "$1 done in $((SECONDS - t0)) s"
}
build_coredns() { go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns; }
build_helm() { go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm; }

build_pause() {
  build_k8s
  local out; out=$(final_dir pause "$K8S_VERSION-$PAUSE_TAG")
  [ -x "$out/bin/pause" ] && return 0
  local w; w=$(mktemp -d "$EDDY_CACHE/pause-build.XXXX"); mkdir -p "$w/bin"
  # Static, so the image needs no libc: it is the only file in it.
  cc -Os -static -Wall -DVERSION="$PAUSE_TAG" -o "$w/bin/pause" \
    "$(final_dir k8s "$K8S_VERSION")/src/pause.c"
  strip "$w/bin/pause"
  install_dir "$w" "$out"
}

mkdir -p "$EDDY_CACHE"
[ $# -gt 0 ] || set -- all
for part in "$@"; do
  case $part in
    all) build_k8s; build_etcd; build_coredns; build_helm; build_pause ;;
    k8s | etcd | coredns | helm | pause) "build_$part" ;;
    *) echo "usage: $0 [all|k8s|etcd|coredns|helm|pause]..." >&2; exit 2 ;;
  esac
done
