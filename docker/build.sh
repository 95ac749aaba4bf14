#!/usr/bin/env bash
# `make docker`: build the reward server image with podman, then smoke-test it.
#
#   docker/build.sh                   # base: $BASE, else debian:bookworm-slim if it can be had,
#                                     # else a Debian base made here with mmdebstrap
#   BASE=my-registry/debian:12 docker/build.sh
#   SMOKE=0 docker/build.sh           # build only
#
# Needs podman (and mmdebstrap when no registry is reachable). Builds with
# `--isolation chroot`, which needs no OCI runtime (on machines where crun/runc cannot start
# containers). Nothing it makes is tracked by git: the base tarball lies in build/docker/.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/verifier-rl-server:latest}
REGISTRY_BASE=docker.io/library/debian:bookworm-slim
LOCAL_BASE=localhost/verifier-rl-base:bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}

command -v podman >/dev/null || { echo "make docker needs podman (apt-get install podman)" >&2; exit 2; }

if [ -z "${BASE:-}" ]; then
  if podman image exists "$REGISTRY_BASE" || timeout 60 podman pull -q "$REGISTRY_BASE" >/dev/null 2>&1; then
    BASE=$REGISTRY_BASE
  else
    echo "== $REGISTRY_BASE cannot be pulled: using a Debian bookworm base made with mmdebstrap"
    BASE=$LOCAL_BASE
    if ! podman image exists "$LOCAL_BASE"; then
      command -v mmdebstrap >/dev/null || { echo "needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 2; }
      mkdir -p build/docker
      # minbase + ca-certificates, without docs, man pages and locales (as debian:*-slim)
      mmdebstrap --variant=minbase --include=ca-certificates \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm build/docker/base.tar "$MIRROR"
      podman import --change 'CMD ["/bin/bash"]' build/docker/base.tar "$LOCAL_BASE" >/dev/null
    fi
  fi
fi

secret=()
if [ -s "$CA_BUNDLE" ]; then  # for pip behind a TLS-intercepting proxy; not kept in the image
  secret=(--secret "id=pip-ca,src=$CA_BUNDLE")
fi
echo "== building $IMAGE from $BASE"
start=$(date +%s)
podman build --isolation chroot --format docker --ignorefile docker/server.Dockerfile.dockerignore \
  "${secret[@]}" --build-arg "BASE=$BASE" -f docker/server.Dockerfile -t "$IMAGE" .
echo "== built $IMAGE in $(( $(date +%s) - start )) s; size $(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=si)B"

if [ "${SMOKE:-1}" != 0 ]; then
  docker/smoke.sh "$IMAGE"
fi
