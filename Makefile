# `make run` and `make test` work on a fresh machine with Python 3.11+ and nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest prometheus migrate token clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## start the daemon on embedded defaults with the demo data
	DEALER_DEMO=$${DEALER_DEMO:-1} $(BIN)/dealerd run

test: $(STAMP) prometheus lint typecheck pytest  ## lint, type-check and run the whole suite

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy pricing ledger dealer venues hedging

pytest: $(STAMP) prometheus
	$(BIN)/pytest -q

PROMETHEUS_HINT := make test needs Prometheus: run 'sudo apt-get install prometheus' (or put prometheus and promtool on PATH)
# The tests run a real Prometheus (and promtool): Debian's package, installed when missing and
# this is a root shell with apt-get. It is never started as a service: the tests run the binary.
prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Prometheus (Debian package) for the tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
			apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
		|| { echo "$(PROMETHEUS_HINT)"; exit 1; }; \
	else \
		echo "$(PROMETHEUS_HINT)"; exit 1; \
	fi

migrate: $(STAMP)
	$(BIN)/dealerd migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
