# The project's single entry point. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

# Editable install in compat mode: a plain path entry rather than an import hook, which
# would cost every command ~10 ms of start-up.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

## demo: a whole swarm on loopback (tracker, seed, downloaders) with live progress
demo: $(STAMP)
	$(VENV)/bin/pytorrent demo

## test: lint (rules and format), type-check, then the whole suite (inside a loopback-only
## network namespace when we may make one); pytest's summary is the last line
test: $(STAMP) lint typecheck
	@if [ "$$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then \
		echo "running the tests in a loopback-only network namespace"; \
		unshare --net -- sh -c 'ip link set lo up && exec $(PY) -m pytest $(PYTEST_ARGS)'; \
	else \
		$(PY) -m pytest $(PYTEST_ARGS); \
	fi

## lint: ruff's rules (pyproject.toml) and its formatting
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## typecheck: mypy --strict on torrent/ tracker/ cli/, and on tests/ and bench/ without
## requiring annotations (pyproject.toml)
typecheck: $(STAMP)
	$(VENV)/bin/mypy

## bench: every benchmark in bench/, figures printed
bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
