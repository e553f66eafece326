"""Where the per-core lease locks live: a node-local directory every process of the host shares.

The locks arbitrate NeuronCores of one host, so they must be shared by exactly that host's processes: not by pods on
other nodes (a data directory on a shared volume would make pods given the same core ids block each other), and not
on a network filesystem, where flock is emulated or unreliable. Default: NEURONFORGE_LOCK_DIR, else
/run/lock/neuronforge (tmpfs on systemd hosts, cleared at boot like the cores themselves), else /tmp/neuronforge-locks.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LOCK_DIR_ENV = "NEURONFORGE_LOCK_DIR"

# Looked up through the module so tests can point them at fakes.
_RUN_LOCK = Path("/run/lock")
_TMP = Path("/tmp")
_MOUNTINFO = Path("/proc/self/mountinfo")

# Filesystems whose flock does not arbitrate between this host's processes reliably (or at all across clients).
# fuse in general is not listed: fuse-overlayfs (rootless containers) is local.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.mountpoint-s3",
        "fuse.juicefs",
        "fuse.glusterfs",
        "fuse.cephfs",
    }
)


class LockDirError(RuntimeError):
    """The lease lock directory cannot be used (not creatable, or on a network filesystem)."""


def default_lock_dir() -> Path:
    """NEURONFORGE_LOCK_DIR, else /run/lock/neuronforge where /run/lock is writable, else /tmp/neuronforge-locks."""
    configured = os.environ.get(LOCK_DIR_ENV, "").strip()
    if configured:
        return Path(configured)
    if _RUN_LOCK.is_dir() and os.access(_RUN_LOCK, os.W_OK | os.X_OK):
        return _RUN_LOCK / "neuronforge"
    return _TMP / "neuronforge-locks"


def filesystem_of(path: Path) -> tuple[str, str] | None:
    """(fstype, mount point) of the mount holding `path`, from /proc/self/mountinfo; None where it is unreadable."""
    try:
        lines = _MOUNTINFO.read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best: tuple[str, str] | None = None
    for line in lines:
        # "<id> <parent> <maj:min> <root> <mount point> <options> [optional fields...] - <fstype> <source> <opts>"
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or not rest:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) >= len(best[1])):
            best = (rest[0], mount_point)
    return best


def prepare_lock_dir(configured: str | Path | None) -> Path:
    """The lock directory to use, created (shared by every user of the host when it is the default) and checked."""
    root = Path(configured) if configured else default_lock_dir()
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LockDirError(
            f"cannot create the lease lock directory {root}: {exc}. Set NeuronResource.lock_dir (or "
            f"{LOCK_DIR_ENV}) to a writable node-local directory shared by every process of this host."
        ) from exc
    if created and not configured:
        # Like /tmp: every user's steps take locks here, none can remove another's.
        with contextlib.suppress(OSError):
            os.chmod(root, 0o1777)
    found = filesystem_of(root)
    if found is not None and found[0] in NETWORK_FILESYSTEMS:
        fstype, mount_point = found
        raise LockDirError(
            f"the lease lock directory {root} is on a network filesystem ({fstype} mounted at {mount_point}): flock "
            "there does not reliably keep two processes off the same NeuronCores, and pods on other nodes would "
            f"share it. Set NeuronResource.lock_dir (or {LOCK_DIR_ENV}) to a node-local directory, e.g. "
            "/run/lock/neuronforge."
        )
    return root
