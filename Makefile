# chatproxy: `make run` sets up .venv and serves http://127.0.0.1:8000; `make test` runs the tests.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: run chat key install install-dev test lint bench simulator clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: requirements-dev.txt $(BIN)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

install-dev: $(BIN)/.installed-dev

# With no OPENAI_API_KEY in the environment or .env, answer from the simulator
# (gunicorn and flask chat start it themselves in simulator mode).
DEMO_IF_NO_KEY = if [ -z "$$OPENAI_API_KEY" ] && ! grep -qsE '^OPENAI_API_KEY=.+' .env; then \
		echo "No OPENAI_API_KEY in the environment or .env: answering from the built-in simulator."; \
		export CHATPROXY_UPSTREAM=simulator; \
	fi

run: install
	@$(DEMO_IF_NO_KEY); exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# A conversation in the terminal, stored like the page's.
chat: install
	@$(DEMO_IF_NO_KEY); exec $(BIN)/flask --app app chat

# The suite runs twice: on SQLite (the default store), then on PostgreSQL.
TEST_POSTGRESQL ?= postgresql://postgres@127.0.0.1:5432/test

# An access key for the page and API clients: make key NAME=alice (prints cpk-..., once).
key: install
	@$(BIN)/flask --app app keys create --name "$${NAME:-me}"

# Both runs happen whatever the first gives; a line each says how it went, and
# make fails if either failed. (Ctrl-C stops both: it ends the recipe's shell.)
test: install-dev
	@sqlite=0; postgresql=0; \
	TEST_DATABASE_URL= $(BIN)/pytest || sqlite=$$?; \
	TEST_DATABASE_URL=$(TEST_POSTGRESQL) $(BIN)/pytest || postgresql=$$?; \
	report() { if [ $$2 -eq 0 ]; then echo "$$1 passed"; else echo "$$1 FAILED (pytest status $$2)"; fi; }; \
	echo; report "make test on SQLite:    " $$sqlite; report "make test on PostgreSQL:" $$postgresql; \
	[ $$sqlite -eq 0 ] && [ $$postgresql -eq 0 ]

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: install-dev
	$(BIN)/python bench/stream_bench.py

simulator: install
	$(BIN)/python -m chatproxy.simulator --port 8001

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
