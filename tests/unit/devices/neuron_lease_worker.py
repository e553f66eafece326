"""Holds a NeuronResource lease in a fresh interpreter until killed: the crash-safety test SIGKILLs it mid-lease.

usage: python neuron_lease_worker.py LOCK_DIR CORES HOLDER READY_FILE
Writes READY_FILE (the lease metadata, its pid and the exported variable) once the lease is held.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from neuronforge.devices import NEURON_ENV  # noqa: E402
from resources.devices import NeuronResource  # noqa: E402


def main() -> None:
    lock_dir, cores, holder, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    resource = NeuronResource(total_cores=24, lock_dir=lock_dir, wait_timeout_s=60, poll_interval_s=0.05)
    with resource.lease(cores, holder=holder) as lease:
        info = {"pid": os.getpid(), "env": os.environ.get(NEURON_ENV), **lease.metadata()}
        tmp = ready.with_name(ready.name + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(ready)  # atomic: the test never reads half a file
        time.sleep(300)  # bounded, so a test that dies before killing us leaves no immortal worker


if __name__ == "__main__":
    main()
