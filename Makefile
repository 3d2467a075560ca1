# pgcdc developer and CI entry points. CI runs `bash .ci/run`, which runs `make test`.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# Build outside the clone so CI (fresh clone every run) reuses its compiled dependencies.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/pgcdc/target
CARGO ?= cargo
# With a committed lock file, builds must not silently pick other versions.
LOCKED := $(if $(wildcard Cargo.lock),--locked,)

.PHONY: build test lint fmt clippy deps demo clean

build:
	$(CARGO) build --release $(LOCKED)

deps:
	bash scripts/install-deps.sh

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy $(LOCKED) --all-targets -- -D warnings

# cargo test runs last so its summary lines end the output.
test: deps lint
	$(CARGO) test $(LOCKED) --all-targets

demo: deps build
	bash scripts/demo.sh

clean:
	$(CARGO) clean
