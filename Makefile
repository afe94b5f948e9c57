# The two commands a new machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

# The package is byte-compiled at install: the Claude Code hook starts a fresh interpreter on every
# tool call, and some environments set PYTHONDONTWRITEBYTECODE, which would recompile it each time.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m compileall -q src
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# The type check first (a few seconds; config in pyproject.toml), then every test.
# pytest exits 5 when it collected no test: that fails here too, with a message that says so.
test: $(STAMP)
	$(VENV)/bin/mypy
	$(PY) -m pytest -q || { status=$$?; [ $$status -ne 5 ] || echo "make test: no tests were collected" >&2; exit $$status; }

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
