# gpubatch developer entry points. `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= operator,render,train,spark,demo,dev,bench
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help install demo test test-deps ci-fresh unit test-cluster lint bench crds crds-check k8s-binaries s3-server gcs-server azure-server node-deps images cluster-up cluster-down cluster-kubeconfig cluster-data-dir clean gpu-kit

help:
	@echo "make demo      run every manifest under examples/ with gpubatch run"
	@echo "make test      unit, cluster and operator tests (GPU and kind tests skip without the hardware)"
	@echo "make ci-fresh  .ci/run in a clean clone with empty caches, as on a new machine (timed)"
	@echo "make lint      ruff and mypy"
	@echo "make bench     the benchmarks under bench/ (figures and ratios against their baselines)"
	@echo "make images    build the operator, CPU and GPU images with Docker (cached by inputs)"
	@echo "make cluster-up / cluster-down / -s cluster-kubeconfig / -s cluster-data-dir   the local test cluster"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/run-all.sh

k8s-binaries:
	bash tests/cluster/k8s-binaries.sh

# The S3 server of the s3:// tests (SeaweedFS, built from its pinned Go module, cached by version).
s3-server:
	bash tests/s3/seaweedfs.sh

# The gs:// tests' server (fake-gcs-server, built from its pinned Go module, cached by version).
gcs-server:
	bash tests/objstore/fake-gcs-server.sh

# The az:// tests' server (Azurite, installed with npm ci from tests/objstore/azurite/, cached by version).
azure-server:
	bash tests/objstore/azurite.sh

# The real node and the image builds use Debian's container tools (root); Maven fetches the s3a jars.
NODE_DEPS := docker.io containerd runc containernetworking-plugins debootstrap iptables curl maven
node-deps:
	@missing=""; for p in $(NODE_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

images: node-deps
	bash images/build.sh

# What the tests need, built side by side: the Go builds are bound by the CPU,
# the venv and the images mostly by downloads and the disk. All six start at
# once (the images first: the longest chain that is not the Go builds').
test-deps:
	$(MAKE) --no-print-directory -j6 images install k8s-binaries s3-server gcs-server azure-server

# Phase 1 (no cluster) on parallel workers, then the cluster tests one at a time: tests/run.sh.
test: test-deps
	PYTHON=$(PY) bash tests/run.sh $(PYTEST_ARGS)

# A cold `.ci/run` as on a new machine: a clean clone, empty caches (HOME, Go's
# module and build caches, pip, Docker's data root). Phase times in its log.
ci-fresh:
	bash .ci/fresh.sh

unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-cluster: install k8s-binaries
	$(PY) -m pytest tests/cluster tests/operator $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check jobs operator tests bench
	$(VENV)/bin/mypy

BENCHES ?= render train predict operator_load

bench: install k8s-binaries
	@for name in $(BENCHES); do echo "== bench/$$name.py"; $(PY) bench/$$name.py || exit 1; done

# The wheels the device machine lacks, for tests/gpu/on-device.sh (README: "The GPU check").
gpu-kit:
	bash tests/gpu/kit.sh

crds: install
	$(VENV)/bin/gpubatch crds

crds-check: install
	$(VENV)/bin/gpubatch crds --check

cluster-up: k8s-binaries node-deps
	bash tests/cluster/cluster.sh up

cluster-down:
	bash tests/cluster/cluster.sh down

cluster-kubeconfig:
	@bash tests/cluster/cluster.sh kubeconfig

cluster-data-dir:
	@bash tests/cluster/cluster.sh data-dir

clean:
	rm -rf examples/*/out examples/*/data .pytest_cache .mypy_cache .ruff_cache
