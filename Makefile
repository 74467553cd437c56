# The commands: `make run` (the function on 127.0.0.1:9000), `make test` (everything but the slow
# runs, about five minutes) and `make check` (seconds: lint, the 3.6 check, the team's own tests).
# They install what they need on a fresh machine: a virtualenv, the npm tools, redis-server.
# `make test-slow` runs what `make test` leaves out (tests marked slow; CI runs both).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# What the package ships of the project: every top-level module and package but the dev kit,
# tests and tools (tools/package.py's EXCLUDED), so a team's own modules are checked too.
DEPLOYED = $(shell $(PYTHON) tools/package.py --list-own)

.PHONY: run test test-slow check handler-tests lint typecheck check-py36 pytest bench package lock clean redis-server

run: $(VENV_STAMP)
	$(PY) -m dingtalk_fc_dev.local_server

test: lint typecheck check-py36 pytest

check: lint check-py36 handler-tests

$(VENV_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

lint: $(VENV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The deployed product's type annotations, checked (see [tool.mypy] in pyproject.toml).
typecheck: $(VENV_STAMP)
	$(PY) -m mypy

# Deployed code must run on FC's python3 runtime, Python 3.6.
check-py36: $(VENV_STAMP)
	$(VENV)/bin/vermin --target=3.6- --violations --eval-annotations --no-tips --backport typing $(DEPLOYED)

pytest: $(VENV_STAMP) $(NODE_STAMP) redis-server
	$(PY) -m pytest -m "not slow"

# The valgrind bench smoke, the 10,000-request fuzz, the soak, the team-project proof over the
# whole suite: minutes each.
test-slow: $(VENV_STAMP) $(NODE_STAMP) redis-server
	$(PY) -m pytest -m slow

# The team's own tests: the folders of pyproject.toml's testpaths (one line) but the product's
# `tests`: handler_tests/ as shipped. None there, or no test in them, is nothing to run: green.
TEAM_TESTS = $(filter-out tests,$(wildcard $(shell sed -n 's/^testpaths *= *\[\(.*\)\]/\1/p' pyproject.toml | tr -d '",')))

handler-tests: $(VENV_STAMP)
ifeq ($(strip $(TEAM_TESTS)),)
	@echo "no handler tests: none of pyproject.toml's testpaths but tests/ exists"
else
	$(PY) -m pytest -q -p no:cacheprovider $(TEAM_TESTS) || [ $$? -eq 5 ]
endif

bench: $(VENV_STAMP)
	$(PY) tools/bench.py

# One zip per runtime, where template.yml and s.yaml expect them: build/run-make-package/python3.zip
# (Funcraft, Python 3.6.15, from the lock) and build/run-make-package/python3.10.zip (Serverless
# Devs fc3, Python 3.10, the lock's pins as constraints; requirements-python3.10.txt re-pins).
# The python3 zip also carries the function's settings from the untracked .env (docs/deploy.md);
# a template.packaged.yml left by `fun package` would win over `fun build` in `fun deploy`.
package: $(VENV_STAMP)
	rm -f template.packaged.yml
	$(PY) tools/package.py --runtime python3
	$(PY) tools/package.py --runtime python3.10

# Re-pin tools/lock-python3.txt from requirements.txt with pip under a real Python 3.6.15, keeping
# the pins the requirements still accept; prints what changed (docs/dependencies.md).
lock: $(VENV_STAMP)
	$(PY) tools/package.py --refresh-lock

clean:
	rm -rf $(VENV) node_modules build .pytest_cache .ruff_cache .hypothesis
