# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv from pyproject.toml when it
# is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve-demo test test-py312 print-py312 bench lint system-deps translations clean

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,clickhouse]'
	@touch $(STAMP)

# Browser tests (tests/web): Debian's Chromium, driven by Playwright for Python (a dev dependency that never
# downloads a browser of its own), and axe-core from the npm registry, pinned, injected into the pages to check
# their accessibility (MPL-2.0; installed into .cache/axe, not committed).
AXE_VERSION := 4.14.1
AXE := .cache/axe/node_modules/axe-core/axe.min.js
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

# WeasyPrint renders PDFs through Pango and subsets fonts with HarfBuzz (ten times faster than without it); the
# tests turn PDFs into pictures with poppler's pdftoppm to look at them; Noto Sans CJK draws Japanese (and
# Chinese, Korean) invoices, which DejaVu has no glyphs for. Installed from Debian's packages where the machine
# lacks them.
system-deps:
	@missing=""; \
	ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so' || missing="$$missing libpango-1.0-0 libpangoft2-1.0-0"; \
	ldconfig -p 2>/dev/null | grep -q 'libharfbuzz-subset.so' || missing="$$missing libharfbuzz-subset0"; \
	fc-list 2>/dev/null | grep -qi 'DejaVu Sans' || missing="$$missing fonts-dejavu-core"; \
	fc-list 2>/dev/null | grep -qi 'Noto Sans CJK' || missing="$$missing fonts-noto-cjk"; \
	command -v pdftoppm >/dev/null 2>&1 || missing="$$missing poppler-utils"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing from Debian's packages:$$missing"; \
		(apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null)) || \
		echo "could not install$$missing: PDF rendering may fail or be slow, browser tests cannot run"; \
	fi
	@$(MAKE) --no-print-directory $(AXE)

$(AXE):
	npm install --silent --no-audit --no-fund --prefix .cache/axe axe-core@$(AXE_VERSION)

demo: $(STAMP)
	$(BIN)/python -m billing.demo

# The demo's database served on 127.0.0.1:8000 (no scheduler: the demo's quarter stays as it ended), with the
# secret the demo signed its portal link with.
serve-demo: $(STAMP)
	@test -f out/billing.db -a -f out/portal-secret || { echo "run make demo first"; exit 1; }
	BILLING_DATABASE_URL=sqlite:///$(CURDIR)/out/billing.db BILLING_PORTAL_SECRET="$$(cat out/portal-secret)" \
		$(BIN)/billing serve --no-scheduler

test: $(STAMP) $(AXE)
	$(BIN)/python -m pytest

# The suite on Python 3.12 too, in a venv of its own (.venv312): the first python3.12 found on the PATH or in
# pyenv's versions. `.ci/run` runs it on SQLite when the machine has a 3.12.
PY312 ?= $(firstword $(foreach p,python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12),$(shell $(p) -c 'import sys; assert sys.version_info[:2] == (3, 12); print("$(p)")' 2>/dev/null)))
VENV312 := .venv312

$(VENV312)/.installed: pyproject.toml
	@test -n "$(PY312)" || { echo "no Python 3.12 found (python3.12 on the PATH or in ~/.pyenv/versions)"; exit 1; }
	@$(MAKE) --no-print-directory system-deps
	$(PY312) -m venv $(VENV312)
	$(VENV312)/bin/pip install --quiet --upgrade pip
	$(VENV312)/bin/pip install --quiet -e '.[dev,clickhouse]'
	@touch $@

print-py312:
	@echo $(PY312)

test-py312: $(VENV312)/.installed $(AXE)
	$(VENV312)/bin/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# ruff; mypy --strict on the pure packages and the db kit (pyproject's [tool.mypy] names them); the architecture's
# import contracts (pyproject's [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The invoice's words: extract them from invoices/ (babel.cfg) into the template invoices/locale/invoices.pot and
# merge it into each language's catalog (invoices/locale/<language>/LC_MESSAGES/invoices.po), for translators
# to fill in; then check that every catalog compiles. The catalogs are compiled when first used (invoices/i18n.py),
# so no compiled file is kept. A new language: make translations NEW_LANGUAGE=pt (then translate its .po).
LOCALES := invoices/locale
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _unit_forms:1,2 --no-location --sort-output \
		--project billing --copyright-holder "" -o $(LOCALES)/invoices.pot .
	@if [ -n "$(NEW_LANGUAGE)" ]; then \
		$(BIN)/pybabel init -D invoices -i $(LOCALES)/invoices.pot -d $(LOCALES) -l $(NEW_LANGUAGE); fi
	$(BIN)/pybabel update -D invoices -i $(LOCALES)/invoices.pot -d $(LOCALES) --no-fuzzy-matching
	$(BIN)/python -m invoices.i18n

clean:
	rm -rf out .pytest_cache .ruff_cache
