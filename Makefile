# Eddy: the two commands a newcomer needs are `make run` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target
EDDY := $(CARGO_TARGET_DIR)/release/eddy
EXAMPLE ?= examples/clicks.yaml
QUICK ?=

.PHONY: run test deps build release bins crds bench lint fmt clean

## run: build Eddy and run an example job locally (EXAMPLE=examples/clicks.yaml)
run: deps release
	$(EDDY) run $(EXAMPLE)

## test: install what the tests need, start the test services (Kafka, S3), run every test
# The services stay up only if they were up before (or with KEEP_SERVICES=1). The tests build
# in the release profile (TEST_PROFILE=dev for debug assertions): the release binary that
# `make bench`, `make run` and the e2e image use then shares every compiled dependency with
# them, RocksDB's and librdkafka's C++ included, instead of compiling it all twice.
TEST_PROFILE ?= release
test: deps
	@was_up=$$(bash e2e/services.sh status >/dev/null 2>&1 && echo 1); \
	bash e2e/services.sh up || exit 1; \
	$(CARGO) test --profile $(TEST_PROFILE) --workspace --all-targets && \
	  $(CARGO) test --profile $(TEST_PROFILE) --workspace --doc; rc=$$?; \
	if [ -z "$$was_up$(KEEP_SERVICES)" ]; then bash e2e/services.sh down; fi; exit $$rc

## deps: install the system packages the build needs (only the missing ones)
deps:
	@bash e2e/deps.sh

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p eddy-runtime --bin eddy

# Every binary of the workspace, with the features the whole workspace turns on: what `make
# test` compiled, so after it this only links. A build of one package resolves its own features
# (num-traits for eddy, syn and serde_json for the operator) and recompiled what depends on them.
bins:
	$(CARGO) build --release --workspace --bins

## crds: regenerate crds/streamjob.yaml from the Rust types
crds:
	$(CARGO) run -q -p eddy-crds --bin eddy-crdgen > crds/streamjob.yaml

## bench: release-build benchmarks, one line per case (QUICK=1 for a short smoke run)
bench: deps bins
	QUICK=$(QUICK) EDDY=$(EDDY) bash bench/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

-include e2e/e2e.mk
-include e2e/services.mk
