# cxr-bench: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
# the suite runs in two pytest-xdist workers (a test file stays on one worker: its fixtures are built
# once); on a serial run, a single test file, or a debugger: TEST_WORKERS=0
TEST_WORKERS ?= 2

.PHONY: setup demo test doctor docs clean
setup:
	bash scripts/setup_env.sh

demo: setup
	$(VENV)/bin/cxr-run experiment=demo

test: setup
	$(PY) -m pytest -q --timeout=1800 -n $(TEST_WORKERS) --dist loadfile tests

doctor: setup
	$(VENV)/bin/cxr-doctor

# the documentation site into site/ (tests/test_docs.py builds it the same way, --strict)
docs: setup
	$(PY) -m mkdocs build --strict

clean:
	rm -rf runs outputs multirun data/synthetic-*
