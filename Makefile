# tokensync developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCAL ?= .local
PYTEST_ARGS ?=

.PHONY: venv tools binaries lint typecheck unit test cluster-up cluster-down run fake-oauth2 bench clean

venv: $(VENV)/.installed

# Pinned versions (constraints.txt) are what CI and the image install.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# Builds etcd, kube-apiserver, kube-controller-manager and kubectl once per version
# into ~/.cache/tokensync/bin (or uses $$KUBEBUILDER_ASSETS).
binaries: venv
	$(BIN)/python -m tokensync.devcluster binaries

# Tools the tests use from Debian's packages: promtool (alert rule tests).
tools:
	@command -v promtool >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: venv tools binaries lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

cluster-up: binaries
	@$(BIN)/python -m tokensync.devcluster --dir $(LOCAL) up --crds crds

cluster-down: venv
	@$(BIN)/python -m tokensync.devcluster --dir $(LOCAL) down

# The operator in the foreground: against $$KUBECONFIG (or ~/.kube/config) when set,
# else against the cluster of `make cluster-up`, else a local control plane of its own.
# Extra operator options: make run ARGS="--namespace team-a".
ARGS ?=
run: binaries
	@$(BIN)/python -m tokensync.devcluster --dir $(LOCAL) run -- $(ARGS)

# A fake OAuth2 token endpoint on 127.0.0.1:9400 (client demo / demo-secret) for trying
# examples/oauth2-client-credentials.yaml against `make run`.
fake-oauth2: venv
	PYTHONPATH=tests $(BIN)/python -m fakes.oauth2_server --port 9400 --client demo:demo-secret

# Scale benchmark (issue: 5,000 tokens). About 15 minutes; results in bench/results/.
# Smaller: make bench BENCH_ARGS="--sizes 200 --steady 200 --expires-in 60"
BENCH_ARGS ?=
bench: binaries
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(LOCAL) .mypy_cache .pytest_cache .ruff_cache
