# Set-up and entry points. `make demo` and `make test` each install whatever is missing first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
FMNIST_IDX := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export XLA_PYTHON_CLIENT_PREALLOCATE = false
export TF_CPP_MIN_LOG_LEVEL = 2

.PHONY: setup data-pkg demo test bench faults clean-demo

$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed data-pkg

# Debian's dataset-fashion-mnist ships the IDX files kd_jax builds the TFDS dataset from offline.
data-pkg:
	@if [ ! -f $(FMNIST_IDX) ] && command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi
	@[ -f $(FMNIST_IDX) ] || echo "note: $(FMNIST_IDX) missing; fashion_mnist will need a TFDS download"

demo: setup
	$(PY) -m kd_jax.demo --workdir $(WORKDIR) $(if $(RETRAIN_TEACHERS),--retrain_teachers) $(if $(filter 0,$(DIFFUSION)),--nodiffusion)

test: setup
	$(PY) -m pytest -q -n 2 -p no:cacheprovider tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: setup
	$(PY) benchmarks/run_all.py

# SIGKILL/SIGTERM resumes, a forced NaN and damaged checkpoints on two tiny trainers (~15 min).
faults: setup
	$(PY) benchmarks/fault_injection.py
