# The two commands of the README: `make demo` (the main job) and `make test`.
# Each creates .venv when missing and installs the pinned set; a stamp keeps reruns quick.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed-base
TEST   := $(VENV)/.installed-test
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(BASE): $(PY) requirements.txt setup.py
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(TEST): $(BASE) requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

venv: $(BASE)

demo: $(BASE)
	$(VENV)/bin/asl-demo --workdir runs/demo

test: $(TEST)
	$(PY) -m pytest -q tests

clean:
	rm -rf runs build *.egg-info .pytest_cache
