# devmlops: `make run` shows the local stack, `make test` checks everything. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The folder with etcd, kube-apiserver, kube-controller-manager, KServe, helm, opa and the node's kubelet,
# kube-scheduler, kube-proxy, crictl, kubectl and pause; hack/tools.sh builds it
# (or takes KUBEBUILDER_ASSETS and builds what that folder lacks).
TOOLS_DIR = $(shell bash hack/tools.sh)

.PHONY: help venv tools registries lint test test-rego test-unit test-integration run fuzz bench bench-evidence bench-guard bench-webhook bench-verify bench-apiserver bench-pods bench-operator clean image image-model-server kind-check kind-e2e e2e

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create .venv with devmlops and its dev tools

tools: ## Build the control plane, KServe, helm, opa and the node's binaries into ~/.cache/devmlops (once)
	@bash hack/tools.sh

lint: $(STAMP) ## ruff, mypy --strict and the import-linter layer contracts
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy
	PYTHONPATH=. $(VENV)/bin/lint-imports  # tests/lint/contracts.py: the core's allow-list

test-unit: $(STAMP) ## Unit tests only (no control plane)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP) ## Integration tests against a real kube-apiserver + etcd
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" DEVMLOPS_REQUIRE_INTEGRATION=1 $(PY) -m pytest tests/integration

test-rego: ## opa fmt, opa check --strict and opa test with at least 90% coverage over policies/
	@opa="$(TOOLS_DIR)/opa"; \
	"$$opa" fmt --list --fail policies; \
	"$$opa" check --strict --ignore samples policies; \
	"$$opa" test --coverage --threshold 90 --ignore samples --format json policies > .rego-coverage.json || \
		{ "$$opa" test --ignore samples policies; echo "opa test failed or coverage is under 90%"; exit 1; }; \
	$(PY) -c 'import json; print("rego coverage: %.1f%%" % json.load(open(".rego-coverage.json"))["coverage"])'

registries: $(STAMP) ## What the tests and `make run` start besides the control plane: MLflow's venv, the OCI registry, cosign and Prometheus (cached)
	$(PY) -c 'from devmlops.harness.mlflow import mlflow_venv; from devmlops.harness.oci import oci_tools; mlflow_venv(print); oci_tools(log=print)'
	$(PY) -c 'from devmlops.harness.prometheus import prometheus_binary; prometheus_binary(print)'

test: lint test-rego $(STAMP) ## Lint, type check, Rego tests, unit and integration tests (what CI runs)
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" DEVMLOPS_REQUIRE_INTEGRATION=1 $(PY) -m pytest

run: $(STAMP) ## Local control plane + webhook + operator, samples applied, outcome table (RUN_ONCE=1 exits)
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" $(VENV)/bin/devmlops local --project-dir "$(CURDIR)"

clean: ## Remove the venv and caches in the repo (the tool cache in ~/.cache/devmlops stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .rego-coverage.json

fuzz: $(STAMP) ## Hypothesis fuzzing, at least 100,000 cases (make test runs a short pass)
	DEVMLOPS_FUZZ_EXAMPLES=15000 $(PY) -m pytest tests/unit/fuzz -q -s --timeout=3600

bench: bench-webhook bench-verify bench-apiserver bench-pods bench-operator bench-evidence bench-guard bench-drift bench-registry ## Every benchmark (not in make test); writes docs/benchmarks.md
	@echo "docs/benchmarks.md updated"

bench-webhook: $(STAMP) ## /validate over TLS vs the bare endpoint, warm and cold, and at 2x saturation (needs Go)
	$(PY) -m tests.bench.bench_webhook

bench-verify: $(STAMP) ## devmlops verify on a generated 1 GiB model vs hashlib, one core and every core
	$(PY) -m tests.bench.bench_verify

bench-evidence: $(STAMP) ## attestation verification per admission, a 1 GiB model's scan vs hashlib, evaluate time
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" $(PY) -m tests.bench.bench_evidence

bench-apiserver: $(STAMP) ## admission latency from the API server's own metrics at a fixed create rate
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" $(PY) -m tests.bench.bench_apiserver

bench-pods: $(STAMP) ## Pod admissions at 100/s in an enforced namespace, from the API server's own metrics
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" $(PY) -m tests.bench.bench_pods

bench-guard: $(STAMP) ## Latency the serving guard adds at 1,000 requests/s on a core of its own, and in front of MLServer (needs Go and PyPI)
	$(PY) -m tests.bench.bench_guard

bench-registry: $(STAMP) ## Tag pinning and a certificate-chain image signature per admission, against a local registry
	$(PY) -m tests.bench.bench_registry

bench-drift: $(STAMP) ## The guard's drift and probing signals per 1,000 requests, beside the guard's own CPU
	$(PY) -m tests.bench.bench_drift

bench-operator: $(STAMP) ## 1,000 policies and 1,000 ModelDeployments through the real API server: time, memory
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" $(PY) -m tests.bench.bench_operator

# The container image: with Docker where an engine answers, else without it (devmlops.harness.pyimages: debootstrap,
# pip chrooted into Debian's Python 3.11, umoci; needs root and PyPI). Either way an OCI archive lands in the image
# cache (~/.cache/devmlops/images, or $DEVMLOPS_IMAGES_CACHE), never in the repository; its path is printed last.
IMAGE ?= devmlops:dev
# The Docker-free build needs only the standard library and devmlops's own source, so no venv.
IMAGES_PY := PYTHONPATH=$(CURDIR)/src $(PYTHON)

image: ## Build the devmlops image as an OCI archive (Docker if an engine answers, else debootstrap + pip + umoci)
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		echo "make image: building with Docker ($(IMAGE))" >&2; \
		docker build -t $(IMAGE) .; \
		out="$$($(IMAGES_PY) -c 'from devmlops.harness.images import image_cache_root as r; print(r())')"; \
		mkdir -p "$$out"; docker save -o "$$out/devmlops-docker.oci.tar" $(IMAGE); echo "$$out/devmlops-docker.oci.tar"; \
	else \
		echo "make image: no Docker engine here; building without Docker (debootstrap, pip in a chroot, umoci)" >&2; \
		$(IMAGES_PY) -m devmlops.harness.pyimages devmlops --project-dir "$(CURDIR)"; \
	fi

image-model-server: ## Build the model-server image (MLServer + its sklearn runtime from PyPI), without Docker
	@$(IMAGES_PY) -m devmlops.harness.pyimages model-server

# E2E_ARGS=--keep keeps the cluster up at the end (also after a failure) until Ctrl-C, for kubectl and crictl.
E2E_ARGS ?=

# The same steps as `make e2e` (devmlops.harness.e2e), on a kind cluster: the images built like `make image`'s
# Docker-free path (root) and loaded with `kind load image-archive`; helm and OPA from the tools folder. Docker and kind
# are checked first, so a machine without them is told at once (exit 2), before any tool is built.
# (A prerequisite of its own: make expands the whole recipe, and so $(TOOLS_DIR), before its first line runs.)
kind-check: $(STAMP)
	@$(PY) -m devmlops.harness.kindcluster --check

kind-e2e: kind-check ## The e2e steps of `make e2e` on a kind cluster (needs Docker and kind; root for the images)
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" $(PY) -m devmlops.harness.e2e --cluster kind --project-dir "$(CURDIR)" $(E2E_ARGS)

# The local node runs the chart and a signed model for real (devmlops.harness.e2e; needs root, cgroup v1 and the node's
# Debian packages, like DEVMLOPS_NODE=1); images are built or taken from ~/.cache/devmlops/images.
e2e: $(STAMP) ## Chart installed on the local node, helm test, a signed model served, tampered, revoked, deleted (root)
	DEVMLOPS_TOOLS_DIR="$(TOOLS_DIR)" $(PY) -m devmlops.harness.e2e --project-dir "$(CURDIR)" $(E2E_ARGS)
