"""flock leases: contiguous, chip-aligned, nested, preset by the environment, and safe across real processes.

The contention tests use total_cores=24 (an inf2.48xlarge); holders run in forked children or a fresh interpreter
(neuron_lease_worker.py) that the tests kill.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from device_helpers import FIXTURES, FORK, WORKER, _hold, fake_neuron_ls, wait_for

from neuronforge.devices import (
    LEASE_MARKER_ENV,
    LOCK_DIR_ENV,
    NEURON_ENV,
    NUM_CORES_ENV,
    CoreLease,
    CoreLeaseError,
    CoreLeaseTimeout,
    CoreRequestTooLarge,
    core_locks,
    format_core_range,
    lock_dir,
)
from resources.devices import NeuronResource

# ---------------------------------------------------------------------------------------------------------------------
# Leases in one process


def test_lease_sets_and_restores_env(host: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    resource = NeuronResource(total_cores=24, lock_dir=host.locks)
    with resource.lease(4, holder="embeddings", scope="children") as lease:
        assert isinstance(lease, CoreLease)
        assert (lease.kind, lease.first, lease.last, lease.count, lease.host_total) == ("neuron", 0, 3, 4, 24)
        assert lease.env == {NEURON_ENV: "0-3"} and os.environ[NEURON_ENV] == "0-3"
        meta = lease.metadata()
        assert json.loads(json.dumps(meta)) == meta
        assert {k: meta[k] for k in ("cores_leased", "core_count", "host_total_cores", "device_kind")} == {
            "cores_leased": "0-3",
            "core_count": 4,
            "host_total_cores": 24,
            "device_kind": "neuron",
        }
        # A nested lease shares the enclosing cores: this process's runtime can only ever use those.
        with resource.lease(2, holder="inner") as inner:
            assert (inner.source, inner.env, inner.wait_s) == ("lease", {NEURON_ENV: "0-3"}, 0.0)
        assert os.environ[NEURON_ENV] == "0-3"
        with pytest.raises(CoreRequestTooLarge, match="enclosing lease holds 4"):
            with resource.lease(8, holder="inner-too-big"):
                pass
    assert NEURON_ENV not in os.environ and LEASE_MARKER_ENV not in os.environ

    # A value that was there before comes back, even when the body raises.
    # NEURON_RT_NUM_CORES is cleared inside (it would cap optimum-neuron's count below the lease) and comes back.
    monkeypatch.setenv(NUM_CORES_ENV, "1")
    with pytest.raises(RuntimeError, match="boom"):
        with resource.lease(2, holder="x", scope="children") as lease:
            assert os.environ[NEURON_ENV] == lease.env[NEURON_ENV] == "0-1"
            assert NUM_CORES_ENV not in os.environ
            raise RuntimeError("boom")
    assert os.environ[NUM_CORES_ENV] == "1" and NEURON_ENV not in os.environ and LEASE_MARKER_ENV not in os.environ
    with resource.lease(24, holder="all", log=logging.getLogger("test"), scope="children") as everything:
        assert everything.env == {NEURON_ENV: "0-23"}  # the failed body's cores were released


def test_leases_are_contiguous_and_chip_aligned(host: types.SimpleNamespace) -> None:
    release = host.tmp / "release"
    holders = []
    try:
        for cores, expected in ((1, "0"), (2, "2-3"), (8, "4-11")):  # 2 cores: one whole chip, not 1-2 across two
            ready = host.tmp / f"ready-{cores}"
            child = FORK.Process(target=_hold, args=(host.locks, cores, str(ready), str(release)))
            child.start()
            holders.append(child)
            assert wait_for(ready)["env"] == expected
        with NeuronResource(total_cores=24, lock_dir=host.locks, wait_timeout_s=0).lease(1, holder="d") as d:
            assert d.env == {NEURON_ENV: "1"}  # fills the hole before breaking into the large free run
    finally:
        release.touch()
        for child in holders:
            child.join(30)
    assert [child.exitcode for child in holders] == [0, 0, 0]


def test_cpu_mode_is_a_noop_slot(host: types.SimpleNamespace) -> None:
    resource = NeuronResource(device="cpu", lock_dir=host.locks, wait_timeout_s=0)
    before = dict(os.environ)
    with resource.lease(4, holder="a") as a, resource.lease(4, holder="b") as b:
        assert (a.kind, a.count, a.env, a.wait_s) == ("cpu", 4, {}, 0.0)
        assert b.metadata()["cores_leased"] == "none (cpu)" and b.metadata()["device_kind"] == "cpu"
        assert dict(os.environ) == before
    assert not Path(host.locks).exists()  # never touched the lock directory
    # device="auto" on this bare host lands on the same slot.
    assert NeuronResource(lock_dir=host.locks).discover().kind == "cpu"


def test_eks_preset_is_respected(host: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NEURON_ENV, "4,5,6,7")  # what a device plugin may hand a pod
    fake_neuron_ls(host, legacy=FIXTURES / "inf2.48xlarge.json-output.json")  # must not be consulted
    resource = NeuronResource(lock_dir=host.locks, wait_timeout_s=0)
    inv = resource.discover()
    assert (inv.source, inv.preset, inv.total, inv.core_ids) == ("env", True, 4, (4, 5, 6, 7))

    with resource.lease(2, holder="pod-step") as lease:
        # Exactly the pod's cores, as a range optimum-neuron counts right; nothing beyond them is allocated.
        assert (lease.first, lease.last, lease.count) == (4, 7, 4)
        assert os.environ[NEURON_ENV] == "4-7"
        # A nested lease (or a child process) reuses the enclosing cores instead of deadlocking on their locks.
        with NeuronResource(lock_dir=host.locks, wait_timeout_s=0).lease(1, holder="inner") as inner:
            assert (inner.source, inner.env) == ("lease", {NEURON_ENV: "4-7"})
    assert os.environ[NEURON_ENV] == "4,5,6,7"
    # The device plugin already arbitrated: no file locks (on a shared volume they would block other nodes' pods).
    assert not Path(host.locks).exists()
    assert lease.metadata()["lease_held_until"] == "not locked (preset by the environment)"

    with pytest.raises(CoreRequestTooLarge, match=r"8 NeuronCores requested.*4 available.*NEURON_RT_VISIBLE_CORES"):
        with resource.lease(8, holder="too-big"):
            pass

    # A non-contiguous preset: optimum-neuron would count "0,1,4,5,6" as one core, so the lease is its longest range.
    monkeypatch.setenv(NEURON_ENV, "0,1,4,5,6")
    with resource.lease(2, holder="gappy") as gappy:
        assert (gappy.env, gappy.count) == ({NEURON_ENV: "4-6"}, 3)
    with pytest.raises(CoreRequestTooLarge, match="longest contiguous range is 3.*scheduler extension"):
        with resource.lease(4, holder="gappy-4"):
            pass


def test_over_request_fails_at_once(host: types.SimpleNamespace) -> None:
    resource = NeuronResource(total_cores=24, lock_dir=host.locks)  # an hour of patience would not help
    with pytest.raises(CoreRequestTooLarge) as err:
        with resource.lease(25, holder="huge"):
            pass
    message = str(err.value)
    assert "25 NeuronCores requested" in message and "24 available" in message and "total_cores=24" in message

    # Free cores that are not contiguous can never serve a request larger than the largest run either.
    fake_neuron_ls(host, legacy=FIXTURES / "inf2.48xlarge.json-output.json")  # pid 31337 holds cores 10-11
    with pytest.raises(CoreRequestTooLarge, match="pid 31337.*largest contiguous free range is 12"):
        with NeuronResource(lock_dir=host.locks).lease(20, holder="fragmented"):
            pass
    with pytest.raises(ValueError):
        with resource.lease(0, holder="nothing"):
            pass


def test_default_lock_dir_is_node_local(host: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not under NEURONFORGE_HOME: on k8s that is a shared volume, and pods on other nodes would block each other.
    with NeuronResource(total_cores=2).lease(1, holder="a", scope="children"):
        assert (host.tmp / "run-lock" / "neuronforge" / "neuron-0.lock").exists()
    assert not (host.tmp / "home" / "locks").exists()
    assert (host.tmp / "run-lock" / "neuronforge").stat().st_mode & 0o1777 == 0o1777  # shared by the host's users
    monkeypatch.setenv(LOCK_DIR_ENV, str(host.tmp / "configured"))
    with NeuronResource(total_cores=2).lease(1, holder="b", scope="children"):
        assert (host.tmp / "configured" / "neuron-0.lock").exists()


def test_lock_dir_on_a_network_filesystem_is_refused(host: types.SimpleNamespace, monkeypatch) -> None:
    shared = host.tmp / "efs"
    shared.mkdir()
    mountinfo = host.tmp / "mountinfo"
    mountinfo.write_text(
        "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n"
        f"98 22 0:52 / {shared} rw,relatime shared:40 - nfs4 fs-0123.efs.us-east-1.amazonaws.com:/ rw,vers=4.1\n"
    )
    monkeypatch.setattr(lock_dir, "_MOUNTINFO", mountinfo)
    assert lock_dir.filesystem_of(host.tmp / "local") == ("ext4", "/")
    with pytest.raises(
        CoreLeaseError, match=rf"{shared}/locks is on a network filesystem \(nfs4 mounted at {shared}\).*node-local"
    ):
        with NeuronResource(total_cores=2, lock_dir=str(shared / "locks")).lease(1, holder="on-efs"):
            pass


# ---------------------------------------------------------------------------------------------------------------------
# Leases across processes


def _contend(lock_dir: str, worker: int, requests: list[int], out: str) -> None:
    resource = NeuronResource(total_cores=24, lock_dir=lock_dir, wait_timeout_s=120, poll_interval_s=0.01)
    records = []
    for n in requests:
        # scope="children": the flock arbitration itself, with leases that end with their blocks.
        with resource.lease(n, holder=f"worker-{worker}", scope="children") as lease:
            start = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable across processes
            assert os.environ[NEURON_ENV] == format_core_range(lease.first, lease.last)
            assert lease.last - lease.first + 1 == lease.count == n
            time.sleep(0.02)
            records.append({"first": lease.first, "last": lease.last, "start": start, "end": time.monotonic()})
    Path(out).write_text(json.dumps(records))


def test_many_processes_never_share_a_core_between_blocks(host: types.SimpleNamespace) -> None:
    mix = [1, 2, 8, 12]
    workers = []
    for i in range(10):
        requests = [mix[(i + k) % len(mix)] for k in range(4)]
        out = host.tmp / f"worker-{i}.json"
        proc = FORK.Process(target=_contend, args=(host.locks, i, requests, str(out)))
        proc.start()
        workers.append((proc, out))
    for proc, _ in workers:
        proc.join(120)
    assert [proc.exitcode for proc, _ in workers] == [0] * len(workers)  # all finished, none failed

    holds = [rec for _, out in workers for rec in json.loads(out.read_text())]
    assert len(holds) == 40
    for i, a in enumerate(holds):
        for b in holds[i + 1 :]:
            share_core = a["first"] <= b["last"] and b["first"] <= a["last"]
            overlap_in_time = a["start"] < b["end"] and b["start"] < a["end"]
            assert not (share_core and overlap_in_time), (a, b)


def test_killed_holder_frees_its_lease_and_is_named_while_alive(host: types.SimpleNamespace) -> None:
    ready = host.tmp / "ready.json"
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), host.locks, "8", "compile-llama", str(ready)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = wait_for(ready, worker)
        assert (info["env"], info["cores_leased"]) == ("0-7", "0-7")
        resource = NeuronResource(total_cores=24, lock_dir=host.locks, wait_timeout_s=0.2, poll_interval_s=0.05)
        with pytest.raises(CoreLeaseTimeout) as err:
            with resource.lease(24, holder="everything"):
                pass
        assert f"compile-llama (pid {worker.pid}" in str(err.value) and "cores 0-7" in str(err.value)

        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    # No cleanup ran in the worker: the kernel dropped its flocks with the process.
    with NeuronResource(total_cores=24, lock_dir=host.locks, wait_timeout_s=30).lease(24, holder="after") as lease:
        assert (lease.first, lease.last) == (0, 23)


def _die_mid_acquisition(lock_dir: str) -> None:
    """SIGKILL ourselves after taking the alloc lock and 5 core locks of a 12-core request."""
    taken = {"cores": 0}
    real_flock = fcntl.flock

    def flock(fd: int, op: int) -> None:
        real_flock(fd, op)
        if op & fcntl.LOCK_NB and op & fcntl.LOCK_EX:
            taken["cores"] += 1
            if taken["cores"] == 5:
                os.kill(os.getpid(), signal.SIGKILL)

    core_locks.fcntl = types.SimpleNamespace(
        flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, LOCK_SH=fcntl.LOCK_SH, LOCK_UN=fcntl.LOCK_UN
    )
    with NeuronResource(total_cores=24, lock_dir=lock_dir).lease(12, holder="doomed"):
        pass


def test_death_half_way_through_acquisition_leaves_nothing_locked(host: types.SimpleNamespace) -> None:
    proc = FORK.Process(target=_die_mid_acquisition, args=(host.locks,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    with NeuronResource(total_cores=24, lock_dir=host.locks, wait_timeout_s=30).lease(24, holder="after") as lease:
        assert lease.count == 24
