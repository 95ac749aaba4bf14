#!/usr/bin/env bash
# docker/smoke.sh IMAGE: run the image's smoke test (docker/smoke.py) without a container
# runtime: mount the image's file system (podman image mount) and make it the root of a
# private mount and pid namespace, with a fresh /proc and the host's /dev and /sys (cgroups,
# for the sandbox's slots) bound in. Runs `verifier-server list`, then scores math and code
# items through a real server inside the image. Needs root.
#
# pivot_root, not chroot: the kernel refuses to create a user namespace (the sandbox's first
# step) from a process whose root is not its mount namespace's root, i.e. under chroot.
set -euo pipefail
IMAGE=${1:-localhost/verifier-rl-server:latest}
root=$(podman image mount "$IMAGE")
trap 'podman image unmount "$IMAGE" >/dev/null' EXIT
echo "== smoke test of $IMAGE (mounted at $root)"
unshare --mount --pid --fork --propagation private /bin/sh -eu -c '
  root=$1
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount --rbind /sys "$root/sys"
  mount -t tmpfs tmpfs "$root/tmp"
  cd "$root"
  pivot_root . .
  umount -l .
  cd /
  exec /usr/bin/env -i PATH=/opt/verifier-rl/bin:/usr/bin:/bin HOME=/root /bin/sh -euc "
    verifier-server list
    echo
    python /opt/verifier-rl/share/smoke.py"
' smoke "$root"
