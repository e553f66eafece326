"""Leases judged by a runtime that behaves like Neuron's: a process that initialises keeps its cores until it exits.

`SimulatedNeuronHost` keeps its own reservation table (it knows nothing of the lease locks) and fails an init whose
cores another live process holds, exactly as libnrt's "NeuronCore(s) not available". The holders are real processes
(forked) that go on using the runtime after their `with` block, as steps do (index build, metadata, the rest of a
chat evaluation).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import types
from pathlib import Path

import pytest
from device_helpers import FORK, fake_dev, wait_for

from neuronforge.devices import (
    LEASE_MARKER_ENV,
    LNC_ENV,
    NEURON_ENV,
    CoreRequestTooLarge,
    NeuronDiscoveryError,
    discovery,
    end_process_leases,
    logical_nc_config,
    neuron_device_count,
)
from neuronforge.devices.simulated_runtime import NeuronCoresUnavailable, SimulatedNeuronHost
from resources.devices import NeuronResource


def _step(lock_dir: str, state: str, cores: int, second: int, out: str, scope: str = "process") -> None:
    """A model step: lease, start the runtime, run; then keep using it after the block; maybe lease again."""
    resource = NeuronResource(total_cores=24, lock_dir=lock_dir, wait_timeout_s=120, poll_interval_s=0.01)
    runtime = SimulatedNeuronHost(Path(state), 24, core_latency_s=0.01)
    record: dict = {"pid": os.getpid()}
    try:
        with resource.lease(cores, holder=f"step-{cores}", scope=scope) as lease:
            record["leased"] = lease.cores
            assert runtime.init() == lease.core_ids
            for _ in range(5):
                runtime.execute()
        Path(out + ".block-ended").touch()
        for _ in range(15):  # still working: the runtime keeps its cores whatever the `with` said
            runtime.execute()
        if second:
            # A later model in the same process (retrieval eval loads two) gets the same cores again.
            with resource.lease(second, holder=f"again-{second}") as again:
                record["again"] = again.cores
                assert (again.core_ids, again.source) == (lease.core_ids, "process")
                runtime.execute()
        record["ok"] = True
    except NeuronCoresUnavailable as exc:
        record["error"] = str(exc)
    Path(out).write_text(json.dumps(record))


def test_processes_that_keep_working_after_their_block_never_double_book_a_core(host: types.SimpleNamespace) -> None:
    state = host.tmp / "runtime"
    # 10 steps asking for 54 cores of a 24-core host: most wait, and each works on after its `with` block.
    requests = [(1, 0), (2, 1), (4, 2), (8, 1), (12, 4), (2, 2), (1, 1), (8, 0), (4, 4), (12, 12)]
    steps = []
    for i, (cores, second) in enumerate(requests):
        out = host.tmp / f"step-{i}.json"
        proc = FORK.Process(target=_step, args=(host.locks, str(state), cores, second, str(out)))
        proc.start()
        steps.append((proc, out))
    for proc, _ in steps:
        proc.join(180)
    assert [proc.exitcode for proc, _ in steps] == [0] * len(steps)
    records = [json.loads(out.read_text()) for _, out in steps]
    assert [r.get("error") for r in records] == [None] * len(steps)  # no runtime ever found its cores taken
    assert all(r["ok"] for r in records)
    # Every init of the runtime happened, each on the cores its lease named.
    history = SimulatedNeuronHost(state, 24).history()
    assert sorted(pid for pid, _ in history) == sorted(r["pid"] for r in records)
    assert sorted(len(cores) for _, cores in history) == sorted(c for c, _ in requests)


def test_the_simulated_runtime_catches_a_lease_that_ends_with_its_block(host: types.SimpleNamespace) -> None:
    """The judge has teeth: with leases that end at the block (scope="children", the old behaviour) while the runtime
    runs in the same process, the next step's runtime finds its cores taken."""
    state, first, second = host.tmp / "runtime", host.tmp / "first.json", host.tmp / "second.json"
    early = FORK.Process(target=_step, args=(host.locks, str(state), 24, 0, str(first), "children"))
    early.start()
    deadline = time.monotonic() + 60
    while not Path(str(first) + ".block-ended").exists():
        assert time.monotonic() < deadline and early.is_alive()
        time.sleep(0.01)
    late = FORK.Process(target=_step, args=(host.locks, str(state), 2, 0, str(second), "children"))
    late.start()
    late.join(60)
    early.join(60)
    assert "NeuronCore(s) not available" in json.loads(second.read_text())["error"]
    assert json.loads(first.read_text())["ok"]


def test_a_process_keeps_its_cores_and_cannot_grow(host: types.SimpleNamespace) -> None:
    resource = NeuronResource(total_cores=24, lock_dir=host.locks, wait_timeout_s=0)
    with resource.lease(4, holder="embeddings") as lease:
        assert lease.metadata()["lease_held_until"] == "process exit"
    assert NEURON_ENV not in os.environ and LEASE_MARKER_ENV not in os.environ
    # Still held: another process can take the other 20, not these 4.
    ready, release = host.tmp / "ready", host.tmp / "release"
    from device_helpers import _hold

    other = FORK.Process(target=_hold, args=(host.locks, 20, str(ready), str(release)))
    other.start()
    try:
        assert wait_for(ready)["env"] == "4-23"
    finally:
        release.touch()
        other.join(30)
    with resource.lease(2, holder="parity") as again:
        assert (again.cores, again.source, os.environ[NEURON_ENV]) == ("0-3", "process", "0-3")
    with pytest.raises(CoreRequestTooLarge, match=r"already holds 0-3 \(leased by embeddings\).*cannot grow"):
        with resource.lease(8, holder="chat"):
            pass
    # Cores for child processes are other cores: this process's own stay out of reach of its workers.
    with resource.lease(2, holder="workers", scope="children", up_to=24) as workers:
        assert (workers.cores, workers.held_until) == ("4-23", "end of block")
    end_process_leases()
    with resource.lease(24, holder="all") as everything:
        assert everything.cores == "0-23"


def test_up_to_takes_what_is_free_in_whole_replicas(host: types.SimpleNamespace) -> None:
    ready, release = host.tmp / "ready", host.tmp / "release"
    from device_helpers import _hold

    holder = FORK.Process(target=_hold, args=(host.locks, 8, str(ready), str(release)))
    holder.start()
    try:
        assert wait_for(ready)["env"] == "0-7"
        resource = NeuronResource(total_cores=24, lock_dir=host.locks, wait_timeout_s=0)
        with resource.lease(3, holder="dp", scope="children", up_to=24) as dp:
            assert dp.cores == "8-22"  # 15 = 5 whole replicas of 3 in the 16 free cores
            assert dp.split(3) == [
                {NEURON_ENV: f"{a}-{a + 2}", LEASE_MARKER_ENV: f"{NEURON_ENV}={a}-{a + 2}"} for a in range(8, 23, 3)
            ]
    finally:
        release.touch()
        holder.join(30)


def test_logical_core_setting_is_read(host: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dev(host, 2)
    trn2 = NeuronResource(lock_dir=host.locks, instance_type="trn2.3xlarge")
    assert trn2.discover().total == 8  # default LNC=2: 4 logical cores per chip
    monkeypatch.setenv(LNC_ENV, "1")
    inv = trn2.discover()
    assert (inv.total, inv.logical_nc_config) == (16, 1) and "NEURON_LOGICAL_NC_CONFIG=1" in inv.detail
    with trn2.lease(2, holder="lnc", scope="children") as lease:
        assert lease.metadata()["logical_nc_config"] == 1
    monkeypatch.setenv(LNC_ENV, "2")
    assert trn2.discover().total == 8
    with pytest.raises(NeuronDiscoveryError, match="inf2.xlarge supports only LNC=1"):
        logical_nc_config("inf2.xlarge")
    monkeypatch.setenv(LNC_ENV, "4")
    with pytest.raises(NeuronDiscoveryError, match="use 1 or 2"):
        trn2.discover()


def test_any_neuron_device_counts(host: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod given /dev/neuron3 alone is a Neuron host (auto used to pick ONNX, looking only at /dev/neuron0)."""
    from neuronforge import backends

    (host.dev / "neuron3").touch()
    (host.dev / "neuron_not_a_device").touch()
    assert neuron_device_count() == 1
    assert NeuronResource(lock_dir=host.locks).discover().total == 2
    probes = []

    def probe(argv, **kwargs):
        probes.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(backends.subprocess, "run", probe)
    backends.neuron_host_problem.cache_clear()
    try:
        assert backends.neuron_available() and probes[0][-1] == "import torch_neuronx"
        monkeypatch.setattr(discovery, "_DEV_DIR", host.tmp / "no-dev")
        backends.neuron_host_problem.cache_clear()
        assert not backends.neuron_available()
    finally:
        backends.neuron_host_problem.cache_clear()


def test_simulated_runtime_follows_the_variables(host: types.SimpleNamespace, monkeypatch) -> None:
    runtime = SimulatedNeuronHost(host.tmp / "rt", 4)
    monkeypatch.setenv(NEURON_ENV, "1-2")
    assert runtime.init() == (1, 2) and runtime.init() == (1, 2)  # one runtime per process
    assert runtime.live_owners() == {1: os.getpid(), 2: os.getpid()}
    with pytest.raises(RuntimeError, match="before init"):
        SimulatedNeuronHost(host.tmp / "other", 4).execute()
    logging.getLogger(__name__).info("runtime history %s", runtime.history())
