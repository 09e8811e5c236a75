# qrmid: set-up, demo and tests. `make demo` and `make test` each work on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests use (installed when missing and running as root): systemd-analyze for the
# unit; jq for the docs' examples and iproute2 for their test; gRPC core, protobuf-c and their generators
# for the C stubs; valgrind for the C memory checks;
# Slurm and MUNGE for the one-node cluster the SPANK plugin is tested on; PostgreSQL for the cluster-mode store.
DEB_PACKAGES := systemd gcc make pkg-config libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev \
	valgrind openssl slurmctld slurmd slurm-client munge libmunge2 libmunge-dev libslurm-dev python3 jq iproute2 \
	postgresql gfortran openmpi-bin libopenmpi-dev libjansson-dev

.PHONY: demo test runtime install system-packages

PIP := $(BIN)/pip install --quiet --disable-pip-version-check

## Install qrmid's runtime set into $(VENV) (not the test extras) and run a Bell-state sampler and a Pulser
## sequence through a private daemon: prints their results and nothing else.
demo: runtime
	@$(BIN)/qrmid demo

## Install everything the tests need, then run them.
test: system-packages install
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; status=0; fi; exit $$status

runtime: $(VENV)/.runtime
install: $(VENV)/.installed

$(VENV)/.runtime: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(PIP) -e .
	@touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(PIP) -e '.[test]'
	touch $@

system-packages:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -ne 0 ]; then echo "please install: $$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
