# Allmile: `make demo` serves the seeded platform; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_PASSWORD ?= allmile-demo
DEMO_PORT ?= 8000
# The demo runs on the embedded default: SQLite, in-memory channel layer, in-process tasks.
DEMO_ENV := DEBUG=true DATABASE_URL= REDIS_URL=
# Tests run on the local PostgreSQL and Redis (config.settings.test has the defaults).
TEST_ENV := DJANGO_SETTINGS_MODULE=config.settings.test

.PHONY: install demo test lint bench-vrp bench-driver-api bench-live osrm reliability clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(DEMO_ENV) $(PY) manage.py migrate --noinput -v0
	$(DEMO_ENV) $(PY) manage.py seed_demo --password $(DEMO_PASSWORD) --if-empty
	$(DEMO_ENV) $(PY) manage.py run_demo --port $(DEMO_PORT) --password $(DEMO_PASSWORD)

test: install
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

bench-vrp: install
	$(PY) bench/vrp.py --instances bench/instances/solomon --time-limit 10 \
		--solvers allmile,pyvrp,vroom --json bench/results/vrp-solomon.json

OSRM_PORT ?= 5000
# Real Monaco roads (data/monaco.osm.pbf); then: OSRM_BASE_URL=http://127.0.0.1:$(OSRM_PORT) make demo
osrm:
	$(PYTHON) -m tools.osrm serve --port $(OSRM_PORT)

bench-driver-api: install
	$(PY) bench/driver_api.py --json bench/results/driver-api.json

bench-live: install
	$(PY) bench/live.py --clients 50 --drivers 10 --duration 30 --json bench/results/live.json

# The [FAULT] and [LOAD] tiers of RELIABILITY.md (about 45 min; a private PostgreSQL
# on 5440 and Redis on 6390 in a temporary directory). Results: reliability/results/.
# RELIABILITY_ARGS="R2 R8 --quick" runs some targets, shortened.
reliability: $(VENV)/.reliability-installed
	$(PY) -m reliability.run $(RELIABILITY_ARGS)

$(VENV)/.reliability-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,reliability]'
	touch $@

clean:
	rm -rf .local $(VENV)
