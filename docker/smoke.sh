#!/usr/bin/env bash
# docker/smoke.sh IMAGE: run the image's smoke test (docker/smoke.py) without a container
# runtime: mount the image's file system (podman image mount) and chroot into it, in private
# mount and pid namespaces, with fresh /proc, the host's /dev and /sys (cgroups, for the
# sandbox's slots) bound in. Runs `verifier-server list`, then scores math and code items
# through a real server inside the image. Needs root.
set -euo pipefail
IMAGE=${1:-localhost/verifier-rl-server:latest}
root=$(podman image mount "$IMAGE")
trap 'podman image unmount "$IMAGE" >/dev/null' EXIT
echo "== smoke test of $IMAGE (mounted at $root)"
# The image's root must be a mount point for the sandbox's pivot_root: podman's mount is one.
unshare --mount --pid --fork --propagation private /bin/sh -eu -c '
  root=$1
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount --rbind /sys "$root/sys"
  mount -t tmpfs tmpfs "$root/tmp"
  chroot "$root" /usr/bin/env -i PATH=/opt/verifier-rl/bin:/usr/bin:/bin HOME=/root \
    /opt/verifier-rl/bin/verifier-server list
  echo
  chroot "$root" /usr/bin/env -i PATH=/opt/verifier-rl/bin:/usr/bin:/bin HOME=/root \
    /opt/verifier-rl/bin/python /opt/verifier-rl/share/smoke.py
' smoke "$root"
