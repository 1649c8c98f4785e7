# Entry points for a fresh machine with Python 3.11:
#   make run    installs what the app needs and starts it on the shipped models, for this machine only
#   make serve  the same for a clinic network (ADDRESS, PORT): the app refuses to serve until sign-in
#               and its allow-list are configured, or MELANOMA_AUTH=proxy names the proxy's addresses
#               in MELANOMA_PROXY_ADDRESSES (README, Privacy and deployment)
#   make test   installs what the tests need and runs them
#   make lint   ruff lint rules and format check (CI runs it before the tests)
PYTHON ?= python3.11
ADDRESS ?= 0.0.0.0
PORT ?= 8501
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run serve test browser lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	touch $@

$(VENV)/.test: requirements.txt requirements-train.txt requirements-test.txt | $(BIN)/python
	$(BIN)/pip install -r requirements-test.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/streamlit run app.py --server.address 127.0.0.1

serve: $(VENV)/.runtime
	$(BIN)/streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

# The browser test drives Debian's Chromium; install it when missing and we may (root, apt).
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(VENV)/.test browser
	$(BIN)/python -m pytest

# ruff's lint rules and format check, as configured in pyproject.toml.
lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
