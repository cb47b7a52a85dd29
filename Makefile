# b24pipe: two commands set everything up on a fresh machine.
#   make run   - the pipeline (embedded Redis when REDIS_URL is unset)
#   make test  - install what is needed, then ruff, mypy and pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test tools lint typecheck pytest install bench bench-ingress bench-ingress-steps bench-workers bench-limiter bench-storm bench-offline bench-writes bench-hostile bench-failover mutate simulator clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/b24pipe run $(RUN_ARGS)

# Debian packages some checks need (installed by .ci/apt-tools when missing):
# prometheus ships promtool (tests/deploy/test_alerts.py), systemd systemd-analyze
# (tests/deploy/test_systemd_units.py), chromium renders rq-dashboard (tests/b24pipe/test_rq_dashboard.py)
# and runs the install page (tests/ingress/test_install_page_browser.py),
# redis-server is a Redis without WAITAOF (7.0), next to the bundled Valkey, for the ack-mode tests.
APT_TOOLS := prometheus systemd chromium redis-server

test: $(STAMP) tools lint typecheck pytest

tools:
	@.ci/apt-tools $(APT_TOOLS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy b24pipe ingress workers shared tests bench examples

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

simulator: $(STAMP)
	$(BIN)/python -m b24pipe.sim

bench: bench-ingress bench-ingress-steps bench-workers bench-limiter bench-storm bench-offline bench-writes bench-failover

bench-ingress: $(STAMP)
	$(BIN)/python -m bench.ingress

bench-ingress-steps: $(STAMP)
	$(BIN)/python -m bench.ingress_steps

bench-workers: $(STAMP)
	$(BIN)/python -m bench.workers

bench-hostile: $(STAMP)
	$(BIN)/python -m bench.hostile

bench-limiter: $(STAMP)
	$(BIN)/python -m bench.limiter

bench-storm: $(STAMP)
	$(BIN)/python -m bench.storm

bench-offline: $(STAMP)
	$(BIN)/python -m bench.offline

bench-writes: $(STAMP)
	$(BIN)/python -m bench.writes

bench-failover: $(STAMP)
	$(BIN)/python -m bench.failover

# Mutation testing of the core decision modules (minutes; not part of `make test`).
# MUTATE_ARGS: module paths to restrict the run, --workers N (default 2).
mutate: $(STAMP)
	$(BIN)/python -m tests.mutation.mutate $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
