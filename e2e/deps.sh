#!/usr/bin/env bash
# Installs the system packages Eddy's build and tests need, only those that are missing, so a
# fresh Debian 12 machine can run `make run` / `make test` and a prepared one pays nothing.
set -euo pipefail
need=()
# cmake/clang/libclang: rocksdb's and librdkafka's native builds; pkg-config, libssl, libcurl,
# zlib: librdkafka; jq/curl: the e2e scripts.
for p in build-essential cmake clang libclang-dev pkg-config libssl-dev libcurl4-openssl-dev zlib1g-dev curl jq; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
# javac/java: the test that compares the Rust generators with their Java twin (bench/flink/gen);
# java also runs the Kafka broker of e2e/services.sh.
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
# mvn: builds the Apache Flink baseline of `make bench` (bench/flink) and fetches Kafka's jars for
# e2e/services.sh.
command -v mvn >/dev/null || need+=(maven)
if ((${#need[@]})); then
  echo "deps: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo not found: install Rust 1.95 (rustup) and retry" >&2; exit 1; }
