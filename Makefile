# Targets for a new user: `make run` serves the app, `make test` runs every test.
# Both create .venv in the project root on first use; nothing else is needed
# beyond Python 3.11 or newer.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
# mysqlclient compiles against the MySQL/MariaDB client headers; install it
# only where they are present (CI and the production image have them).
EXTRAS := test$(shell pkg-config --exists mysqlclient 2>/dev/null && echo ,mysql)
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: run test test-unit test-browser test-realstack install migrate seed clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate_all

run: migrate
	@echo "Serving on http://$(HOST):$(PORT)/ (Ctrl+C stops it)"
	$(BIN)/daphne -b $(HOST) -p $(PORT) chatproject.asgi:application

seed: migrate
	$(BIN)/python manage.py seed_demo

# The browser tests run in their own pytest process: Playwright's sync API
# and pytest-asyncio cannot share one event loop.
test: install
	$(BIN)/python -m pytest -m "not browser"
	@$(MAKE) --no-print-directory test-browser
	@$(MAKE) --no-print-directory test-realstack

test-browser: install
	@$(BIN)/python tests/browser/check_browser.py; status=$$?; \
	if [ $$status -eq 77 ]; then exit 0; elif [ $$status -ne 0 ]; then exit $$status; fi; \
	$(BIN)/python -m pytest -m browser tests/browser

# The second pass: every non-browser test again on MariaDB with two message
# shards and Redis, which also runs the tests marked realstack. It needs
# root without a password on 127.0.0.1:3306 and Redis database 1 on
# 127.0.0.1:6379 (docs/deployment.md); check_servers.py skips the pass when
# they do not answer, except under CI=true. Override any REALSTACK_ variable
# to use other databases, for example REALSTACK_REDIS_URL=redis://127.0.0.1:6379/2.
REALSTACK_DATABASE_URL ?= mysql://root@127.0.0.1:3306/chat_main
REALSTACK_SHARD_URLS ?= mysql://root@127.0.0.1:3306/chat_shard0,mysql://root@127.0.0.1:3306/chat_shard1
REALSTACK_REDIS_URL ?= redis://127.0.0.1:6379/1
REALSTACK_ENV = DATABASE_URL=$(REALSTACK_DATABASE_URL) MESSAGE_SHARD_URLS=$(REALSTACK_SHARD_URLS) \
	REDIS_URL=$(REALSTACK_REDIS_URL) DJANGO_ALLOWED_HOSTS=localhost,127.0.0.1 \
	DJANGO_SECRET_KEY=test-only-key-for-the-mariadb-and-redis-pass-0123456789abcdef

test-realstack: install
	@$(REALSTACK_ENV) $(BIN)/python tests/realstack/check_servers.py --flush-redis; status=$$?; \
	if [ $$status -eq 77 ]; then exit 0; elif [ $$status -ne 0 ]; then exit $$status; fi; \
	$(REALSTACK_ENV) $(BIN)/python -m pytest -m "not browser"

clean:
	rm -rf $(VENV) var

# Benchmarks (bench/run.py; results and method in docs/benchmarks.md).
# `make bench` takes about a minute and needs nothing beyond the venv; it
# prints one JSON line last. `make bench-full` runs every scenario in about
# 25 minutes and also needs MariaDB/MySQL and redis-server for the Redis
# targets; it writes JSON and fanout.png under bench/results/.
# Pass harness options with BENCH_ARGS, for example BENCH_ARGS="--only fanout-1000".
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: bench bench-full

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS),bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py quick $(BENCH_ARGS)

bench-full: $(BENCH_STAMP)
	$(BIN)/python bench/run.py full $(BENCH_ARGS)
