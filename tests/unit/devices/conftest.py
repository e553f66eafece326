"""The bare host every device test starts from (see device_helpers.py for the fakes put on it)."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuronforge.devices import (
    CUDA_ENV,
    LEASE_MARKER_ENV,
    LNC_ENV,
    LOCK_DIR_ENV,
    NEURON_ENV,
    NUM_CORES_ENV,
    discovery,
    end_process_leases,
    lock_dir,
)


@pytest.fixture(autouse=True)
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """A bare host: empty PATH and /dev, no device variables, no DMI, no torch GPUs, a private default lock dir.

    A Neuron lease lasts until its process exits; this test process never starts a runtime, so each test gives back
    what it leased (end_process_leases) and the next one starts unbound."""
    bin_dir, dev_dir = tmp_path / "bin", tmp_path / "dev"
    bin_dir.mkdir()
    dev_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("NEURONFORGE_HOME", str(tmp_path / "home"))
    for var in (NEURON_ENV, CUDA_ENV, LEASE_MARKER_ENV, NUM_CORES_ENV, LNC_ENV, LOCK_DIR_ENV):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "run-lock").mkdir()
    monkeypatch.setattr(lock_dir, "_RUN_LOCK", tmp_path / "run-lock")
    monkeypatch.setattr(discovery, "_DEV_DIR", dev_dir)
    monkeypatch.setattr(discovery, "_DMI_PRODUCT_NAME", tmp_path / "no-dmi")
    monkeypatch.setattr(discovery, "_NEURON_LS_FALLBACK", tmp_path / "no-neuron-ls")
    monkeypatch.setattr(discovery, "_torch_cuda_count", lambda: None)
    end_process_leases()
    yield types.SimpleNamespace(bin=bin_dir, dev=dev_dir, locks=str(tmp_path / "locks"), tmp=tmp_path)
    end_process_leases()
