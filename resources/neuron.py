"""NeuronCore discovery and crash-safe core leases for every step that runs a model.

The Neuron runtime reserves every NeuronCore of the host for the first process that initialises it, so two Dagster
steps running models at once fail with "NeuronCore(s) not available". `NeuronResource.lease(n, holder=...)` gives a
step a contiguous range of cores and exports it as NEURON_RT_VISIBLE_CORES for as long as the step runs. Leases are
`fcntl.flock` locks on one file per core in a shared directory, so they hold across the multiprocess executor and across
concurrent runs, and the kernel drops them when a process dies (even by kill -9): no lease is ever stale.

On CUDA hosts the same resource leases GPUs (CUDA_VISIBLE_DEVICES); on CPU hosts it hands out a slot that never blocks,
so assets have one code path.

Caveats, by design of the Neuron runtime and of flock:
- Lease before anything imports torch_neuronx / optimum.neuron in the process: the runtime reads the variable once.
  For the same reason run Neuron steps one per process (the multiprocess or k8s executor), not in-process.
- Every process of a host must share one local `lock_dir` (not NFS: flock is unreliable there). The default lives
  under NEURONFORGE_HOME; point `lock_dir` at e.g. /var/lock/neuronforge when several checkouts share a host.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import field_validator

from neuronforge import paths

logger = logging.getLogger(__name__)

NEURON_ENV = "NEURON_RT_VISIBLE_CORES"
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
# Set beside the device variable while a lease is open. A nested lease (or a child process that inherited the
# environment) recognises its parent's cores by it instead of waiting forever on its parent's own locks.
LEASE_MARKER_ENV = "NEURONFORGE_LEASED"

DEVICES = ("auto", "neuron", "cuda", "cpu")

# NeuronCores per instance type, as the Neuron runtime numbers them. inf2 and trn1 chips carry 2 NeuronCore-v2 each;
# a trn2 chip has 8 physical NeuronCore-v3 that the runtime pairs into 4 logical cores at the default LNC=2 (the only
# setting optimum-neuron supports). Used to validate discovery and for reporting, never as a discovery rule.
INSTANCE_CORES: dict[str, int] = {
    "inf2.xlarge": 2,
    "inf2.8xlarge": 2,
    "inf2.24xlarge": 12,
    "inf2.48xlarge": 24,
    "trn1.2xlarge": 2,
    "trn1.32xlarge": 32,
    "trn1n.32xlarge": 32,
    "trn2.3xlarge": 4,
    "trn2.48xlarge": 64,
    "trn2u.48xlarge": 64,
}

# Looked up through the module so tests can point them at fakes.
_DEV_DIR = Path("/dev")
_DMI_PRODUCT_NAME = Path("/sys/devices/virtual/dmi/id/product_name")  # the instance type on EC2 Nitro hosts
_NEURON_LS_FALLBACK = Path("/opt/aws/neuron/bin/neuron-ls")  # DLAMIs install it here, not always on PATH
_NEURON_LS_TIMEOUT_S = 20.0
# Monitoring tools show up in neuron_processes (with --show-all-procs) but never hold cores.
_OBSERVER_COMMANDS = ("neuron-ls", "neuron-top", "neuron-monitor")

_UNITS = {"neuron": "NeuronCores", "cuda": "GPUs", "cpu": "CPU slots"}


class CoreLeaseError(RuntimeError):
    """Base class: cores cannot be discovered or leased."""


class NeuronDiscoveryError(CoreLeaseError):
    """The requested device kind is not present, or its configuration is unreadable."""


class CoreRequestTooLarge(CoreLeaseError):
    """The request can never be met on this host, however long it waits."""


class CoreLeaseTimeout(CoreLeaseError, TimeoutError):
    """The request could be met, but other holders kept the cores past `wait_timeout_s`."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers: core specs and neuron-ls output


def parse_core_spec(spec: str) -> tuple[int, ...]:
    """Core ids of a NEURON_RT_VISIBLE_CORES-style value: "3", "4-7", "0,1", "0-1,4-5" → sorted, unique ids."""
    ids: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"not a core id or range: {part!r} in {spec!r} (expected e.g. '3', '4-7' or '0,1')")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"descending core range {part!r} in {spec!r}")
        ids.update(range(first, last + 1))
    if not ids:
        raise ValueError(f"no core ids in {spec!r}")
    return tuple(sorted(ids))


def format_core_range(first: int, last: int) -> str:
    """NEURON_RT_VISIBLE_CORES value for a contiguous range: "3" for one core, "4-7" otherwise.

    Always a range, never a comma list: optimum-neuron's core counter reads "0,1" as one core.
    """
    return str(first) if first == last else f"{first}-{last}"


def format_core_ids(ids: Sequence[int]) -> str:
    """Human form of any set of core ids: "0-3,8,10-11"."""
    return ",".join(format_core_range(run[0], run[-1]) for run in contiguous_runs(ids))


def contiguous_runs(ids: Sequence[int]) -> list[tuple[int, ...]]:
    """Maximal runs of consecutive ids: [0, 1, 2, 5, 6] → [(0, 1, 2), (5, 6)]."""
    runs: list[list[int]] = []
    for core in sorted(set(ids)):
        if runs and core == runs[-1][-1] + 1:
            runs[-1].append(core)
        else:
            runs.append([core])
    return [tuple(run) for run in runs]


def cores_per_chip(instance_type: str | None) -> int:
    """NeuronCores the runtime exposes per /dev/neuronN device: 4 logical on trn2 (LNC=2), 2 on inf2/trn1."""
    return 4 if instance_type and instance_type.startswith("trn2") else 2


@dataclass(frozen=True)
class NeuronProcess:
    pid: int
    command: str
    core_ids: tuple[int, ...] = ()  # empty: neuron-ls did not say which cores, so assume the whole device


@dataclass(frozen=True)
class NeuronDevice:
    """One Neuron device (chip) as neuron-ls reports it."""

    index: int
    core_ids: tuple[int, ...]
    processes: tuple[NeuronProcess, ...] = ()
    bdf: str | None = None
    memory_bytes: int | None = None

    def busy_by(self) -> dict[int, tuple[int, ...]]:
        """pid → cores of this device it uses."""
        busy: dict[int, tuple[int, ...]] = {}
        for proc in self.processes:
            cores = tuple(c for c in proc.core_ids if c in self.core_ids) or self.core_ids
            busy[proc.pid] = tuple(sorted(set(busy.get(proc.pid, ()) + cores)))
        return busy


@dataclass(frozen=True)
class NeuronLsReport:
    devices: list[NeuronDevice]
    instance_type: str | None = None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


def _as_core_ids(value: Any) -> tuple[int, ...]:
    if isinstance(value, list):
        return tuple(sorted({i for i in (_as_int(v) for v in value) if i is not None}))
    if isinstance(value, int | str):
        try:
            return parse_core_spec(str(value))
        except ValueError:
            return ()
    return ()


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def _looks_like_device(item: Any) -> bool:
    return isinstance(item, dict) and any(
        k in item for k in ("nc_count", "neuroncore_ids", "neuron_device", "neuron_processes", "neuroncore_count")
    )


def _find_device_list(obj: Any, depth: int = 0) -> list[dict[str, Any]] | None:
    """The device list of either JSON shape: a bare list (--json-output) or a list under a key (--output-format json)."""
    if isinstance(obj, list):
        return obj if obj and all(_looks_like_device(item) for item in obj) else ([] if not obj else None)
    if not isinstance(obj, dict) or depth > 3:
        return None
    for key in ("neuron_devices", "devices", "neuron_device_info"):
        value = obj.get(key)
        if isinstance(value, list):
            return value
    for value in obj.values():
        found = _find_device_list(value, depth + 1)
        if found:
            return found
    return None


def _find_instance_type(obj: Any, depth: int = 0) -> str | None:
    if not isinstance(obj, dict) or depth > 3:
        return None
    for key in ("instance_type", "instance-type", "instanceType"):
        if isinstance(obj.get(key), str) and obj[key].strip():
            return obj[key].strip()
    instance = obj.get("instance")
    if isinstance(instance, dict) and isinstance(instance.get("type"), str):
        return instance["type"].strip()
    for value in obj.values():
        if isinstance(value, dict):
            found = _find_instance_type(value, depth + 1)
            if found:
                return found
    return None


def _parse_device(raw: dict[str, Any], position: int, default_lnc: int = 1) -> NeuronDevice:
    index = _as_int(_first(raw, "neuron_device", "device_id", "index", "id"))
    index = position if index is None else index
    core_ids = _as_core_ids(_first(raw, "neuroncore_ids", "neuron_core_ids", "core_ids"))
    if not core_ids:
        # Older neuron-ls lists only nc_count (physical cores); ids are device-major, per logical-core group.
        count = _as_int(_first(raw, "nc_count", "neuroncore_count", "core_count")) or 0
        lnc = _as_int(raw.get("logical_neuroncore_config")) or default_lnc
        per_device = count // lnc if lnc > 1 and count >= lnc else count
        core_ids = tuple(range(index * per_device, (index + 1) * per_device))
    processes = []
    for proc in _first(raw, "neuron_processes", "processes") or []:
        if not isinstance(proc, dict):
            continue
        pid = _as_int(proc.get("pid"))
        command = str(_first(proc, "command", "cmd", "name") or "")
        if pid is None or command.split(" ")[0].rsplit("/", 1)[-1] in _OBSERVER_COMMANDS:
            continue
        cores = _as_core_ids(_first(proc, "neuroncore_ids", "neuron_core_ids", "core_ids", "neuroncores", "cores"))
        processes.append(NeuronProcess(pid=pid, command=command, core_ids=cores))
    return NeuronDevice(
        index=index,
        core_ids=core_ids,
        processes=tuple(processes),
        bdf=raw.get("bdf") if isinstance(raw.get("bdf"), str) else None,
        memory_bytes=_as_int(raw.get("memory_size")),
    )


def parse_neuron_ls_report(text: str) -> NeuronLsReport:
    """Devices (and the instance type, when reported) from `neuron-ls --json-output` or `--output-format json`.

    Tolerant by design: the JSON may follow a text preamble, the devices may be a bare list or sit under
    "neuron_devices"/"devices", and per-device keys vary across SDK versions. Raises ValueError when no device list
    can be found at all.
    """
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if not starts:
        raise ValueError("neuron-ls printed no JSON")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[min(starts) :])
    except json.JSONDecodeError as exc:
        raise ValueError(f"neuron-ls printed invalid JSON: {exc}") from exc
    raw_devices = _find_device_list(obj)
    if raw_devices is None:
        raise ValueError("no device list in neuron-ls JSON (expected a list, or 'neuron_devices'/'devices')")
    # The newer format states the logical-core grouping (LNC) once for the host.
    lnc = (_as_int(obj.get("logical_neuroncore_config")) if isinstance(obj, dict) else None) or 1
    devices = [_parse_device(raw, pos, lnc) for pos, raw in enumerate(raw_devices) if isinstance(raw, dict)]
    return NeuronLsReport(devices=sorted(devices, key=lambda d: d.index), instance_type=_find_instance_type(obj))


def parse_neuron_ls(text: str) -> list[NeuronDevice]:
    """Devices from either neuron-ls JSON format (see `parse_neuron_ls_report`)."""
    return parse_neuron_ls_report(text).devices


# ---------------------------------------------------------------------------------------------------------------------
# Inventory and leases


@dataclass(frozen=True)
class HostInventory:
    """What a lease can draw from: the allocatable device ids of one kind and where they were found."""

    kind: str  # "neuron" | "cuda" | "cpu"
    total: int  # allocatable now: cores in use by processes outside neuronforge leases are not counted
    core_ids: tuple[int, ...]
    source: str  # the discovery rule that won: config, env, lease, neuron-ls ..., /dev/neuron*, nvidia-smi, torch, cpu
    instance_type: str | None = None
    preset: bool = False  # the device variable was set by the environment (EKS device plugin, parent lease)
    detail: str = ""  # one human line: how the count came about
    warnings: tuple[str, ...] = ()
    env_value: str | None = None  # the preset variable's value, as given

    @property
    def unit(self) -> str:
        return _UNITS[self.kind]


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


def _inherited(var: str) -> bool:
    """The variable was exported by an enclosing lease (this process or a parent), not by the environment."""
    value = os.environ.get(var)
    return value is not None and os.environ.get(LEASE_MARKER_ENV) == f"{var}={value}"


def _dmi_instance_type() -> str | None:
    try:
        name = _DMI_PRODUCT_NAME.read_text().strip()
    except OSError:
        return None
    return name if re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9]+", name) else None


def _neuron_ls_exe() -> str | None:
    found = shutil.which("neuron-ls")
    if found:
        return found
    return str(_NEURON_LS_FALLBACK) if _NEURON_LS_FALLBACK.exists() else None


def _run_tool(argv: list[str]) -> str | None:
    """stdout of a successful run, None when the tool is missing, fails or hangs."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_NEURON_LS_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _descends_from(pid: int, ancestors: set[int]) -> bool:
    """`pid` is one of `ancestors` or their descendant (Linux /proc; False where it cannot be read)."""
    for _ in range(64):
        if pid in ancestors:
            return True
        try:
            # Field 4 of /proc/<pid>/stat is the parent pid; the command name before it may hold spaces, so split
            # after its closing parenthesis.
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


def _dev_neuron_count() -> int:
    try:
        return sum(1 for entry in _DEV_DIR.iterdir() if re.fullmatch(r"neuron\d+", entry.name))
    except OSError:
        return 0


def _nvidia_smi_count() -> int | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    out = _run_tool([exe, "-L"])
    if out is None:
        return None
    return sum(1 for line in out.splitlines() if re.match(r"GPU \d+:", line.strip()))


def _torch_cuda_count() -> int | None:
    """GPU count from torch, only where it is cheap and plausible: importing torch costs seconds on a CPU host."""
    if not ((_DEV_DIR / "nvidiactl").exists() or "torch" in sys.modules):
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _table_warning(instance_type: str | None, found: int, what: str) -> tuple[str, ...]:
    expected = INSTANCE_CORES.get(instance_type or "")
    if expected is None or expected == found:
        return ()
    return (f"{what} gives {found} NeuronCores, but {instance_type} has {expected} (INSTANCE_CORES)",)


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


class NeuronResource(dg.ConfigurableResource):
    """Owns NeuronCore (or GPU) allocation for every step that runs a model.

    Discovery, first rule that finds cores wins:
    1. the cores of an enclosing lease (a nested lease, or a child process of a lease holder) are shared;
    2. `total_cores` from config;
    3. NEURON_RT_VISIBLE_CORES set by the environment (EKS Neuron device plugin): exactly those cores, nothing more;
    4. `neuron-ls --output-format json`, then `neuron-ls --json-output` (older SDKs), leaving out cores used by
       processes outside neuronforge leases;
    5. /dev/neuron* devices × cores per chip (2 on inf2/trn1, 4 logical on trn2).
    With device="auto" a host where none of these finds cores falls back to CUDA GPUs, then to a CPU slot.
    """

    total_cores: int | None = None  # explicit NeuronCore count (tests, unusual hosts); selects neuron under "auto"
    lock_dir: str | None = None  # default: <NEURONFORGE_HOME>/locks/neuron; must be shared by the host's processes
    wait_timeout_s: float = 3600.0
    poll_interval_s: float = 0.5
    device: str = "auto"  # "auto" | "neuron" | "cuda" | "cpu"
    instance_type: str | None = None  # e.g. "inf2.48xlarge"; default: read from DMI (no network); for validation

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {value!r}")
        return value

    @field_validator("total_cores")
    @classmethod
    def _positive_cores(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"total_cores must be at least 1 (or unset to discover), got {value}")
        return value

    @field_validator("wait_timeout_s")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"wait_timeout_s must be >= 0 (0: fail at once when busy), got {value}")
        return value

    @field_validator("poll_interval_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {value}")
        return value

    # -- discovery ---------------------------------------------------------------------------------------------------

    def discover(self) -> HostInventory:
        """The devices a lease would draw from now, and which discovery rule found them."""
        if self.device in ("auto", "neuron"):
            found = self._discover_neuron()
            if found is not None:
                return found
            if self.device == "neuron":
                raise NeuronDiscoveryError(
                    "device='neuron' but no NeuronCores were found: total_cores is unset, NEURON_RT_VISIBLE_CORES is "
                    "unset, neuron-ls is missing or lists no devices, and there is no /dev/neuron*. On a Neuron host "
                    "install aws-neuronx-tools and the driver; elsewhere use device='auto' or 'cpu', or set total_cores."
                )
        if self.device in ("auto", "cuda"):
            found = self._discover_cuda()
            if found is not None:
                return found
            if self.device == "cuda":
                raise NeuronDiscoveryError(
                    "device='cuda' but no GPU was found (nvidia-smi -L lists none and torch.cuda sees none). "
                    "Check the NVIDIA driver, or use device='auto' or 'cpu'."
                )
        count = os.cpu_count() or 1
        return HostInventory("cpu", count, tuple(range(count)), "cpu", detail=f"{count} CPUs; leases never wait")

    def _discover_neuron(self) -> HostInventory | None:
        instance_type = self.instance_type or _dmi_instance_type()
        preset = os.environ.get(NEURON_ENV, "").strip()
        # Cores of an enclosing lease come first, even before total_cores: the runtime of this process (or of the
        # parent that exported them) is bound to them, so a nested lease can only share them.
        inherited = bool(preset) and _inherited(NEURON_ENV)
        if self.total_cores is not None and not inherited:
            n = self.total_cores
            return HostInventory(
                "neuron",
                n,
                tuple(range(n)),
                "config",
                instance_type,
                detail=f"NeuronResource.total_cores={n}",
                warnings=_table_warning(instance_type, n, "total_cores"),
            )

        if preset:
            try:
                ids = parse_core_spec(preset)
            except ValueError as exc:
                raise NeuronDiscoveryError(
                    f"{NEURON_ENV}={preset!r} is set but unreadable ({exc}). Set it to a range like '0-3', or unset it."
                ) from exc
            origin = "an enclosing neuronforge lease" if inherited else "the environment (EKS device plugin?)"
            return HostInventory(
                "neuron",
                len(ids),
                ids,
                "lease" if inherited else "env",
                instance_type,
                preset=True,
                detail=f"{NEURON_ENV}={preset} set by {origin}",
                env_value=preset,
            )

        exe = _neuron_ls_exe()
        if exe:
            for flags in (["--output-format", "json"], ["--json-output"]):
                found = self._from_neuron_ls(exe, flags, instance_type)
                if found is not None:
                    return found

        chips = _dev_neuron_count()
        if chips:
            per_chip = cores_per_chip(instance_type)
            n = chips * per_chip
            return HostInventory(
                "neuron",
                n,
                tuple(range(n)),
                "/dev/neuron*",
                instance_type,
                detail=f"{chips} /dev/neuron* devices × {per_chip} cores per chip ({instance_type or 'inf2/trn1'})",
                warnings=_table_warning(instance_type, n, "/dev/neuron*"),
            )
        return None

    def _from_neuron_ls(self, exe: str, flags: list[str], instance_type: str | None) -> HostInventory | None:
        command = "neuron-ls " + " ".join(flags)
        out = _run_tool([exe, *flags])
        if out is None:
            return None
        try:
            report = parse_neuron_ls_report(out)
        except ValueError as exc:
            logger.debug("%s: %s", command, exc)
            return None
        if not report.devices:
            return None
        instance_type = instance_type or report.instance_type
        all_ids = sorted({c for dev in report.devices for c in dev.core_ids})
        # Our own lease holders (and the workers they spawn) show up in neuron_processes once their runtime starts:
        # their cores stay allocatable (the flocks arbitrate them); only processes outside our leases take cores away.
        holders = {rec["pid"] for rec in self._holders("neuron")}
        foreign: dict[int, set[int]] = {}
        commands: dict[int, str] = {}
        for dev in report.devices:
            for proc in dev.processes:
                commands[proc.pid] = proc.command
            for pid, cores in dev.busy_by().items():
                if not _descends_from(pid, holders):
                    foreign.setdefault(pid, set()).update(cores)
        busy = set().union(*foreign.values()) if foreign else set()
        free = tuple(c for c in all_ids if c not in busy)
        detail = f"{command}: {len(report.devices)} devices, {len(all_ids)} cores"
        if foreign:
            users = "; ".join(
                f"pid {pid} ({commands.get(pid) or '?'}) on cores {format_core_ids(sorted(cores))}"
                for pid, cores in sorted(foreign.items())
            )
            detail += f", {len(busy)} in use outside neuronforge leases: {users}"
        return HostInventory(
            "neuron",
            len(free),
            free,
            command,
            instance_type,
            detail=detail,
            warnings=_table_warning(instance_type, len(all_ids), command),
        )

    def _discover_cuda(self) -> HostInventory | None:
        physical = _nvidia_smi_count()
        source = "nvidia-smi"
        if physical is None:
            physical, source = _torch_cuda_count(), "torch.cuda"
        if not physical:
            return None
        # A CUDA_VISIBLE_DEVICES exported in a shell profile is common: only honour it where GPUs really exist.
        preset = os.environ.get(CUDA_ENV, "").strip()
        if preset and preset != "-1":
            entries = [e for e in preset.split(",") if e.strip()]
            inherited = _inherited(CUDA_ENV)
            return HostInventory(
                "cuda",
                len(entries),
                tuple(range(len(entries))),
                "lease" if inherited else "env",
                preset=True,
                detail=f"{CUDA_ENV}={preset} set by {'an enclosing lease' if inherited else 'the environment'}",
                env_value=preset,
            )
        return HostInventory("cuda", physical, tuple(range(physical)), source, detail=f"{source}: {physical} GPUs")

    # -- leases ------------------------------------------------------------------------------------------------------

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
        fd = os.open(root / "alloc.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield root
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

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

    def _holders(self, kind: str) -> list[dict[str, Any]]:
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
