# The front door. `make run` starts the whole service locally; `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
CODE   := service tasks simulator

.PHONY: help venv redis-server lint test run demo chaos bench clean

help:
	@echo "make run    - web + worker (+ Commerce Layer simulator when COMMERCELAYER_BASE_URL is unset) on local Redis"
	@echo "make demo   - send signed sample Stripe events to 'make run' and show the wallet entries"
	@echo "make test   - lint, type-check and the whole test suite (what CI runs)"
	@echo "make chaos  - the full chaos suite (real processes under faults); prints the guarantees table"
	@echo "make bench  - benchmarks; writes docs/performance.md and docs/performance.png"

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

redis-server:
	@bash scripts/ensure-redis-server.sh

lint: venv
	$(BIN)/ruff check $(CODE) tests scripts bench gunicorn.conf.py
	$(BIN)/ruff format --check $(CODE) tests scripts bench gunicorn.conf.py
	$(BIN)/mypy service tasks simulator

test: venv redis-server lint
	$(BIN)/python -m pytest

run: venv redis-server
	$(BIN)/python scripts/run.py

demo: venv
	$(BIN)/python scripts/demo.py

chaos: venv redis-server
	$(BIN)/python -m tests.chaos

bench: venv redis-server
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .run
