# The two commands a new user runs: `make serve` and `make test`. Everything they need is set
# up here from the project's own pinned files (pyproject.toml, constraints.txt, Cargo.lock,
# tests/harness/kafka/pom.xml), so a fresh clone on a fresh machine works.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NATIVE_SOURCES := Cargo.toml Cargo.lock rust_ext/Cargo.toml $(wildcard rust_ext/src/*.rs)

.PHONY: install serve test lint typecheck test-rust test-python kafka browser nginx bench bench-notify clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3

# An editable install: maturin builds evgate._native (release profile) into python/evgate/.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt $(NATIVE_SOURCES)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/pip install -q -e '.[dev,loadtest]'
	touch $@

serve: $(STAMP)
	$(BIN)/evgate serve

kafka:
	bash tests/harness/kafka/fetch.sh

# The dashboard's tests drive Debian's chromium (Playwright's own browsers are never fetched).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The notification benchmarks' webhook receiver: Debian's nginx-light, started by the bench itself
# (bench/nginx_receiver.py) on a loopback port; never a system service.
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest evgate._native --concise

# PYO3_PYTHON: link the tests against the venv's interpreter, not whatever python3 is first.
test-rust: $(STAMP)
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo test --locked --quiet

test-python: $(STAMP) kafka browser
	$(BIN)/pytest

test: lint typecheck test-rust test-python

bench: $(STAMP)
	$(BIN)/python bench/protocol.py

bench-notify: $(STAMP) nginx kafka
	$(BIN)/python bench/notify.py

clean:
	rm -rf $(VENV) target .cache .mypy_cache .pytest_cache .ruff_cache python/evgate/*.so
