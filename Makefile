# ccmitm — every target bootstraps .venv itself (Python 3.12+, chosen by .python-version).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
NODE_DIR := tests/e2e/node
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench docs node-deps summarize verify-routing bundle \
        service-install service-uninstall clean

# Find a Python >= 3.12: $(PYTHON) if given, else pyenv's (it honours .python-version),
# else the first python3.13 / python3.12 / python3 on PATH that is new enough.
define find_python
for candidate in $${PYTHON:-} "$$(pyenv which python 2>/dev/null)" python3.13 python3.12 python3; do \
  [ -n "$$candidate" ] || continue; \
  if "$$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
    command -v "$$candidate" || echo "$$candidate"; exit 0; fi; \
done; echo "ccmitm needs Python 3.12+ (mitmproxy 12); install one (e.g. pyenv install 3.13)" >&2; exit 1
endef

$(STAMP): pyproject.toml
	@if ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	  py=$$($(find_python)) || exit 1; \
	  echo "creating $(VENV) with $$py ($$("$$py" --version))"; \
	  rm -rf $(VENV) && "$$py" -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(STAMP) ## create .venv and install ccmitm (editable) with test extras

run: install ## run ccmitmd in the foreground (built-in defaults unless a config exists)
	$(BIN)/ccmitmd $(ARGS)

node-deps: ## install the Claude Code CLI for end-to-end tests (skipped without npm)
	@if command -v npm >/dev/null 2>&1; then \
	  if [ ! -x $(NODE_DIR)/node_modules/.bin/claude ]; then \
	    npm --prefix $(NODE_DIR) ci --no-audit --no-fund --loglevel=error || \
	    npm --prefix $(NODE_DIR) install --no-audit --no-fund --loglevel=error; fi; \
	else echo "npm not found: the Claude Code end-to-end test will be skipped"; fi

test: install node-deps ## run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

summarize: install ## per-lane usage summary from the local logs (ARGS="--since 24h" or "--json")
	$(BIN)/ccctl summarize $(ARGS)

verify-routing: install ## routing and header-hygiene audit of the usage log; exits 1 on a violation (ARGS="--proof")
	$(BIN)/ccctl verify $(ARGS)

bundle: install ## write a review bundle (dir + .tgz) into bundle.dir now
	$(BIN)/ccctl bundle $(ARGS)

bench: install ## benchmark ccmitmd vs bare mitmproxy vs direct; rewrites docs/PERFORMANCE.md + docs/performance.json (not a test)
	$(BIN)/python tests/bench/bench_proxy.py
	$(BIN)/python tests/bench/bench_reports.py

docs: install ## regenerate docs/CONFIG.md, etc/config.yaml, etc/shell/* and logrotate/ccmitm from their sources (tests check they are current)
	$(BIN)/python -m ccmitm.config.doc > docs/CONFIG.md
	$(BIN)/python -m ccmitm.config.doc --example > etc/config.yaml
	$(BIN)/python -m ccmitm.cli shell init bash > etc/shell/ccmitm.sh
	$(BIN)/python -m ccmitm.cli shell init fish > etc/shell/ccmitm.fish
	$(BIN)/ccctl logrotate --repository-copy > logrotate/ccmitm

lint: install ## ruff (style) and mypy (types: the control protocol's replies are TypedDicts)
	$(BIN)/ruff check daemon tests
	$(BIN)/ruff format --check daemon tests
	@# mypy finds a package by its folder's name: show it daemon/ under the name it is imported by.
	@mkdir -p $(VENV)/typecheck && ln -sfn ../../daemon $(VENV)/typecheck/ccmitm
	MYPYPATH=$(VENV)/typecheck $(BIN)/mypy -p ccmitm

service-install: install ## run ccmitmd at login/boot: systemd user unit or launchd agent (ARGS="--dry-run")
	$(BIN)/ccctl service install $(ARGS)

service-uninstall: install ## stop the service and remove what service-install wrote (ARGS="--dry-run")
	$(BIN)/ccctl service uninstall $(ARGS)

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache
