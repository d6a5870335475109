# cxr-bench: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test doctor clean
setup:
	bash scripts/setup_env.sh

demo: setup
	$(VENV)/bin/cxr-run experiment=demo

test: setup
	$(PY) -m pytest -q --timeout=1800 tests

doctor: setup
	$(VENV)/bin/cxr-doctor

clean:
	rm -rf runs outputs multirun data/synthetic-*
