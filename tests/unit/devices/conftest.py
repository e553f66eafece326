"""The bare host every device test starts from (see device_helpers.py for the fakes put on it)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from neuronforge.devices import CUDA_ENV, LEASE_MARKER_ENV, NEURON_ENV, discovery


@pytest.fixture(autouse=True)
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A bare host: empty PATH and /dev, no device variables, no DMI, no torch GPUs."""
    bin_dir, dev_dir = tmp_path / "bin", tmp_path / "dev"
    bin_dir.mkdir()
    dev_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("NEURONFORGE_HOME", str(tmp_path / "home"))
    for var in (NEURON_ENV, CUDA_ENV, LEASE_MARKER_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(discovery, "_DEV_DIR", dev_dir)
    monkeypatch.setattr(discovery, "_DMI_PRODUCT_NAME", tmp_path / "no-dmi")
    monkeypatch.setattr(discovery, "_NEURON_LS_FALLBACK", tmp_path / "no-neuron-ls")
    monkeypatch.setattr(discovery, "_torch_cuda_count", lambda: None)
    return types.SimpleNamespace(bin=bin_dir, dev=dev_dir, locks=str(tmp_path / "locks"), tmp=tmp_path)
