PYTHON ?= python

.PHONY: run test test-deps lint docs screenshots

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

# The documentation site, offline: the reference pages regenerated from the code, then site/ built with
# strict link checking (tests/test_docs.py builds it too).
docs:
	$(PYTHON) tools/make_reference.py
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict  # without the theme's end-of-life banner

# Retake the app's screenshots in docs/img/ through the browser tests.
screenshots:
	WORKBENCH_DOCS_SHOTS=docs/img $(PYTHON) -m pytest -q tests/app/test_browser.py tests/app/test_browser_history.py
