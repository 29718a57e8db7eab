# Scale0 — every target creates or reuses .venv by itself.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
FOR     ?= 0
# The hot modules `make compiled` builds into C extensions (mypyc), listed in one file.
COMPILED := $(shell sed -e 's/\#.*//' scripts/compiled.txt)
BUILT   := build/compiled.stamp

.PHONY: demo test lint typecheck unit integration e2e bench clean venv compiled pure wheel

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Scale0 needs Python 3.11+")'
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

## make compiled: the modules in scripts/compiled.txt as C extensions next to their .py files
## (about 30% less CPU per proxied miss), rebuilt only when a module changed; from nothing,
## profile-guided with gcc (SCALE0_PGO=0: not). Without a C compiler or Python's headers it
## says so and the node runs as pure Python.
compiled: $(STAMP)
	@$(BIN)/python scripts/build_compiled.py --check >/dev/null \
	  || bash scripts/system-deps.sh build $(BIN)/python 2>/dev/null
	@if reason=$$($(BIN)/python scripts/build_compiled.py --check); then \
	  $(MAKE) --no-print-directory $(BUILT); \
	else echo "$$reason: the node runs as pure Python, about 40% more CPU per proxied miss"; fi

# Every module, not only the listed ones: mypyc compiles in the Final constants a compiled
# module imports (an unchanged C file is not recompiled, so such a rebuild is ~10 s).
$(BUILT): $(COMPILED) $(wildcard node/*.py node/*/*.py cache/*.py mesh/*.py gossip/*.py) \
          scripts/compiled.txt scripts/build_compiled.py $(STAMP)
	$(BIN)/python scripts/build_compiled.py
	@touch $@

## make pure: remove the built extensions; everything then runs as pure Python.
pure:
	$(PY) scripts/build_compiled.py --clean
	rm -f $(BUILT)

## make wheel: dist/scale0-<version>-cp3XX-cp3XX-<platform>.whl, the package with the modules
## of scripts/compiled.txt compiled beside their .py files, for machines with the venv's
## Python and platform (they need no compiler). It needs one here (installed when root on
## Debian, as for make compiled) and reuses make compiled's build/mypyc. Without it,
## `pip install .` and `pip wheel .` build pure Python.
wheel: $(STAMP)
	@$(BIN)/python scripts/build_compiled.py --check >/dev/null \
	  || bash scripts/system-deps.sh build $(BIN)/python 2>/dev/null
	$(BIN)/python scripts/build_compiled.py --wheel dist

## make demo: a local mesh you can curl and watch (Ctrl-C stops it).
demo: compiled
	$(BIN)/scale0 demo $(if $(filter-out 0,$(FOR)),--for $(FOR),)

## make test: lint, type-check and the whole suite (unit, integration, end-to-end).
test: compiled
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

unit: compiled
	$(BIN)/pytest -q tests/unit
integration: compiled
	$(BIN)/pytest -q tests/integration
e2e: compiled
	$(BIN)/pytest -q tests/e2e

## make bench: benchmarks that print ratios against references run in the same invocation.
bench: compiled
	@bash scripts/system-deps.sh bench
	$(BIN)/python -m bench

clean:
	$(PY) scripts/build_compiled.py --clean
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis scale0-cache
