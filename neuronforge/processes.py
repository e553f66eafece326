"""Is a process that recorded its pid at some moment still that process?

A pid alone is not enough: after an exit the kernel hands the number to the next process, so "a process with pid N
exists" can be a stranger. Linux says when a process started (/proc/<pid>/stat field 22, clock ticks after boot,
boot time from /proc/stat `btime`); a process that started after the moment its pid was recorded is another one.
A zombie (exited, not yet reaped by its parent) is gone too: it runs nothing and holds no locks.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
# btime is whole seconds and ticks are 10 ms: a process is the recorder unless it started this much after the record.
START_SLACK_S = 2.0


def _boot_time() -> float | None:
    try:
        for line in (_PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def process_start_time(pid: int) -> float | None:
    """The epoch time process `pid` started, or None where /proc cannot say (gone, or not Linux)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    boot = _boot_time()
    if boot is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_state(pid: int, *, recorded_at: float | None = None) -> str:
    """'alive', 'gone', 'zombie', or 'reused' (a process with that pid started after `recorded_at`, an epoch time at
    which the pid was known to be the one we mean)."""
    if pid <= 0:
        return "gone"
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return "gone"
    except OSError:
        stat = ""
    if not stat:
        return _signal_probe(pid)  # no /proc (macOS) or unreadable: existence is all we can learn
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return "zombie"
    if recorded_at is not None:
        started = process_start_time(pid)
        if started is not None and started > recorded_at + START_SLACK_S:
            return "reused"
    return "alive"


def process_alive(pid: int, *, recorded_at: float | None = None) -> bool:
    return process_state(pid, recorded_at=recorded_at) == "alive"


def _signal_probe(pid: int) -> str:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "alive"  # exists, owned by another user
    return "alive"
