"""Fakes of a Neuron host for the device tests: neuron-ls on PATH, /dev/neuron* entries, lease holders in children.

The `host` fixture (conftest.py) first gives every test here a bare host: empty PATH and /dev, no device variables,
no DMI, no torch GPUs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import types
from pathlib import Path

from neuronforge.devices import NEURON_ENV
from resources.devices import NeuronResource

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "neuron"
WORKER = Path(__file__).resolve().parent / "neuron_lease_worker.py"
FORK = multiprocessing.get_context("fork")  # children inherit the imported modules: no 2 s dagster import each


def fake_neuron_ls(host: types.SimpleNamespace, *, modern: Path | None = None, legacy: Path | None = None) -> None:
    """Put a neuron-ls on PATH that prints `modern` for --output-format json and `legacy` for --json-output."""
    script = host.bin / "neuron-ls"
    script.write_text(
        f"#!{sys.executable} -S\n"
        "import sys\n"
        f"modern, legacy = {str(modern) if modern else None!r}, {str(legacy) if legacy else None!r}\n"
        "args = sys.argv[1:]\n"
        "if args == ['--output-format', 'json'] and modern:\n"
        "    print(open(modern).read()); sys.exit(0)\n"
        "if args == ['--json-output'] and legacy:\n"
        "    print(open(legacy).read()); sys.exit(0)\n"
        "print('neuron-ls: error: unrecognized arguments: ' + ' '.join(args), file=sys.stderr); sys.exit(2)\n"
    )
    script.chmod(0o755)


def fake_dev(host: types.SimpleNamespace, chips: int) -> None:
    for i in range(chips):
        (host.dev / f"neuron{i}").touch()


def wait_for(path: Path, proc: subprocess.Popen | None = None, limit_s: float = 60.0) -> dict:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)
    return json.loads(path.read_text())


def _hold(lock_dir: str, cores: int, ready: str, release: str) -> None:
    with NeuronResource(total_cores=24, lock_dir=lock_dir).lease(cores, holder="own-step") as lease:
        Path(ready).write_text(json.dumps({"pid": os.getpid(), "env": lease.env[NEURON_ENV]}))
        while not Path(release).exists():
            time.sleep(0.02)
