# Targets for a new user: `make run` serves the app, `make test` runs every test.
# Both create .venv in the project root on first use; nothing else is needed
# beyond Python 3.11 or newer.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# mysqlclient compiles against the MySQL/MariaDB client headers; install it
# only where they are present (CI and the production image have them).
EXTRAS := test$(shell pkg-config --exists mysqlclient 2>/dev/null && echo ,mysql)
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: run test test-unit test-browser install migrate seed clean

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
	$(BIN)/daphne -b 127.0.0.1 -p $(PORT) chatproject.asgi:application

seed: migrate
	$(BIN)/python manage.py seed_demo

# The browser tests run in their own pytest process: Playwright's sync API
# and pytest-asyncio cannot share one event loop.
test: install
	$(BIN)/python -m pytest -m "not browser"
	@$(MAKE) --no-print-directory test-browser

test-browser: install
	@$(BIN)/python tests/browser/check_browser.py; status=$$?; \
	if [ $$status -eq 77 ]; then exit 0; elif [ $$status -ne 0 ]; then exit $$status; fi; \
	$(BIN)/python -m pytest -m browser tests/browser

clean:
	rm -rf $(VENV) var
