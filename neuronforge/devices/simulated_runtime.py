"""A stand-in for the Neuron runtime's core reservation, where it matters to leases: tests and the bench's simulated host.

What it copies from libnrt (Neuron runtime configuration guide, "NeuronCore allocation"):
- `init()` reserves the cores NEURON_RT_VISIBLE_CORES names (a range or a comma list); without it, NEURON_RT_NUM_CORES
  free cores; without either, every core of the host;
- the reservation lasts until the process exits. There is no release call: a process that initialised keeps its cores
  whatever its `with` blocks do, and a second `init()` in the same process returns the same cores;
- `init()` fails ("NeuronCore(s) not available") when any of those cores is held by another live process.
It knows nothing of neuronforge's leases: it keeps its own reservation table (one file per core naming its owner's
pid and start time, so a recycled pid does not inherit a dead owner's cores), which is what makes it a judge of them.
`execute()` stands in for running a compiled graph on the reserved cores: it sleeps `core_latency_s` per call.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from neuronforge.devices.discovery import NEURON_ENV, NUM_CORES_ENV
from neuronforge.devices.neuron_ls import format_core_ids, parse_core_spec
from neuronforge.locks import file_lock


class NeuronCoresUnavailable(RuntimeError):
    """What nrt_init reports when a requested core is reserved by another process."""


def process_identity(pid: int) -> str | None:
    """'<pid>:<start time>' of a live process (None when it is gone or a zombie): a pid alone can be recycled."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited: the driver has closed its device files already
        return None
    return f"{pid}:{fields[19]}"  # field 22 of /proc/<pid>/stat, counted after the command name


_INITIALISED: dict[Path, tuple[int, tuple[int, ...]]] = {}  # state dir → (pid, cores) of this process's runtime


@dataclass(frozen=True)
class SimulatedNeuronHost:
    """A host of `total_cores` NeuronCores whose reservations live in `state_dir` (shared by its processes)."""

    state_dir: Path
    total_cores: int
    core_latency_s: float = 0.0  # one execute() on the reserved cores

    def init(self) -> tuple[int, ...]:
        """Reserve this process's cores, as nrt_init does; idempotent within a process."""
        state = Path(self.state_dir)
        mine = _INITIALISED.get(state)
        if mine is not None and mine[0] == os.getpid():
            return mine[1]
        me = process_identity(os.getpid())
        state.mkdir(parents=True, exist_ok=True)
        with file_lock(state / "reservations.lock"):
            owners = self._owners(state)
            wanted = self._wanted(owners)
            taken = {core: owner for core, owner in owners.items() if core in wanted and owner != me}
            if taken:
                users = ", ".join(f"core {c} by pid {o.split(':')[0]}" for c, o in sorted(taken.items()))
                raise NeuronCoresUnavailable(
                    f"NeuronCore(s) not available: pid {os.getpid()} asked for {format_core_ids(wanted)} "
                    f"({NEURON_ENV}={os.environ.get(NEURON_ENV)!r}); held: {users}"
                )
            for core in wanted:
                (state / f"core-{core}").write_text(me or "")
            with open(state / "history.log", "a") as log:
                log.write(f"{me} {format_core_ids(wanted)} {time.monotonic():.6f}\n")
        _INITIALISED[state] = (os.getpid(), wanted)
        return wanted

    def execute(self) -> tuple[int, ...]:
        """Run one 'graph' on this process's cores (after init): sleeps core_latency_s; checks nobody else owns them."""
        mine = _INITIALISED.get(Path(self.state_dir))
        if mine is None or mine[0] != os.getpid():
            raise RuntimeError("execute() before init(): the runtime is not initialised in this process")
        me = process_identity(os.getpid())
        for core in mine[1]:
            owner = (Path(self.state_dir) / f"core-{core}").read_text()
            if owner != me:
                raise NeuronCoresUnavailable(f"core {core} of pid {os.getpid()} is now reserved by {owner}")
        if self.core_latency_s:
            time.sleep(self.core_latency_s)
        return mine[1]

    def live_owners(self) -> dict[int, int]:
        """Core → pid of the live process holding it."""
        return {core: int(owner.split(":")[0]) for core, owner in self._owners(Path(self.state_dir)).items()}

    def history(self) -> list[tuple[int, tuple[int, ...]]]:
        """Every successful init so far: (pid, cores)."""
        path = Path(self.state_dir) / "history.log"
        lines = path.read_text().splitlines() if path.is_file() else []
        return [(int(line.split(":")[0]), parse_core_spec(line.split()[1])) for line in lines]

    def _owners(self, state: Path) -> dict[int, str]:
        owners = {}
        for path in state.glob("core-*"):
            owner = path.read_text()
            if owner and process_identity(int(owner.split(":")[0])) == owner:
                owners[int(path.name.removeprefix("core-"))] = owner
        return owners

    def _wanted(self, owners: dict[int, str]) -> tuple[int, ...]:
        visible = os.environ.get(NEURON_ENV, "").strip()
        if visible:
            wanted = parse_core_spec(visible)
            beyond = [c for c in wanted if c >= self.total_cores]
            if beyond:
                raise NeuronCoresUnavailable(f"{NEURON_ENV}={visible}: this host has cores 0-{self.total_cores - 1}")
            return wanted
        every = tuple(range(self.total_cores))
        count = int(os.environ.get(NUM_CORES_ENV) or 0)
        if not count:
            return every
        free = [c for c in every if c not in owners]
        return tuple(free[:count]) if len(free) >= count else every[:count]


@dataclass(frozen=True)
class SimulatedShardEncoder:
    """A model replica on the simulated host, for data-parallel tests and the bench's simulated 24-core host: loading
    initialises the runtime on the worker's cores; each batch of `batch_size` chunks is one execute() (the host's
    per-core latency); vectors are a deterministic function of each chunk's text."""

    host: SimulatedNeuronHost
    batch_size: int = 8
    dimension: int = 8

    def load(self, threads: int):
        import hashlib

        import numpy as np

        from neuronforge.shards import dense_table

        self.host.init()

        def encode(chunks):
            for _ in range(0, len(chunks), self.batch_size):
                self.host.execute()
            digests = [hashlib.sha256(c.input_text.encode()).digest()[: self.dimension] for c in chunks]
            vectors = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(chunks), self.dimension)
            return dense_table(chunks, vectors.astype(np.float32) / 255.0)

        return encode
