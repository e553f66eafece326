"""The one advisory file lock every part of neuronforge uses (hub writers, the hub starter, GGUF conversion, core leases).

`fcntl.flock` locks belong to an open file description: the kernel drops them when the process exits, even by kill -9,
so a lock can never outlive its holder. They do not work reliably on network filesystems (NFS, EFS): keep lock files
on a local disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class LockBusy(BlockingIOError):
    """A non-blocking `file_lock` found the lock held by another open file (another process, or another fd here)."""


@contextlib.contextmanager
def file_lock(path: Path | str, *, shared: bool = False, blocking: bool = True, mode: int = 0o666) -> Iterator[int]:
    """Hold a flock on `path` (created if missing) for the body and yield its file descriptor.

    `shared` takes a reader lock; `blocking=False` raises LockBusy at once instead of waiting. The lock is released
    explicitly (a forked child sharing the descriptor would otherwise keep it) and the file is left in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockBusy(exc.errno, f"{path} is locked by another holder") from None
            raise
        try:
            yield fd
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
