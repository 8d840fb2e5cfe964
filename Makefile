# sa_sessions developer tasks.  `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: demo test lint format pytest docs bench bench-http chaos mutate clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,dev,bench,docs]'
	@# mysqlclient compiles against libmariadb-dev + pkg-config; without them the
	@# MariaDB tests skip locally (CI installs both and requires every service).
	$(PIP) install --quiet -e '.[mysql]' || echo "warning: mysqlclient not installed (apt-get install libmariadb-dev pkg-config); MariaDB tests will skip"
	touch $@

$(VENV)/.demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e '.[bottle]'
	touch $@

demo: $(VENV)/.demo
	$(PY) examples/bottle_app.py --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sa_sessions tests examples bench tools docs/conf.py
	$(VENV)/bin/ruff format --check sa_sessions tests examples bench tools docs/conf.py
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint pytest

format: $(VENV)/.installed
	$(VENV)/bin/ruff format sa_sessions tests examples bench tools docs/conf.py
	$(VENV)/bin/ruff check --fix sa_sessions tests examples bench tools docs/conf.py

# The documentation site (API reference + guides); warnings are errors.
docs: $(VENV)/.installed
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

bench: $(VENV)/.installed
	$(PY) bench/compare.py

bench-http: $(VENV)/.installed
	$(PY) bench/http_throughput.py

# Mutation testing of the security-critical modules (each must kill 98 % or more).
mutate: $(VENV)/.installed
	$(PY) tools/mutate.py $(MUTATE_ARGS)

# Ten 30-second chaos runs on memcached and on Redis (MariaDB: SA_SESSIONS_DB_URL).
chaos: $(VENV)/.installed
	$(PY) bench/chaos_series.py --runs 10 --duration 30 $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache docs/_build
