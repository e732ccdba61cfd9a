# One install target shared by run, test, dev, bench, serve and .ci/run.
# torch is pip-installed first from the CPU wheel on disk; uv then resolves the rest
# quickly and keeps the installed torch (it satisfies the project's range).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PULSE_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(PULSE_DATA_DIR)/dagster_home
export OMP_WAIT_POLICY ?= PASSIVE
export DO_NOT_TRACK ?= 1

.PHONY: install chromium run test dev bench evaluate serve lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install --python $(PY) -e '.[dev,serve,telegram]'
	touch $(STAMP)

# Debian's chromium for tests/test_ui_browser.py (Playwright drives /usr/bin/chromium;
# it never downloads a browser). `make test` (and so .ci/run) installs it when missing.
chromium:
	command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

run: install
	$(PY) scripts/run_pipeline.py

test: install chromium
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

dev: install
	mkdir -p $(DAGSTER_HOME)
	cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml || true
	$(PY) scripts/dev.py  # Dagster UI :3000 and MLflow UI :5000; Ctrl-C / SIGTERM stops both

bench: install
	$(PY) -m benchmarks.run_all

# every model against its strongest baseline on worlds it was not developed on
evaluate: install
	$(PY) -m benchmarks.evaluate

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf data .pytest_cache build *.egg-info

serve: install
	$(VENV)/bin/uvicorn --factory api.app:create_app --host 127.0.0.1 --port 8000
