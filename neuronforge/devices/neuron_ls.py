"""neuron-ls output and NeuronCore id sets: parsing and formatting, no I/O.

`neuron-ls` prints its device table as JSON in two shapes: `--json-output` (older SDKs: a bare list of devices) and
`--output-format json` (newer: devices under a key, with the instance type and the logical-core grouping). Both are
read here, tolerantly, into `NeuronDevice`s with the processes that use them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Monitoring tools show up in neuron_processes (with --show-all-procs) but never hold cores.
_OBSERVER_COMMANDS = ("neuron-ls", "neuron-top", "neuron-monitor")


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


def cores_per_chip(instance_type: str | None, logical_nc_config: int | None = None) -> int:
    """NeuronCores the runtime exposes per /dev/neuronN device: 2 on inf2/trn1 (LNC is always 1 there); on trn2 its 8
    physical cores grouped by NEURON_LOGICAL_NC_CONFIG: 4 logical cores at the default LNC=2, 8 at LNC=1."""
    if instance_type and instance_type.startswith("trn2"):
        return 8 // (logical_nc_config or 2)
    return 2


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
