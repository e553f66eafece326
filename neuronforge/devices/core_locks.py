"""The per-core lock files of a lease: one flock'ed file per core in the host's lock directory, holding who has it.

The locks are raw descriptors, not `neuronforge.locks.file_lock`: they stay held for as long as the lease (up to the
holding process's exit), carry the holder record others read, and are taken non-blocking, many at a time, under the
short-lived host-wide allocation lock. The kernel drops them when the process dies, even by kill -9: no lease is ever
stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neuronforge.devices.discovery import HostInventory
from neuronforge.devices.neuron_ls import contiguous_runs, format_core_ids


@dataclass
class HeldCores:
    """Open, flock'ed lock files of one lease."""

    fds: dict[int, int] = field(default_factory=dict)  # core id → fd

    def release(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale holder info for the next reader
            with contextlib.suppress(OSError):
                # Explicit unlock: a forked child sharing the fd would otherwise keep the lock after we close it.
                fcntl.flock(fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def lock_names(inv: HostInventory) -> dict[int, str]:
    """Lock file name per core id. A CUDA preset may list UUIDs, so lock the named devices, not the indices."""
    if inv.kind == "cuda" and inv.preset and inv.env_value:
        entries = [e.strip() for e in inv.env_value.split(",") if e.strip()]
        return {i: f"cuda-{re.sub(r'[^A-Za-z0-9_.-]', '_', entry)}.lock" for i, entry in enumerate(entries)}
    return {i: f"{inv.kind}-{i}.lock" for i in inv.core_ids}


def windows(free: list[int], n: int, chip: int) -> list[tuple[int, ...]]:
    """Contiguous n-core windows in `free`, best first.

    Chip-aligned first (a 2-core lease gets one whole chip, whose cores share on-chip links), then best fit (the
    smallest free run that holds it, keeping large runs for large requests), then the lowest id.
    """
    scored = []
    for run in contiguous_runs(free):
        for offset in range(len(run) - n + 1):
            start = run[offset]
            misaligned = n > 1 and start % chip != 0
            scored.append(((misaligned, len(run) - n, start), run[offset : offset + n]))
    return [window for _, window in sorted(scored)]


def try_take(root: Path, names: dict[int, str], cores: int, up_to: int, chip: int) -> HeldCores | None:
    """Under the alloc lock: lock every free core, keep the largest window (`up_to` down to `cores`, in steps of
    `cores`) that fits, let the rest go. None when not even `cores` fit.

    Should this process die half-way (even by kill -9), the kernel drops its flocks, the alloc lock included, so a
    partial acquisition can neither survive nor be observed.
    """
    probe = HeldCores()
    try:
        for core, name in names.items():
            fd = os.open(root / name, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                continue
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)  # other users' steps share the host's cores, and so these files
            probe.fds[core] = fd
        free = sorted(probe.fds)
        chosen = None
        for size in range(up_to, cores - 1, -cores):
            found = windows(free, size, chip)
            if found:
                chosen = found[0]
                break
        if chosen is None:
            probe.release()
            return None
        held = HeldCores({c: probe.fds.pop(c) for c in chosen})
        probe.release()
        return held
    except BaseException:
        probe.release()
        raise


def write_holder(held: HeldCores, kind: str, holder: str, waited: float, until: str) -> None:
    """Who holds the cores, for the wait and timeout messages of others (read only while the flock is held)."""
    record = {
        "pid": os.getpid(),
        "holder": holder,
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": format_core_ids(sorted(held.fds)),
        "kind": kind,
        "waited_s": round(waited, 3),
        "until": until,
    }
    data = json.dumps(record).encode()
    for fd in held.fds.values():
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def read_holders(root: Path, kind: str) -> list[dict[str, Any]]:
    """Holder records of the cores whose flock is held right now (call under the alloc lock)."""
    records = []
    for path in sorted(root.glob(f"{kind}-*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                pass  # held: read who holds it
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)  # free: its content (if any) is history
                continue
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            record = json.loads(raw)
        except ValueError:
            record = {"holder": "?", "pid": 0, "cores": path.stem.removeprefix(f"{kind}-")}
        record.setdefault("pid", 0)
        records.append(record)
    return records


def describe_holders(records: list[dict[str, Any]]) -> str:
    """One entry per lease: 'embeddings (pid 123 on host-a, cores 0-7, since 2025-01-01T12:00:01+00:00, until its
    process exits); ...'."""
    leases = {}
    for rec in records:
        key = (rec.get("pid"), rec.get("holder"), rec.get("cores"))
        leases[key] = rec
    parts = []
    for (pid, holder, cores), rec in sorted(leases.items(), key=lambda item: str(item[0])):
        since = str(rec.get("since", "?"))
        until = f", until {rec['until']}" if rec.get("until") else ""
        parts.append(f"{holder} (pid {pid} on {rec.get('host', '?')}, cores {cores}, since {since}{until})")
    return "; ".join(parts)
