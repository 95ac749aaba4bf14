# The RL trainer for GPU machines: CUDA, vLLM and `rl-client` (the `train` and `vllm` extras),
# launched with torchrun. Not built with this base nor run on a GPU where it was written (no
# registry, no GPU); docker/README.md says what was checked.
#
#   docker build -f docker/trainer.Dockerfile -t verifier-rl-trainer .
#   (podman: add --ignorefile docker/trainer.Dockerfile.dockerignore)
#   docker run --gpus all --ipc=host -v $PWD/runs:/workspace/runs \
#     -v $PWD/my-config.yaml:/workspace/config.yaml verifier-rl-trainer
#
# Like vLLM's own image, the runtime base is CUDA's minimal `base` flavour: the CUDA libraries
# torch and vLLM use come with their wheels (nvidia-* packages). vllm 0.32.0 pins torch 2.13.0,
# whose wheels are CUDA 13.0 (nvidia-cuda-runtime 13.0.96): the host driver must support CUDA
# 13.0 (R580 or newer); keep CUDA_BASE on the same CUDA major version.
ARG CUDA_BASE=docker.io/nvidia/cuda:13.0.0-base-ubuntu24.04
FROM ${CUDA_BASE}

# python3 (3.12 on Ubuntu 24.04) for the venv; gcc and python3-dev because Triton compiles a
# small C launcher at run time; the reward server's sandbox is NOT here: the trainer talks to
# a verifier-server (the server image, a sidecar) over gRPC.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

# vLLM first, at a version whose transformers range meets pyproject's (>=5.16.1,<5.20): it
# pins the torch build the trainer then uses. pip fails the build on a conflict.
ARG VLLM_VERSION=0.32.0
ARG PIP_OPTIONS=""
COPY pyproject.toml README.md LICENSE /src/
COPY verifier_server /src/verifier_server
COPY sandboxes /src/sandboxes
COPY rl_client /src/rl_client
COPY rm_encoding /src/rm_encoding
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/rl \
 && /opt/rl/bin/pip install --no-cache-dir ${PIP_OPTIONS} "vllm==${VLLM_VERSION}" \
 && /opt/rl/bin/pip install --no-cache-dir ${PIP_OPTIONS} "/src[train,vllm]" \
 && /opt/rl/bin/python -c "import importlib.metadata as m, rl_client.cli; \
      print('torch', m.version('torch'), 'vllm', m.version('vllm'))"

# VLLM_SERVER_DEV_MODE: `vllm serve` from this image (compose's vllm service) exposes the
# /collective_rpc and /reset_prefix_cache endpoints the `vllm_remote` engine syncs weights with.
ENV PATH=/opt/rl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VLLM_SERVER_DEV_MODE=1
WORKDIR /workspace
# torchrun sets RANK, LOCAL_RANK and WORLD_SIZE and restarts nothing by default. Replace CMD to
# change the process count or the rendezvous (multi-node: --nnodes N --rdzv-backend c10d
# --rdzv-endpoint HOST:PORT). `rl-client train` itself runs as one process per run today.
ENTRYPOINT ["torchrun"]
CMD ["--nproc-per-node=1", "--module", "rl_client.cli", "train", "--config", "/workspace/config.yaml"]
