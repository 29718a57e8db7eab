# Scale0 — every target creates or reuses .venv by itself.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
FOR     ?= 0

.PHONY: demo test lint typecheck unit integration e2e bench clean venv

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Scale0 needs Python 3.11+")'
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

## make demo: a local mesh you can curl and watch (Ctrl-C stops it).
demo: $(STAMP)
	$(BIN)/scale0 demo $(if $(filter-out 0,$(FOR)),--for $(FOR),)

## make test: lint, type-check and the whole suite (unit, integration, end-to-end).
test: $(STAMP)
	@bash scripts/system-deps.sh
	$(BIN)/ruff check node mesh gossip cache tests bench
	$(BIN)/mypy
	HYPOTHESIS_PROFILE=ci $(BIN)/pytest -p no:cacheprovider -q tests

## make lint: what CI checks before the suite (ruff's rules, strict mypy). Layout is not
## machine-enforced: the code is formatted by hand to 100 columns, so `ruff format` is no gate.
lint: $(STAMP)
	$(BIN)/ruff check node mesh gossip cache tests bench
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit
integration: $(STAMP)
	$(BIN)/pytest -q tests/integration
e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

## make bench: benchmarks that print ratios against references run in the same invocation.
bench: $(STAMP)
	@bash scripts/system-deps.sh bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis scale0-cache
