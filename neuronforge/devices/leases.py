"""Leases of NeuronCores (or GPUs, or a CPU slot) that last as long as the Neuron runtime holds them.

The Neuron runtime initialises and reserves every core it can see for the process that starts it, and gives them
back only when that process exits ("Once a NeuronCore is reserved for a process, it cannot be used by another process
at all, until the process reserving that NeuronCore is terminated": Neuron runtime configuration guide, NeuronCore
allocation). So a lease cannot end with a `with` block while the process goes on running (index build, metadata, the
rest of a step): a waiter would take the cores and its runtime would fail with "NeuronCore(s) not available".

`CoreAllocator.lease(n, holder=...)` therefore has two scopes:
- scope="process" (default): the Neuron runtime may start in this process. The cores are exported as
  NEURON_RT_VISIBLE_CORES for the body and stay leased until the process exits; later leases in the same process get
  the same cores again (the runtime cannot move or grow), a larger one fails with a clear error.
- scope="children": only child processes started and joined inside the body use the cores (the data-parallel
  encoder's workers, each given its own sub-range); the lease ends with the body, since their exits freed the cores.
CUDA leases end with the body in both scopes (a CUDA context reserves no GPU); a CPU lease is a slot that never
blocks, so callers have one code path.

Leases are flock locks on one file per core (`core_locks`) in a node-local directory (`lock_dir`). With cores preset
by the environment (the EKS Neuron device plugin sets NEURON_RT_VISIBLE_CORES per pod) nothing is locked: the lease is
exactly those cores. Inside a lease NEURON_RT_NUM_CORES is cleared: optimum-neuron counts min(visible, NUM_CORES)
(optimum/neuron/utils/system.py:92-113), so a stray NUM_CORES=1 would make a tp=2 load fail.

Lease before anything imports torch_neuronx / optimum.neuron in the process: the runtime reads the variable once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronforge.devices import core_locks
from neuronforge.devices.discovery import (
    CUDA_ENV,
    DEVICES,
    LEASE_MARKER_ENV,
    NEURON_ENV,
    NUM_CORES_ENV,
    CoreLeaseError,
    HostInventory,
    discover,
)
from neuronforge.devices.lock_dir import LockDirError, prepare_lock_dir
from neuronforge.devices.neuron_ls import contiguous_runs, cores_per_chip, format_core_range
from neuronforge.locks import file_lock

logger = logging.getLogger(__name__)

SCOPES = ("process", "children")
_UNTIL = {"process": "its process exits", "children": "its step's workers exit"}


class CoreRequestTooLarge(CoreLeaseError):
    """The request can never be met on this host (or in this process), however long it waits."""


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
    env: dict[str, str]  # set in os.environ while the lease's body runs
    wait_s: float
    host_total: int
    source: str = ""
    scope: str = "process"
    logical_nc_config: int | None = None

    @property
    def cores(self) -> str:
        """The leased cores as the runtime sees them ("4-7", "0,1"), or "none (cpu)"."""
        if self.kind == "cpu":
            return "none (cpu)"
        return next(iter(self.env.values()), format_core_range(self.first, self.last))

    @property
    def core_ids(self) -> tuple[int, ...]:
        return tuple(range(self.first, self.last + 1))

    @property
    def held_until(self) -> str:
        if self.kind == "cpu":
            return "not held (cpu)"
        if self.source == "env":
            return "not locked (preset by the environment)"
        if self.kind == "neuron" and self.scope == "process":
            return "process exit"
        return "end of block"

    def split(self, per_replica: int) -> list[dict[str, str]]:
        """The environments of child processes that each get `per_replica` cores of this lease (data-parallel
        replicas): their device variable, and the marker that makes a lease inside the child share those cores."""
        if self.kind == "cpu":
            return [{} for _ in range(self.count // per_replica)]
        var = NEURON_ENV if self.kind == "neuron" else CUDA_ENV
        entries = self.env[var].split(",") if self.kind == "cuda" else []
        envs = []
        for start in range(0, self.count - per_replica + 1, per_replica):
            if self.kind == "cuda":
                value = ",".join(entries[start : start + per_replica])
            else:
                value = format_core_range(self.first + start, self.first + start + per_replica - 1)
            envs.append({var: value, LEASE_MARKER_ENV: f"{var}={value}"})
        return envs

    def metadata(self) -> dict[str, Any]:
        """Plain JSON values for `dg.MaterializeResult(metadata=...)`."""
        meta = {
            "cores_leased": self.cores,
            "core_count": self.count,
            "lease_wait_s": round(self.wait_s, 3),
            "host_total_cores": self.host_total,
            "device_kind": self.kind,
            "core_source": self.source,
            "lease_held_until": self.held_until,
        }
        if self.logical_nc_config is not None:
            meta["logical_nc_config"] = self.logical_nc_config
        return meta


@dataclass
class _Binding:
    """The cores this process's Neuron runtime may hold: leased until the process exits."""

    pid: int
    held: core_locks.HeldCores
    first: int
    last: int
    env_value: str
    holder: str

    @property
    def count(self) -> int:
        return self.last - self.first + 1


_BINDINGS: dict[str, _Binding] = {}


def _binding(kind: str) -> _Binding | None:
    found = _BINDINGS.get(kind)
    # A forked child inherits the dict (and the descriptors) but not the parent's runtime: not its binding.
    return found if found is not None and found.pid == os.getpid() else None


def end_process_leases() -> None:
    """Give back the cores this process holds until exit. Only for a process whose Neuron runtime was never started
    or has been closed (tests; nrt_close): the runtime keeps its cores otherwise, whatever the locks say."""
    for kind in list(_BINDINGS):
        found = _BINDINGS.pop(kind)
        if found.pid == os.getpid():
            found.held.release()


@dataclass(frozen=True)
class CoreAllocator:
    """Discovers this host's devices and leases them; `NeuronResource` is this, configured from Dagster."""

    total_cores: int | None = None  # explicit NeuronCore count (tests, unusual hosts); selects neuron under "auto"
    lock_dir: str | Path | None = (
        None  # default: node-local (lock_dir.default_lock_dir); shared by the host's processes
    )
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
    def lease(
        self,
        cores: int,
        *,
        holder: str,
        log: logging.Logger | None = None,
        scope: str = "process",
        up_to: int | None = None,
    ) -> Iterator[CoreLease]:
        """Hold `cores` contiguous cores (or GPUs, or a CPU slot); their variable is set in os.environ for the body.

        `scope` says how long (see the module docstring): "process" until this process exits (Neuron), "children"
        for the body only, whose child processes must have exited when it ends. With `up_to`, take as many as are
        free at that moment, from `cores` to `up_to` in steps of `cores` (one data-parallel replica each).

        Waits (polling every `poll_interval_s`, up to `wait_timeout_s`) while other holders have the cores, logging
        who holds what; fails at once when the host (or this process's runtime) can never satisfy the request.
        """
        log = log or logger
        if cores < 1:
            raise ValueError(f"{holder} asked for {cores} cores; ask for at least 1")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if up_to is not None and up_to < cores:
            raise ValueError(f"{holder}: up_to={up_to} is below the {cores} cores asked for")
        up_to = (up_to or cores) // cores * cores
        inv = self.discover()
        for warning in inv.warnings:
            log.warning("neuron discovery: %s", warning)

        if inv.kind == "cpu":
            # No-op slot: CPU work shares the host; the lease only gives assets one code path.
            yield CoreLease("cpu", 0, cores - 1, cores, {}, 0.0, inv.total, inv.source, scope)
            return

        var = NEURON_ENV if inv.kind == "neuron" else CUDA_ENV
        lnc = inv.logical_nc_config
        if inv.source == "lease":
            # Cores leased by an enclosing lease (here or in a parent): reuse them, lock nothing.
            self._check_fits(inv, cores, len(inv.core_ids))
            first, last = inv.core_ids[0], inv.core_ids[-1]
            env = {var: inv.env_value or ""}
            yield CoreLease(inv.kind, first, last, len(inv.core_ids), env, 0.0, inv.total, inv.source, scope, lnc)
            return
        if inv.preset:
            ids = self._preset_cores(inv, cores, log)
            value = (inv.env_value or "") if inv.kind == "cuda" else format_core_range(ids[0], ids[-1])
            lease = CoreLease(inv.kind, ids[0], ids[-1], len(ids), {var: value}, 0.0, inv.total, "env", scope, lnc)
            log.info("%s uses %s %s preset by the environment (%s); no file locks", holder, inv.unit, value, inv.detail)
            with _exported(lease.env, inv.kind):
                yield lease
            return

        bound = _binding(inv.kind)
        if bound is not None and scope == "process":
            if cores > bound.count:
                raise CoreRequestTooLarge(
                    f"{holder} asked for {cores} {inv.unit}, but this process already holds {bound.env_value} "
                    f"(leased by {bound.holder}) until it exits: the Neuron runtime keeps the cores of the process "
                    f"that started it and cannot grow. Fix: run this step in its own process (the multiprocess "
                    f"executor does), or lease the larger count first."
                )
            env = {var: bound.env_value}
            lease = CoreLease(
                inv.kind, bound.first, bound.last, bound.count, env, 0.0, inv.total, "process", scope, lnc
            )
            log.info("%s reuses this process's %s %s (held since %s)", holder, inv.unit, bound.env_value, bound.holder)
            with _exported(env, inv.kind):
                yield lease
            return

        longest = max((len(run) for run in contiguous_runs(inv.core_ids)), default=0)
        self._check_fits(inv, cores, longest)
        held, wait_s = self._acquire(inv, cores, min(up_to, max(longest // cores * cores, cores)), holder, scope, log)
        keep = scope == "process" and inv.kind == "neuron"
        try:
            chosen = sorted(held.fds)
            value = ",".join(str(i) for i in chosen) if inv.kind == "cuda" else format_core_range(chosen[0], chosen[-1])
            lease = CoreLease(
                inv.kind, chosen[0], chosen[-1], len(chosen), {var: value}, wait_s, inv.total, inv.source, scope, lnc
            )
            log.info(
                "%s leased %s %s (%d of %d, %s) after %.1f s, until %s",
                holder,
                inv.unit,
                lease.cores,
                lease.count,
                inv.total,
                inv.detail or inv.source,
                wait_s,
                _UNTIL[scope] if keep or scope == "children" else "the end of its block",
            )
            with _exported(lease.env, inv.kind):
                yield lease
        finally:
            if keep:
                # The runtime may have started in the body: its cores are this process's until it exits.
                _BINDINGS[inv.kind] = _Binding(os.getpid(), held, chosen[0], chosen[-1], value, holder)
            else:
                held.release()

    def _preset_cores(self, inv: HostInventory, cores: int, log: logging.Logger) -> tuple[int, ...]:
        """Exactly the preset cores when they form one range; else the longest range of them (optimum-neuron counts
        a comma list as one core, and tensor-parallel ranks need neighbouring cores)."""
        if inv.kind == "cuda":
            self._check_fits(inv, cores, len(inv.core_ids))
            return inv.core_ids
        runs = contiguous_runs(inv.core_ids)
        best = max(runs, key=len)
        self._check_fits(inv, cores, len(best))
        if len(runs) > 1:
            log.warning(
                "%s=%s from the environment is not one contiguous range: using %s, its longest range. Ask the "
                "scheduler for contiguous cores (the Neuron scheduler extension on EKS).",
                NEURON_ENV,
                inv.env_value,
                format_core_range(best[0], best[-1]),
            )
        return best

    def _check_fits(self, inv: HostInventory, cores: int, most: int) -> None:
        if cores <= most:
            return
        where = f"source: {inv.detail or inv.source}" + (f"; instance {inv.instance_type}" if inv.instance_type else "")
        if inv.source == "lease":
            fix = f"an enclosing lease holds {most} for this process; request at most {most}, or lease more outside"
        elif inv.preset and most < len(inv.core_ids):
            fix = (
                f"the environment gave this process cores {inv.env_value}, whose longest contiguous range is {most}; "
                "ask the scheduler for contiguous cores (the Neuron scheduler extension on EKS)"
            )
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
        try:
            return prepare_lock_dir(self.lock_dir)
        except LockDirError as exc:
            raise CoreLeaseError(str(exc)) from exc

    @contextlib.contextmanager
    def _alloc_lock(self) -> Iterator[Path]:
        """Host-wide lock held only while scanning and taking core locks, so no two requests interleave."""
        root = self._lock_root()
        with file_lock(root / "alloc.lock"):
            yield root

    def _acquire(
        self, inv: HostInventory, cores: int, up_to: int, holder: str, scope: str, log: logging.Logger
    ) -> tuple[core_locks.HeldCores, float]:
        started = time.monotonic()
        deadline = started + self.wait_timeout_s
        names = core_locks.lock_names(inv)
        chip = cores_per_chip(inv.instance_type, inv.logical_nc_config)
        until = _UNTIL[scope] if inv.kind == "neuron" else "the end of its block"
        last_report = None
        while True:
            with self._alloc_lock() as root:
                held = core_locks.try_take(root, names, cores, up_to, chip)
                if held is not None:
                    waited = time.monotonic() - started
                    try:
                        core_locks.write_holder(held, inv.kind, holder, waited, until)
                    except BaseException:
                        held.release()
                        raise
                    return held, waited
                holders = core_locks.read_holders(root, inv.kind)
            now = time.monotonic()
            report = core_locks.describe_holders(holders) or "no neuronforge holders (cores taken between polls)"
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
            return core_locks.read_holders(root, kind)


@contextlib.contextmanager
def _exported(env: dict[str, str], kind: str) -> Iterator[None]:
    """Set `env` (and the lease marker) in os.environ for the body, clear NEURON_RT_NUM_CORES on Neuron, then restore
    the previous values exactly."""
    full: dict[str, str | None] = dict(env)
    if env:
        var, value = next(iter(env.items()))
        full[LEASE_MARKER_ENV] = f"{var}={value}"
    if kind == "neuron":
        if os.environ.get(NUM_CORES_ENV):
            logger.info(
                "%s=%s cleared inside the lease (%s decides)", NUM_CORES_ENV, os.environ[NUM_CORES_ENV], NEURON_ENV
            )
        full[NUM_CORES_ENV] = None
    saved = {key: os.environ.get(key) for key in full}
    for key, value in full.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
