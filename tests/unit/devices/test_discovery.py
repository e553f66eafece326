"""Discovery rules and their precedence: config, preset env, neuron-ls (both flags), /dev/neuron*, CUDA, CPU.

No Neuron hardware here: neuron-ls is a fake script on PATH printing the fixtures in tests/fixtures/neuron, and /dev is
a temporary folder.
"""

from __future__ import annotations

import json
import os
import types

import pytest
from device_helpers import FIXTURES, FORK, _hold, fake_dev, fake_neuron_ls, wait_for

from neuronforge.devices import (
    CUDA_ENV,
    NEURON_ENV,
    NeuronDiscoveryError,
    discovery,
)
from resources.devices import NeuronResource


def test_discovery_precedence(host: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """explicit total_cores > preset NEURON_RT_VISIBLE_CORES > neuron-ls (new, then legacy flag) > /dev/neuron*."""
    fake_neuron_ls(
        host, modern=FIXTURES / "inf2.24xlarge.output-format.json", legacy=FIXTURES / "inf2.48xlarge.json-output.json"
    )
    fake_dev(host, 3)
    monkeypatch.setenv(NEURON_ENV, "4-7")

    inv = NeuronResource(total_cores=24, lock_dir=host.locks).discover()
    assert (inv.kind, inv.total, inv.source, inv.preset) == ("neuron", 24, "config", False)

    inv = NeuronResource(lock_dir=host.locks).discover()
    assert (inv.kind, inv.core_ids, inv.source, inv.preset) == ("neuron", (4, 5, 6, 7), "env", True)

    monkeypatch.delenv(NEURON_ENV)
    inv = NeuronResource(lock_dir=host.locks).discover()
    assert (inv.source, inv.instance_type, inv.total) == ("neuron-ls --output-format json", "inf2.24xlarge", 11)
    assert 3 not in inv.core_ids and "pid 2222" in inv.detail

    fake_neuron_ls(host, legacy=FIXTURES / "inf2.48xlarge.json-output.json")  # an SDK without --output-format
    inv = NeuronResource(lock_dir=host.locks).discover()
    assert (inv.source, inv.total) == ("neuron-ls --json-output", 22)
    assert {10, 11}.isdisjoint(inv.core_ids)

    (host.bin / "neuron-ls").unlink()
    inv = NeuronResource(lock_dir=host.locks).discover()
    assert (inv.source, inv.total, inv.core_ids) == ("/dev/neuron*", 6, tuple(range(6)))
    inv = NeuronResource(lock_dir=host.locks, instance_type="trn2.48xlarge").discover()
    assert inv.total == 12  # 3 trn2 chips × 4 logical cores
    assert inv.warnings  # ...and a trn2.48xlarge should have had 64: reported, not trusted

    for chip in host.dev.iterdir():
        chip.unlink()
    inv = NeuronResource(lock_dir=host.locks).discover()
    assert (inv.kind, inv.source, inv.env_value) == ("cpu", "cpu", None)
    with pytest.raises(NeuronDiscoveryError, match="no NeuronCores were found"):
        NeuronResource(lock_dir=host.locks, device="neuron").discover()


def test_failing_or_empty_neuron_ls_falls_back(host: types.SimpleNamespace) -> None:
    fake_neuron_ls(host)  # rejects both flags, like a broken install
    fake_dev(host, 1)
    assert NeuronResource(lock_dir=host.locks).discover().source == "/dev/neuron*"

    empty = host.tmp / "empty.json"
    empty.write_text("[]")  # driver loaded, no device visible
    fake_neuron_ls(host, legacy=empty)
    assert NeuronResource(lock_dir=host.locks).discover().source == "/dev/neuron*"


def test_instance_table_validates_discovery(host: types.SimpleNamespace) -> None:
    fake_neuron_ls(host, legacy=FIXTURES / "trn1.2xlarge.json-output.json")
    inv = NeuronResource(lock_dir=host.locks, instance_type="trn1.2xlarge").discover()
    assert (inv.total, inv.warnings) == (2, ())
    inv = NeuronResource(lock_dir=host.locks, instance_type="inf2.48xlarge").discover()
    assert inv.warnings == ("neuron-ls --json-output gives 2 NeuronCores, but inf2.48xlarge has 24 (INSTANCE_CORES)",)


def test_cuda_host_leases_gpus(host: types.SimpleNamespace) -> None:
    smi = host.bin / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)'\necho 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)'\n"
    )
    smi.chmod(0o755)
    resource = NeuronResource(lock_dir=host.locks, wait_timeout_s=0)
    inv = resource.discover()
    assert (inv.kind, inv.total, inv.source) == ("cuda", 2, "nvidia-smi")
    with resource.lease(1, holder="a") as one:
        assert (one.kind, one.env, os.environ[CUDA_ENV]) == ("cuda", {CUDA_ENV: "0"}, "0")
    with resource.lease(2, holder="b") as two:
        assert two.env == {CUDA_ENV: "0,1"}  # CUDA takes comma lists
        with resource.lease(1, holder="nested") as nested:
            assert (nested.source, nested.env) == ("lease", {CUDA_ENV: "0,1"})
    assert CUDA_ENV not in os.environ
    # A CUDA_VISIBLE_DEVICES left in a shell profile means nothing on a host without GPUs.
    smi.unlink()
    os.environ[CUDA_ENV] = "0"
    try:
        assert resource.discover().kind == "cpu"
    finally:
        del os.environ[CUDA_ENV]


def test_neuron_ls_users_holding_our_leases_stay_allocatable(host: types.SimpleNamespace) -> None:
    """Our own leased steps appear in neuron-ls once their runtime starts: only outsiders shrink the host."""
    ready, release = host.tmp / "ready", host.tmp / "release"
    child = FORK.Process(target=_hold, args=(host.locks, 2, str(ready), str(release)))
    child.start()
    try:
        wait_for(ready)
        devices = json.loads((FIXTURES / "inf2.48xlarge.json-output.json").read_text())
        devices[0]["neuron_processes"] = [
            {"pid": child.pid, "command": "python -m dagster", "neuron_runtime_version": "2.x"}
        ]
        live = host.tmp / "live.json"
        live.write_text(json.dumps(devices))
        fake_neuron_ls(host, legacy=live)

        inv = NeuronResource(lock_dir=host.locks).discover()
        assert inv.total == 22 and {0, 1} <= set(inv.core_ids) and {10, 11}.isdisjoint(inv.core_ids)
        assert "pid 31337" in inv.detail and f"pid {child.pid}" not in inv.detail
        # Processes spawned by a lease holder (compiler workers, torch workers) are the holder's too.
        assert discovery._descends_from(os.getpid(), {os.getppid()})
        assert not discovery._descends_from(os.getppid(), {os.getpid()})
    finally:
        release.touch()
        child.join(30)
    assert child.exitcode == 0
