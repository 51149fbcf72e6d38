# One-command install and run.  `make run` = setup + the default (offline) workflow;
# `make test` = setup + the test suite (what CI runs through .ci/run); `make test-fast` skips
# the slow end-to-end runs.
# Setup is idempotent: it re-runs only when envs/requirements.txt or pyproject.toml change.
PYTHON ?= python3.11
VENV   ?= .venv
CORES  ?= all
WITH_R ?= 1
# pytest workers for `make test` (pytest-xdist; files are spread over workers)
TEST_WORKERS ?= 2
HASH   := $(shell cat envs/requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.setup-$(HASH)
R_STAMP := $(VENV)/.r-setup-attempted
# Moana's own legacy venv (numpy < 2); attempted once per hash of its pins and install script
WITH_MOANA ?= 1
MOANA_VENV ?= .venv-moana
MOANA_HASH := $(shell cat envs/moana-requirements.txt envs/install_moana.sh | sha256sum | cut -c1-16)
MOANA_STAMP := $(VENV)/.moana-setup-attempted-$(MOANA_HASH)

.PHONY: setup run test test-fast lint dryrun report clean-results
setup: $(STAMP) $(R_STAMP) $(MOANA_STAMP)

$(STAMP):
	@if ! $(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then \
		echo "creating $(VENV) with $(PYTHON)"; rm -rf $(VENV); $(PYTHON) -m venv $(VENV); fi
	$(VENV)/bin/python -m pip install --upgrade --quiet pip
	@# the GPU build of TensorFlow (older setups) shares its files with tensorflow-cpu: remove it first
	@if $(VENV)/bin/python -m pip show --quiet tensorflow 2>/dev/null; then \
		$(VENV)/bin/python -m pip uninstall --yes --quiet tensorflow tensorflow-cpu; fi
	$(VENV)/bin/python -m pip install --quiet -r envs/requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.setup-*
	@touch $@

# R competitors (Seurat, SingleR) are optional: failure is reported, not fatal. Attempted
# once per requirements hash; `rm .venv/.r-setup-attempted` to try again.
$(R_STAMP): $(STAMP)
	@if [ "$(WITH_R)" = "1" ]; then bash envs/install_r.sh $(VENV); else echo "WITH_R=0: skipping R"; fi
	@touch $@

# Moana (competitor `moana`) is optional too: envs/install_moana.sh warns instead of failing
$(MOANA_STAMP): $(STAMP)
	@if [ "$(WITH_MOANA)" = "1" ]; then bash envs/install_moana.sh $(MOANA_VENV) $(PYTHON); else echo "WITH_MOANA=0: skipping Moana"; fi
	@rm -f $(VENV)/.moana-setup-attempted-*
	@touch $@

run: setup
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup
	$(VENV)/bin/python -m pytest -ra --durations=25 -n $(TEST_WORKERS) --dist loadfile

# for development: everything but the end-to-end runs and long learning checks
test-fast: setup
	$(VENV)/bin/python -m pytest -ra -m "not slow" --durations=10 -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/snakemake --lint

dryrun: setup
	$(VENV)/bin/snakemake -n

report: setup
	$(VENV)/bin/snakemake --report results/report.zip

clean-results:
	find results -mindepth 1 ! -name README.md -exec rm -rf {} +
