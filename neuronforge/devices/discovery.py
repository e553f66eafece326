"""Which devices a lease can draw from on this host, and which rule found them.

First rule that finds cores wins:
1. the cores of an enclosing lease (a nested lease, or a child process of a lease holder) are shared;
2. an explicit core count from config (`total_cores`);
3. NEURON_RT_VISIBLE_CORES set by the environment (EKS Neuron device plugin): exactly those cores, nothing more;
4. `neuron-ls --output-format json`, then `neuron-ls --json-output` (older SDKs), leaving out cores used by
   processes outside neuronforge leases;
5. /dev/neuron* devices × cores per chip (2 on inf2/trn1; on trn2 8 // NEURON_LOGICAL_NC_CONFIG, 4 at the default).
With device="auto" a host where none of these finds cores falls back to CUDA GPUs (nvidia-smi, then torch), then to a
CPU slot.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from neuronforge.devices.neuron_ls import cores_per_chip, format_core_ids, parse_core_spec, parse_neuron_ls_report

logger = logging.getLogger(__name__)

NEURON_ENV = "NEURON_RT_VISIBLE_CORES"
# Caps the runtime's (and optimum-neuron's) core count below NEURON_RT_VISIBLE_CORES
# (optimum/neuron/utils/system.py:102-113 takes min(visible, NUM_CORES)): a lease clears it inside its body.
NUM_CORES_ENV = "NEURON_RT_NUM_CORES"
# trn2: how many physical NeuronCore-v3 the runtime groups into one logical core (1 or 2; 2 by default there).
LNC_ENV = "NEURON_LOGICAL_NC_CONFIG"
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

_UNITS = {"neuron": "NeuronCores", "cuda": "GPUs", "cpu": "CPU slots"}


class CoreLeaseError(RuntimeError):
    """Base class: cores cannot be discovered or leased."""


class NeuronDiscoveryError(CoreLeaseError):
    """The requested device kind is not present, or its configuration is unreadable."""


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
    logical_nc_config: int | None = None  # NEURON_LOGICAL_NC_CONFIG when set (trn2 core grouping)

    @property
    def unit(self) -> str:
        return _UNITS[self.kind]


def discover(
    device: str = "auto",
    *,
    total_cores: int | None = None,
    instance_type: str | None = None,
    leased_pids: Callable[[], Iterable[int]] = tuple,
) -> HostInventory:
    """The devices a lease would draw from now, and which discovery rule found them.

    `leased_pids` names the processes holding neuronforge leases right now (asked only when neuron-ls lists users):
    their cores stay allocatable, since the lease locks arbitrate them.
    """
    if device in ("auto", "neuron"):
        found = _discover_neuron(total_cores, instance_type, leased_pids)
        if found is not None:
            return found
        if device == "neuron":
            raise NeuronDiscoveryError(
                "device='neuron' but no NeuronCores were found: total_cores is unset, NEURON_RT_VISIBLE_CORES is "
                "unset, neuron-ls is missing or lists no devices, and there is no /dev/neuron*. On a Neuron host "
                "install aws-neuronx-tools and the driver; elsewhere use device='auto' or 'cpu', or set total_cores."
            )
    if device in ("auto", "cuda"):
        found = _discover_cuda()
        if found is not None:
            return found
        if device == "cuda":
            raise NeuronDiscoveryError(
                "device='cuda' but no GPU was found (nvidia-smi -L lists none and torch.cuda sees none). "
                "Check the NVIDIA driver, or use device='auto' or 'cpu'."
            )
    count = os.cpu_count() or 1
    return HostInventory("cpu", count, tuple(range(count)), "cpu", detail=f"{count} CPUs; leases never wait")


def logical_nc_config(instance_type: str | None = None) -> int | None:
    """NEURON_LOGICAL_NC_CONFIG as an int (None when unset); refuses values the runtime would refuse.

    The runtime groups LNC physical cores into one logical core on trn2 (1 or 2; 2 is the default there) and supports
    only LNC=1 on inf2/trn1 (compiler error NCC_EARG001), so core counts and ids depend on it.
    """
    raw = os.environ.get(LNC_ENV, "").strip()
    if not raw:
        return None
    if raw not in ("1", "2"):
        raise NeuronDiscoveryError(
            f"{LNC_ENV}={raw!r} is not a logical NeuronCore setting: use 1 or 2 (trn2), or unset it"
        )
    lnc = int(raw)
    if lnc == 2 and instance_type and not instance_type.startswith("trn2"):
        raise NeuronDiscoveryError(
            f"{LNC_ENV}=2 is set but {instance_type} supports only LNC=1 (one physical core per logical core): "
            f"unset {LNC_ENV} on inf2/trn1 hosts"
        )
    return lnc


def neuron_device_count() -> int:
    """Neuron devices visible here: every /dev/neuron<N> (a pod may be given /dev/neuron3 alone, not neuron0)."""
    return _dev_neuron_count()


def _discover_neuron(
    total_cores: int | None, instance_type: str | None, leased_pids: Callable[[], Iterable[int]]
) -> HostInventory | None:
    found = _discover_neuron_cores(total_cores, instance_type, leased_pids)
    if found is None:
        return None
    lnc = logical_nc_config(found.instance_type)
    if lnc is None:
        return found
    return dataclasses.replace(found, logical_nc_config=lnc, detail=f"{found.detail}; {LNC_ENV}={lnc}")


def _discover_neuron_cores(
    total_cores: int | None, instance_type: str | None, leased_pids: Callable[[], Iterable[int]]
) -> HostInventory | None:
    instance_type = instance_type or _dmi_instance_type()
    preset = os.environ.get(NEURON_ENV, "").strip()
    # Cores of an enclosing lease come first, even before total_cores: the runtime of this process (or of the
    # parent that exported them) is bound to them, so a nested lease can only share them.
    inherited = bool(preset) and _inherited(NEURON_ENV)
    if total_cores is not None and not inherited:
        n = total_cores
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
            found = _from_neuron_ls(exe, flags, instance_type, leased_pids)
            if found is not None:
                return found

    chips = _dev_neuron_count()
    if chips:
        per_chip = cores_per_chip(instance_type, logical_nc_config(instance_type))
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


def _from_neuron_ls(
    exe: str, flags: list[str], instance_type: str | None, leased_pids: Callable[[], Iterable[int]]
) -> HostInventory | None:
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
    holders = set(leased_pids())
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


def _discover_cuda() -> HostInventory | None:
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
