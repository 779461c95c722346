# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv from pyproject.toml when it
# is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint system-deps clean

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# WeasyPrint renders PDFs through Pango; install it from Debian's packages where the machine lacks it.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so'; then \
		echo "installing Pango for WeasyPrint (Debian packages)"; \
		apt-get update -qq && apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/python -m billing.demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf out .pytest_cache .ruff_cache
