"""Shard encoders for the data-parallel tests, importable by the spawned workers (this folder is on their sys.path)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from neuronforge.devices.simulated_runtime import SimulatedShardEncoder


@dataclass(frozen=True)
class CrashingOnce(SimulatedShardEncoder):
    """Kills its own worker (SIGKILL, no cleanup) the first time any worker reaches the shard holding `chunk_id`."""

    chunk_id: str = ""
    marker: str = ""

    def load(self, threads: int):
        encode = super().load(threads)

        def crash_once(chunks):
            if any(c.id == self.chunk_id for c in chunks) and not Path(self.marker).exists():
                Path(self.marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return encode(chunks)

        return crash_once


@dataclass(frozen=True)
class Failing(SimulatedShardEncoder):
    """Raises on every shard: a deterministic error, which no retry would fix."""

    def load(self, threads: int):
        def fail(chunks):
            raise ValueError(f"cannot encode {chunks[0].id}")

        return fail
