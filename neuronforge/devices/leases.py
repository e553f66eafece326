"""Crash-safe leases of NeuronCores (or GPUs, or a CPU slot) for every process that runs a model.

The Neuron runtime reserves every NeuronCore of the host for the first process that initialises it, so two steps
running models at once fail with "NeuronCore(s) not available". `CoreAllocator.lease(n, holder=...)` gives a process a
contiguous range of cores and exports it as NEURON_RT_VISIBLE_CORES for as long as the lease is open. Leases are
`fcntl.flock` locks on one file per core in a shared directory, so they hold across processes and concurrent runs, and
the kernel drops them when a process dies (even by kill -9): no lease is ever stale.

On CUDA hosts the same allocator leases GPUs (CUDA_VISIBLE_DEVICES); on CPU hosts it hands out a slot that never
blocks, so callers have one code path.

Caveats, by design of the Neuron runtime and of flock:
- Lease before anything imports torch_neuronx / optimum.neuron in the process: the runtime reads the variable once.
  For the same reason run Neuron steps one per process (the multiprocess or k8s executor), not in-process.
- Every process of a host must share one local `lock_dir` (not NFS: flock is unreliable there). The default lives
  under NEURONFORGE_HOME; point `lock_dir` at e.g. /var/lock/neuronforge when several checkouts share a host.

The short-lived allocation lock is `neuronforge.locks.file_lock`. The per-core locks are raw descriptors: they stay
held for the whole lease, carry the holder record that others read, and are taken non-blocking, many at a time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neuronforge import paths
from neuronforge.devices.discovery import (
    CUDA_ENV,
    DEVICES,
    LEASE_MARKER_ENV,
    NEURON_ENV,
    CoreLeaseError,
    HostInventory,
    discover,
)
from neuronforge.devices.neuron_ls import contiguous_runs, cores_per_chip, format_core_ids, format_core_range
from neuronforge.locks import file_lock

logger = logging.getLogger(__name__)


class CoreRequestTooLarge(CoreLeaseError):
    """The request can never be met on this host, however long it waits."""


class CoreLeaseTimeout(CoreLeaseError, TimeoutError):
    """The request could be met, but other holders kept the cores past `wait_timeout_s`."""


def check_setting(name: str, value: Any) -> Any:
    """Validate one allocator setting (the resource's pydantic validators use the same rules and messages)."""
    if name == "device" and value not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {value!r}")
    if name == "total_cores" and value is not None and value < 1:
        raise ValueError(f"total_cores must be at least 1 (or unset to discover), got {value}")
    if name == "wait_timeout_s" and value < 0:
        raise ValueError(f"wait_timeout_s must be >= 0 (0: fail at once when busy), got {value}")
    if name == "poll_interval_s" and value <= 0:
        raise ValueError(f"poll_interval_s must be > 0, got {value}")
    return value


@dataclass(frozen=True)
class CoreLease:
    kind: str  # "neuron" | "cuda" | "cpu"
    first: int
    last: int
    count: int
    env: dict[str, str]  # set in os.environ while the lease is open
    wait_s: float
    host_total: int
    source: str = ""

    @property
    def cores(self) -> str:
        """The leased cores as the runtime sees them ("4-7", "0,1"), or "none (cpu)"."""
        if self.kind == "cpu":
            return "none (cpu)"
        return next(iter(self.env.values()), format_core_range(self.first, self.last))

    def metadata(self) -> dict[str, Any]:
        """Plain JSON values for `dg.MaterializeResult(metadata=...)`."""
        return {
            "cores_leased": self.cores,
            "core_count": self.count,
            "lease_wait_s": round(self.wait_s, 3),
            "host_total_cores": self.host_total,
            "device_kind": self.kind,
            "core_source": self.source,
        }


@dataclass
class _Held:
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


def _windows(free: Sequence[int], n: int, chip: int) -> list[tuple[int, ...]]:
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


@dataclass(frozen=True)
class CoreAllocator:
    """Discovers this host's devices and leases them; `NeuronResource` is this, configured from Dagster."""

    total_cores: int | None = None  # explicit NeuronCore count (tests, unusual hosts); selects neuron under "auto"
    lock_dir: str | Path | None = None  # default: <NEURONFORGE_HOME>/locks/neuron; shared by the host's processes
    wait_timeout_s: float = 3600.0
    poll_interval_s: float = 0.5
    device: str = "auto"  # "auto" | "neuron" | "cuda" | "cpu"
    instance_type: str | None = None  # e.g. "inf2.48xlarge"; default: read from DMI (no network); for validation

    def __post_init__(self) -> None:
        for name in ("device", "total_cores", "wait_timeout_s", "poll_interval_s"):
            check_setting(name, getattr(self, name))

    def discover(self) -> HostInventory:
        """The devices a lease would draw from now, and which discovery rule found them."""
        return discover(
            self.device,
            total_cores=self.total_cores,
            instance_type=self.instance_type,
            leased_pids=lambda: {rec["pid"] for rec in self.holders("neuron")},
        )

    @contextlib.contextmanager
    def lease(self, cores: int, *, holder: str, log: logging.Logger | None = None) -> Iterator[CoreLease]:
        """Hold `cores` contiguous cores (or GPUs, or a CPU slot) for the body; their variable is set in os.environ.

        Waits (polling every `poll_interval_s`, up to `wait_timeout_s`) while other holders have them, logging who
        holds what; fails at once when the host can never satisfy the request. On a host whose variable was preset
        by the environment, the lease is exactly the preset cores.
        """
        log = log or logger
        if cores < 1:
            raise ValueError(f"{holder} asked for {cores} cores; ask for at least 1")
        inv = self.discover()
        for warning in inv.warnings:
            log.warning("neuron discovery: %s", warning)

        if inv.kind == "cpu":
            # No-op slot: CPU work shares the host; the lease only gives assets one code path.
            yield CoreLease("cpu", 0, cores - 1, cores, {}, 0.0, inv.total, inv.source)
            return

        var = NEURON_ENV if inv.kind == "neuron" else CUDA_ENV
        if inv.preset:
            self._check_fits(inv, cores, len(inv.core_ids))
            if inv.source == "lease":
                # Cores leased by an enclosing lease (here or in a parent): reuse them, lock nothing.
                first, last = inv.core_ids[0], inv.core_ids[-1]
                env = {var: inv.env_value or ""}
                yield CoreLease(inv.kind, first, last, len(inv.core_ids), env, 0.0, inv.total, inv.source)
                return
            candidates = [inv.core_ids]
        else:
            longest = max((len(run) for run in contiguous_runs(inv.core_ids)), default=0)
            self._check_fits(inv, cores, longest)
            candidates = None

        held, wait_s = self._acquire(inv, cores, candidates, holder, log)
        try:
            chosen = sorted(held.fds)
            env = {var: self._env_value(inv, chosen, log)}
            lease = CoreLease(inv.kind, chosen[0], chosen[-1], len(chosen), env, wait_s, inv.total, inv.source)
            log.info(
                "%s leased %s %s (%d of %d, %s) after %.1f s",
                holder,
                inv.unit,
                lease.cores,
                lease.count,
                inv.total,
                inv.detail or inv.source,
                wait_s,
            )
            with _exported(env):
                yield lease
        finally:
            held.release()

    def _env_value(self, inv: HostInventory, chosen: list[int], log: logging.Logger) -> str:
        if inv.kind == "cuda":
            if inv.preset and inv.env_value:
                return inv.env_value
            return ",".join(str(i) for i in chosen)  # CUDA takes comma lists, not ranges
        if len(contiguous_runs(chosen)) == 1:
            return format_core_range(chosen[0], chosen[-1])
        log.warning(
            "%s=%s from the environment is not one contiguous range: optimum-neuron counts a comma list as one core",
            NEURON_ENV,
            inv.env_value,
        )
        return inv.env_value or format_core_ids(chosen)

    def _check_fits(self, inv: HostInventory, cores: int, most: int) -> None:
        if cores <= most:
            return
        where = f"source: {inv.detail or inv.source}" + (f"; instance {inv.instance_type}" if inv.instance_type else "")
        if inv.source == "lease":
            fix = f"an enclosing lease holds {most} for this process; request at most {most}, or lease more outside"
        elif inv.preset:
            fix = (
                f"the environment gave this process exactly these; request at most {most}, or ask the scheduler for "
                f"more (aws.amazon.com/neuroncore on EKS)"
            )
        elif most == 0:
            fix = "no core is free of the processes listed above: stop them, or wait for them to finish"
        elif most < inv.total:
            fix = f"the largest contiguous free range is {most}: request at most {most}, or stop the processes above"
        elif inv.source == "config":
            fix = f"request at most {most}, or raise NeuronResource.total_cores if the host really has more"
        else:
            fix = f"request at most {most} (e.g. the model's cores in models.yaml), or use a larger instance"
        raise CoreRequestTooLarge(
            f"{cores} {inv.unit} requested but this host can never provide them: {inv.total} available ({where}). "
            f"Fix: {fix}."
        )

    def _lock_root(self) -> Path:
        root = Path(self.lock_dir) if self.lock_dir else paths.subdir("locks", "neuron")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CoreLeaseError(
                f"cannot create the lease lock directory {root}: {exc}. Set NeuronResource.lock_dir to a writable "
                "local directory shared by every process of this host."
            ) from exc
        return root

    @contextlib.contextmanager
    def _alloc_lock(self) -> Iterator[Path]:
        """Host-wide lock held only while scanning and taking core locks, so no two requests interleave."""
        root = self._lock_root()
        with file_lock(root / "alloc.lock"):
            yield root

    def _acquire(
        self,
        inv: HostInventory,
        cores: int,
        candidates: list[tuple[int, ...]] | None,
        holder: str,
        log: logging.Logger,
    ) -> tuple[_Held, float]:
        started = time.monotonic()
        deadline = started + self.wait_timeout_s
        names = _lock_names(inv)
        chip = cores_per_chip(inv.instance_type)
        last_report = None
        while True:
            with self._alloc_lock() as root:
                held = _try_take(root, names, cores, candidates, chip)
                if held is not None:
                    waited = time.monotonic() - started
                    try:
                        _write_holder(held, inv.kind, holder, waited)
                    except BaseException:
                        held.release()
                        raise
                    return held, waited
                holders = _read_holders(root, inv.kind)
            now = time.monotonic()
            report = _describe_holders(holders) or "no neuronforge holders (cores taken between polls)"
            if now >= deadline:
                raise CoreLeaseTimeout(
                    f"{holder} timed out after {now - started:.1f} s waiting for {cores} {inv.unit} "
                    f"(host has {inv.total}, {inv.detail or inv.source}); held by: {report}. Fix: raise "
                    "NeuronResource.wait_timeout_s, or stop the holders above (their leases end with their process)."
                )
            if report != last_report:
                log.info("%s waits for %d %s; held by: %s", holder, cores, inv.unit, report)
                last_report = report
            time.sleep(max(0.0, min(self.poll_interval_s, deadline - now)))

    def holders(self, kind: str) -> list[dict[str, Any]]:
        """Current neuronforge lease holders of this lock directory, one record per held core."""
        with self._alloc_lock() as root:
            return _read_holders(root, kind)


def _lock_names(inv: HostInventory) -> dict[int, str]:
    """Lock file name per core id. A CUDA preset may list UUIDs, so lock the named devices, not the indices."""
    if inv.kind == "cuda" and inv.preset and inv.env_value:
        entries = [e.strip() for e in inv.env_value.split(",") if e.strip()]
        return {i: f"cuda-{re.sub(r'[^A-Za-z0-9_.-]', '_', entry)}.lock" for i, entry in enumerate(entries)}
    return {i: f"{inv.kind}-{i}.lock" for i in inv.core_ids}


def _try_take(
    root: Path,
    names: dict[int, str],
    cores: int,
    candidates: list[tuple[int, ...]] | None,
    chip: int,
) -> _Held | None:
    """Under the alloc lock: lock every free core, keep the best window, let the rest go. None when nothing fits.

    Should this process die half-way (even by kill -9), the kernel drops its flocks, the alloc lock included, so a
    partial acquisition can neither survive nor be observed.
    """
    probe = _Held()
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
            probe.fds[core] = fd
        free = sorted(probe.fds)
        windows = candidates if candidates is not None else _windows(free, cores, chip)
        chosen = next((w for w in windows if all(c in probe.fds for c in w)), None)
        if chosen is None:
            probe.release()
            return None
        held = _Held({c: probe.fds.pop(c) for c in chosen})
        probe.release()
        return held
    except BaseException:
        probe.release()
        raise


def _write_holder(held: _Held, kind: str, holder: str, waited: float) -> None:
    """Who holds the cores, for the wait and timeout messages of others (read only while the flock is held)."""
    record = {
        "pid": os.getpid(),
        "holder": holder,
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": format_core_ids(sorted(held.fds)),
        "kind": kind,
        "waited_s": round(waited, 3),
    }
    data = json.dumps(record).encode()
    for fd in held.fds.values():
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def _read_holders(root: Path, kind: str) -> list[dict[str, Any]]:
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


def _describe_holders(records: list[dict[str, Any]]) -> str:
    """One entry per lease: 'embeddings (pid 123 on host-a, cores 0-7, since 2025-01-01T12:00:01+00:00); ...'."""
    leases = {}
    for rec in records:
        key = (rec.get("pid"), rec.get("holder"), rec.get("cores"))
        leases[key] = rec
    parts = []
    for (pid, holder, cores), rec in sorted(leases.items(), key=lambda item: str(item[0])):
        since = str(rec.get("since", "?"))
        parts.append(f"{holder} (pid {pid} on {rec.get('host', '?')}, cores {cores}, since {since})")
    return "; ".join(parts)


@contextlib.contextmanager
def _exported(env: dict[str, str]) -> Iterator[None]:
    """Set `env` (and the lease marker) in os.environ for the body, then restore the previous values exactly."""
    full = dict(env)
    if env:
        var, value = next(iter(env.items()))
        full[LEASE_MARKER_ENV] = f"{var}={value}"
    saved = {key: os.environ.get(key) for key in full}
    os.environ.update(full)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
