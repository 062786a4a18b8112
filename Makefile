# kennel: `make demo` runs the main job end to end; `make test` runs the whole test suite.
# Both create the virtual environment first when it is missing.

VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
DATA   ?=
STAMP   = $(VENV)/.installed

.PHONY: help demo test test-fast docs lint format bench-train bench-tune bench-profiler bench-debugger bench-ddp bench-extract screenshot browser postgres clean

help:
	@echo "make demo [DATA=DIR]   set up, then fetch/check/train/tune/report/predict end to end"
	@echo "make test              set up, then lint and run the whole test suite"
	@echo "make test-fast         lint and the tests not marked slow or integration (the edit loop)"
	@echo "make docs              build the documentation site into site/ (mkdocs build --strict)"
	@echo "make bench-train       benchmarks/train.py on ../shared/data/dogs10"
	@echo "make bench-tune        benchmarks/tune.py: a 20-trial study on ../shared/data/dogs10"
	@echo "make bench-profiler    benchmarks/profiler.py: the profiler's overhead on dogs10"
	@echo "make bench-debugger    benchmarks/debugger.py: step time with the debugger off, light and full"
	@echo "make bench-ddp         benchmarks/ddp.py: training images/s with 1 and 2 processes (torchrun)"
	@echo "make bench-extract     benchmarks/extract.py: feature-extraction photos/s per backend, job cold/warm"
	@echo "make screenshot        refresh docs/console.png (needs Debian's chromium)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,lite]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kennel demo $(if $(DATA),--data $(DATA))

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check src tests benchmarks scripts examples

# One pytest worker per core (pytest-xdist), each test module in one worker so that it builds its fixtures once;
# tests/conftest.py gives each worker its share of the cores' threads.
PYTEST = $(VENV)/bin/pytest -q -n auto --dist loadfile

test: lint browser postgres
	$(PYTEST)

# The edit loop: every test but those marked slow (seconds each: real servers, several processes, studies) or
# integration (the real photos). `make test` runs them all.
test-fast: lint
	$(PYTEST) -m "not slow and not integration"

# Debian's Chromium for the browser tests and the console screenshot; where it cannot be installed (no root,
# no apt), those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; } || \
		echo "chromium is not installed and could not be; browser tests will be skipped"

# Debian's PostgreSQL for the distributed tuning tests, which start a throwaway server of their own (never the
# system's); where it cannot be installed (no root, no apt), those tests skip and say why.
postgres:
	@{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; } || \
		echo "PostgreSQL is not installed and could not be; distributed tuning tests will be skipped"

# The documentation site (docs/, mkdocs.yml; Material theme), built offline; --strict fails on a broken link or
# anchor and on a page missing from the nav.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks scripts examples
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts examples

bench-train: $(STAMP)
	$(PY) benchmarks/train.py

bench-tune: $(STAMP)
	$(PY) benchmarks/tune.py

bench-profiler: $(STAMP)
	$(PY) benchmarks/profiler.py

bench-debugger: $(STAMP)
	$(PY) benchmarks/debugger.py

bench-ddp: $(STAMP)
	$(PY) benchmarks/ddp.py

bench-extract: $(STAMP)
	$(PY) benchmarks/extract.py

screenshot: $(STAMP)
	$(PY) scripts/screenshot_console.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
