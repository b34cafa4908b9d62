# `make run` and `make test` work on a fresh machine with Python 3.11+ and nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest migrate token clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## start the daemon on embedded defaults with the demo data
	DEALER_DEMO=$${DEALER_DEMO:-1} $(BIN)/dealerd run

test: $(STAMP) lint typecheck pytest  ## lint, type-check and run the whole suite

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy pricing ledger dealer venues hedging

pytest: $(STAMP)
	$(BIN)/pytest -q

migrate: $(STAMP)
	$(BIN)/dealerd migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
