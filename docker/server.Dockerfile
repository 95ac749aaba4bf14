# The reward server alone: verifier-server with Python 3, g++ and Node.js for the code sandbox.
# No torch: the `rm` and `train` extras are left out, so the reward_model verifier (listed) cannot
# load a model here; derive an image that adds them if you serve reward models.
#
#   docker build -f docker/server.Dockerfile -t verifier-rl-server .
#   make docker     # here: podman, a Debian base made with mmdebstrap (no registry reachable)
#
# BASE selects the base image: any Debian bookworm image with apt (its /usr/bin/python3 is the
# 3.11 that the sandbox runs programs with). `make docker` passes a locally imported one.
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
# Extra pip options for builds behind a mirror or a private index, e.g. --build-arg
# PIP_OPTIONS="--index-url https://mirror/simple". Behind a TLS-intercepting proxy, pass its
# CA bundle as a build secret: --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
# (`make docker` does). Neither ends up in the final image.
ARG PIP_OPTIONS=""
COPY pyproject.toml README.md LICENSE /src/
COPY verifier_server /src/verifier_server
COPY sandboxes /src/sandboxes
COPY rl_client /src/rl_client
COPY rm_encoding /src/rm_encoding
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/verifier-rl \
 && /opt/verifier-rl/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} /src \
 && /opt/verifier-rl/bin/pip uninstall -q -y setuptools \
 && find /opt/verifier-rl -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/verifier-rl/bin/python -m compileall -q /opt/verifier-rl/lib

FROM ${BASE}
# python3: the venv's interpreter and the sandbox's (launchers, zygotes, runner="python");
# g++ and nodejs: the C++ and JavaScript runners. The sandbox binds /usr, /bin and /lib*
# read-only into every run, so what is installed here is what a program can see and run.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 g++ nodejs \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/verifier-rl /opt/verifier-rl
COPY docker/server-config.yaml /etc/verifier-rl/config.yaml
COPY docker/health_probe.py /opt/verifier-rl/bin/grpc-health
COPY docker/smoke.py /opt/verifier-rl/share/smoke.py
ENV PATH=/opt/verifier-rl/bin:$PATH \
    PYTHONUNBUFFERED=1

# Root inside the container: the sandbox writes uid/gid maps for unprivileged outside uids
# (CAP_SETUID, CAP_SETGID) and creates per-slot cgroups, and refuses to start otherwise.
# It needs no CAP_SYS_ADMIN, but a seccomp profile, security settings and a writable cgroup
# named as sandbox.cgroup_parent (e.g. Docker >= 28: --cgroupns private --security-opt
# writable-cgroups=true -e VERIFIER_RL_SANDBOX_CGROUP_PARENT=/): docker/README.md, "The
# sandbox in a container". Without them, or with `--user 65534:65534`, everything but code
# rewards works and code items fail closed (VERIFIER_ERROR, reason sandbox_error).
USER root
WORKDIR /var/lib/verifier-rl
EXPOSE 50051
# Mount your own config over /etc/verifier-rl/config.yaml (check it: verifier-server check --config FILE).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["grpc-health", "127.0.0.1:50051"]
ENTRYPOINT ["verifier-server"]
CMD ["serve", "--host", "0.0.0.0", "--port", "50051", "--config", "/etc/verifier-rl/config.yaml"]
