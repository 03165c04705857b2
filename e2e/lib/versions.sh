# shellcheck shell=bash
# shellcheck disable=SC2034  # sourced by the other scripts
# Pinned versions of everything the e2e cluster is built from. Changing one rebuilds just that
# part: every build lands in a directory named after its version under $EDDY_CACHE.
K8S_VERSION=v1.35.4
# The staging modules (k8s.io/api, client-go, ...) are published as v0.<minor>.<patch>.
K8S_STAGING_VERSION=v0.35.4
# Pinned so that a rebuild with identical flags hits Go's build cache and `kubectl version` is
# the same on every machine.
K8S_BUILD_DATE=2026-01-01T00:00:00Z
ETCD_VERSION=v3.6.16
COREDNS_VERSION=v1.15.0
HELM_VERSION=v3.22.0
# Bumped when the pause image's build (not Kubernetes) changes.
PAUSE_TAG=3.10-eddy1
EDDY_CACHE=${EDDY_CACHE:-$HOME/.cache/eddy}
