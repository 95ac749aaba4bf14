"""The slot's fresh root file system, built by the zygote inside its own mount namespace.

    /usr /bin /lib* /sbin   the host's, bound read-only, nosuid, nodev; of /usr only the
                            subtrees programs and their toolchains use (bin, sbin, lib*,
                            libexec, include, share), not /usr/local, /usr/etc or /usr/src
    /etc                    a few generated files (passwd, group, hosts) and ld.so.cache
    /proc                   a fresh proc of the slot's own pid namespace, subset=pid: only
                            pid directories, self and thread-self (each run mounts its own;
                            a program run's is gone before the program starts)
    /dev                    tmpfs with null, full, random, urandom; /dev/shm per run;
                            /dev/fd per run (sandboxes.stdio), stdin, stdout and stderr
                            links to fd/0, fd/1 and fd/2
    /work /tmp              mount points for each run's fresh tmpfs
Everything else of the host (/root, /home, /etc/shadow, /var, /sys, the server's files) does
not exist inside. The root itself is a read-only tmpfs.
"""

from __future__ import annotations

import os

from sandboxes import syscalls as sc
from sandboxes.limits import WORK_DIR

SANDBOX_UID = 1000  # the run's uid inside the user namespace (mapped to the slot's outside uid)
SANDBOX_GID = 1000
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_USR_SUBTREES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "libexec", "include", "share")
# No /dev/zero: a shared mapping of it is a new file on the kernel's internal shmem mount,
# whose inode numbers are one host-wide count a later run could read (test_counters.py).
_DEVICES = ("null", "full", "random", "urandom")
_ETC_FILES = {
    "passwd": f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{SANDBOX_UID}:{SANDBOX_GID}::"
    f"{WORK_DIR}:/bin/sh\nnobody:x:65534:65534::/:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nsandbox:x:{SANDBOX_GID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}
_RO_BIND = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV


def build_root(new_root: str = "/tmp") -> None:
    """Makes `new_root` (a mount point in this private mount namespace) the root, read-only.

    Must run as root of a user namespace that owns this mount and pid namespace.
    """
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)  # nothing propagates to the host
    sc.mount("tmpfs", new_root, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=1m,mode=0755")
    os.mkdir(f"{new_root}/usr", 0o755)
    for name in [*_SYSTEM_DIRS, *(f"usr/{sub}" for sub in _USR_SUBTREES)]:
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{new_root}/{name}")
        elif os.path.isdir(host):
            _bind(host, f"{new_root}/{name}", directory=True)
    os.mkdir(f"{new_root}/etc", 0o755)
    for name, text in _ETC_FILES.items():
        with open(f"{new_root}/etc/{name}", "w") as f:
            f.write(text)
    if os.path.exists("/etc/ld.so.cache"):
        _bind("/etc/ld.so.cache", f"{new_root}/etc/ld.so.cache", directory=False)
    if os.path.isdir("/etc/alternatives"):  # Debian's program symlinks (nodejs, cc, ...)
        _bind("/etc/alternatives", f"{new_root}/etc/alternatives", directory=True)
    os.mkdir(f"{new_root}/proc", 0o555)
    proc_flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    sc.mount("proc", f"{new_root}/proc", "proc", proc_flags, "subset=pid")
    _build_dev(f"{new_root}/dev")
    for mount_point in (WORK_DIR, "/tmp"):
        os.mkdir(f"{new_root}{mount_point}", 0o755)
    os.chdir(new_root)
    sc.pivot_root(".", ".")  # the old root is now stacked on top of the new one ...
    sc.umount2(".", sc.MNT_DETACH)  # ... and detaching it leaves only the new root
    os.chdir("/")
    sc.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV)


def _build_dev(dev: str) -> None:
    os.mkdir(dev, 0o755)
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "size=64k,mode=0755")
    for name in _DEVICES:
        open(f"{dev}/{name}", "w").close()
        # a bind of the host's node; tmpfs in a user namespace cannot hold device nodes
        sc.mount(f"/dev/{name}", f"{dev}/{name}", None, sc.MS_BIND)
        sc.mount(None, f"{dev}/{name}", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_NOSUID)
    # Not links into /proc/self/fd (a program run has no /proc): each run mounts its streams
    # on /dev/fd (sandboxes.stdio); a linked pair's runs find it empty.
    os.mkdir(f"{dev}/fd", 0o555)
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"fd/{number}", f"{dev}/{name}")
    os.mkdir(f"{dev}/shm", 0o1777)
    sc.mount(None, dev, None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NOEXEC)


def _bind(source: str, target: str, directory: bool) -> None:
    if directory:
        os.mkdir(target, 0o755)
    else:
        open(target, "w").close()
    sc.mount(source, target, None, sc.MS_BIND | sc.MS_REC)
    sc.mount(None, target, None, _RO_BIND)


def bring_up_loopback() -> None:
    """A new network namespace (the slot's) has only `lo`, and it starts down. Each run's
    own stays down (sandboxes.child)."""
    import fcntl
    import socket
    import struct

    siocsifflags, iff_up, iff_loopback, iff_running = 0x8914, 0x1, 0x8, 0x40
    request = struct.pack("16sH14s", b"lo", iff_up | iff_loopback | iff_running, b"")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), siocsifflags, request)
