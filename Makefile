PYTHON ?= python

.PHONY: run test test-deps lint

run:
	$(PYTHON) -m pip install -q -r requirements.txt
	streamlit run app.py

# Everything the tests need: Python packages, and Debian's Chromium for the browser tests.
test-deps:
	$(PYTHON) -m pip install -q -r requirements-dev.txt
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)

test: test-deps
	$(PYTHON) -m pytest -q

lint:
	ruff check .
	ruff format --check .
