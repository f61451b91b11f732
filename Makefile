# tokensync developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCAL ?= .local
PYTEST_ARGS ?=

.PHONY: venv tools binaries lint typecheck unit test crds image image-test cluster-up cluster-down run fake-oauth2 bench soak e2e-kind clean

venv: $(VENV)/.installed

# Pinned versions (constraints.txt) are what CI and the image install. The development
# tooling (dev/, package tokensync_dev) is a distribution of its own: never in the wheel.
$(VENV)/.installed: pyproject.toml dev/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/pip install --quiet -c constraints.txt -e ./dev
	touch $@

# Builds etcd, kube-apiserver, kube-controller-manager and kubectl (and helm, for the
# chart's tests) once per version into ~/.cache/tokensync/bin (or uses $$KUBEBUILDER_ASSETS).
binaries: venv
	$(BIN)/python -m tokensync_dev.devcluster binaries --helm

# Tools the tests use from Debian's packages: promtool (alert rule tests), shellcheck,
# lua with cjson (the Argo CD health check), docker.io and debootstrap (the image test:
# a private dockerd and a stand-in base image, tests/integration/test_image.py).
# docker.io's service is kept from starting while it installs (policy-rc.d): a system
# dockerd would add a bridge and iptables rules to the host; the test needs neither.
tools:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	command -v lua5.4 >/dev/null || missing="$$missing lua5.4"; \
	[ -e /usr/lib/x86_64-linux-gnu/lua/5.4/cjson.so ] || [ -n "$$(find /usr/lib -path '*lua/5.4/cjson.so' 2>/dev/null)" ] || missing="$$missing lua-cjson"; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && \
	    trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

# End to end on kind (needs Docker, kind, helm, kubectl; not on our CI machines).
e2e-kind:
	hack/e2e-kind.sh

lint: venv
	$(BIN)/ruff check operator dev tests bench
	$(BIN)/ruff format --check operator dev tests bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# The CRD's provider blocks are generated from the providers' own declarations
# (tokensync_dev.crdgen); a test fails when the committed CRD differs.
crds: venv
	$(BIN)/python -m tokensync_dev.crdgen

test: venv tools binaries lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

# The operator's image, for a developer without a registry: on the engine DOCKER_HOST
# names (or the default socket), else on a private dockerd started for the build and
# stopped after (its images stay in ~/.cache/tokensync/docker); on python:3.11-slim-bookworm
# when that engine has it, else on a debootstrap STAND-IN for it (hack/image/standin-base.sh).
IMAGE ?= tokensync:dev
image: venv tools
	PYTHONPATH=tests $(BIN)/python -m support.docker build --tag $(IMAGE)

# Only the image tests: build the image once, run both renderings of the Deployment in it.
image-test: venv tools binaries
	$(BIN)/pytest tests/integration/test_image.py $(PYTEST_ARGS)

cluster-up: binaries
	@$(BIN)/python -m tokensync_dev.devcluster --dir $(LOCAL) up --crds crds

cluster-down: venv
	@$(BIN)/python -m tokensync_dev.devcluster --dir $(LOCAL) down

# The operator in the foreground: against $$KUBECONFIG (or ~/.kube/config) when set,
# else against the cluster of `make cluster-up`, else a local control plane of its own.
# Extra operator options: make run ARGS="--namespace team-a".
ARGS ?=
run: binaries
	@$(BIN)/python -m tokensync_dev.devcluster --dir $(LOCAL) run -- $(ARGS)

# A fake OAuth2 token endpoint on 127.0.0.1:9400 (client demo / demo-secret) for trying
# examples/oauth2-client-credentials.yaml against `make run`.
fake-oauth2: venv
	PYTHONPATH=tests $(BIN)/python -m fakes.oauth2_server --port 9400 --client demo:demo-secret

# Scale benchmark (issues 7 and 19). Phases: API write ceiling; the same writes as the
# bursts by a tight client (1,000, 5,000); idle operator RSS; bursts of 1,000 and 5,000
# ProviderTokens; 2 renewal rounds of the 5,000; restart; token endpoint down for a
# token's life + 30 s; external-secrets side by side (1,000 tokens, 12 min); 20,000
# ProviderTokens and 2 renewal rounds. About 45 minutes; results in bench/results/.
# Smaller: make bench BENCH_ARGS="--sizes 200 --steady 200 --expires-in 60 --peer 0 --scale 0"
BENCH_ARGS ?=
bench: binaries
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	$(BIN)/python -m tokensync_dev.peers.eso build
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Soak under faults (issue 16): 1,000 tokens, 35 minutes, two replicas under leader
# election, faults drawn from a seed (random unless given; always recorded). Not part of
# `make test`. Results in bench/results/soak.{json,md,png}.
# Smaller: make soak SOAK_ARGS="--tokens 60 --minutes 6 --fault-every 25 --lifetime-max 180 --out /tmp/soak"
SOAK_ARGS ?=
soak: binaries
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(LOCAL) .mypy_cache .pytest_cache .ruff_cache
