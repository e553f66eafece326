"""NeuronResource: discovery rules and their precedence, neuron-ls parsing, and flock leases across real processes.

No Neuron hardware here: neuron-ls is a fake script on PATH printing the fixtures in tests/fixtures/neuron, /dev is a
temporary folder, and the contention tests use total_cores=24 (an inf2.48xlarge).
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import dagster as dg
import pytest

from resources import neuron
from resources.neuron import (
    CUDA_ENV,
    INSTANCE_CORES,
    LEASE_MARKER_ENV,
    NEURON_ENV,
    CoreLease,
    CoreLeaseTimeout,
    CoreRequestTooLarge,
    NeuronDiscoveryError,
    NeuronResource,
    cores_per_chip,
    format_core_range,
    parse_core_spec,
    parse_neuron_ls,
    parse_neuron_ls_report,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "neuron"
WORKER = Path(__file__).resolve().parent / "neuron_lease_worker.py"
FORK = multiprocessing.get_context("fork")  # children inherit the imported modules: no 2 s dagster import each


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
    monkeypatch.setattr(neuron, "_DEV_DIR", dev_dir)
    monkeypatch.setattr(neuron, "_DMI_PRODUCT_NAME", tmp_path / "no-dmi")
    monkeypatch.setattr(neuron, "_NEURON_LS_FALLBACK", tmp_path / "no-neuron-ls")
    monkeypatch.setattr(neuron, "_torch_cuda_count", lambda: None)
    return types.SimpleNamespace(bin=bin_dir, dev=dev_dir, locks=str(tmp_path / "locks"), tmp=tmp_path)


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


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers and parsing


def test_core_specs_and_ranges() -> None:
    assert parse_core_spec("3") == (3,)
    assert parse_core_spec("4-7") == (4, 5, 6, 7)
    assert parse_core_spec("0,1, 4-5") == (0, 1, 4, 5)
    for bad in ("", "a-b", "7-4", "1;2"):
        with pytest.raises(ValueError):
            parse_core_spec(bad)
    # One core is a bare index (what the runtime documents); more are always a range, never a comma list.
    assert format_core_range(3, 3) == "3"
    assert format_core_range(4, 7) == "4-7"


def test_parse_json_output_legacy_list() -> None:
    devices = parse_neuron_ls((FIXTURES / "inf2.48xlarge.json-output.json").read_text())
    assert len(devices) == 12
    assert [d.core_ids for d in devices[:2]] == [(0, 1), (2, 3)]
    assert devices[0].memory_bytes == 32 * 1024**3 and devices[0].bdf == "0000:10:1e.0"
    (proc,) = devices[5].processes
    assert (proc.pid, proc.command, proc.core_ids) == (31337, "python serve.py --model llama", ())
    assert devices[5].busy_by() == {31337: (10, 11)}  # a process naming no cores holds its whole device

    (single,) = parse_neuron_ls((FIXTURES / "trn1.2xlarge.json-output.json").read_text())
    assert single.core_ids == (0, 1) and single.processes == ()


def test_parse_output_format_json() -> None:
    report = parse_neuron_ls_report((FIXTURES / "inf2.24xlarge.output-format.json").read_text())
    assert report.instance_type == "inf2.24xlarge"
    assert sum(len(d.core_ids) for d in report.devices) == INSTANCE_CORES["inf2.24xlarge"] == 12
    # The process names its core; neuron-top only watches and is not a user.
    assert report.devices[1].busy_by() == {2222: (3,)}

    # Instance nested, no neuroncore_ids: ids derive from nc_count / LNC (8 physical trn2 cores → 4 logical).
    trn2 = parse_neuron_ls_report((FIXTURES / "trn2.3xlarge.output-format.json").read_text())
    assert trn2.instance_type == "trn2.3xlarge"
    assert trn2.devices[0].core_ids == (0, 1, 2, 3) == tuple(range(INSTANCE_CORES["trn2.3xlarge"]))


def test_parse_is_tolerant_but_not_blind() -> None:
    text = "instance-type: inf2.xlarge\n" + json.dumps([{"neuron_device": 0, "nc_count": "2"}])
    (device,) = parse_neuron_ls(text)
    assert device.core_ids == (0, 1)
    assert parse_neuron_ls("[]") == []
    for garbage in ("no json here", '{"status": "ok"}', "[1, 2"):
        with pytest.raises(ValueError):
            parse_neuron_ls(garbage)


def test_instance_table() -> None:
    assert INSTANCE_CORES["inf2.xlarge"] == INSTANCE_CORES["inf2.8xlarge"] == 2
    assert INSTANCE_CORES["inf2.24xlarge"] == 12 and INSTANCE_CORES["inf2.48xlarge"] == 24
    assert INSTANCE_CORES["trn1.2xlarge"] == 2
    assert INSTANCE_CORES["trn1.32xlarge"] == INSTANCE_CORES["trn1n.32xlarge"] == 32
    assert cores_per_chip("inf2.48xlarge") == cores_per_chip(None) == 2
    assert cores_per_chip("trn2.48xlarge") == 4


# ---------------------------------------------------------------------------------------------------------------------
# Discovery


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


# ---------------------------------------------------------------------------------------------------------------------
# Leases in one process


def test_lease_sets_and_restores_env(host: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    resource = NeuronResource(total_cores=24, lock_dir=host.locks)
    with resource.lease(4, holder="embeddings") as lease:
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
    monkeypatch.setenv(NEURON_ENV, "0-1")
    with pytest.raises(RuntimeError, match="boom"):
        with resource.lease(2, holder="x") as lease:
            assert os.environ[NEURON_ENV] == lease.env[NEURON_ENV]
            raise RuntimeError("boom")
    assert os.environ[NEURON_ENV] == "0-1"
    with resource.lease(24, holder="all", log=logging.getLogger("test")) as everything:
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

    with pytest.raises(CoreRequestTooLarge, match=r"8 NeuronCores requested.*4 available.*NEURON_RT_VISIBLE_CORES"):
        with resource.lease(8, holder="too-big"):
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


def test_config_is_validated() -> None:
    for bad in ({"device": "tpu"}, {"total_cores": 0}, {"wait_timeout_s": -1}, {"poll_interval_s": 0}):
        with pytest.raises(Exception, match=next(iter(bad))):
            NeuronResource(**bad)


def test_resource_in_an_asset(host: types.SimpleNamespace) -> None:
    @dg.asset
    def compiled(neuron: NeuronResource) -> dg.MaterializeResult:
        with neuron.lease(2, holder="compiled") as lease:
            assert os.environ[NEURON_ENV] == "0-1"
            return dg.MaterializeResult(metadata=lease.metadata())

    result = dg.materialize(
        [compiled], resources={"neuron": NeuronResource(total_cores=24, lock_dir=host.locks)}, raise_on_error=True
    )
    (event,) = result.asset_materializations_for_node("compiled")
    assert event.metadata["cores_leased"].value == "0-1" and event.metadata["core_count"].value == 2
    assert NEURON_ENV not in os.environ


def test_default_lock_dir_is_under_neuronforge_home(host: types.SimpleNamespace) -> None:
    with NeuronResource(total_cores=2).lease(1, holder="a"):
        assert (host.tmp / "home" / "locks" / "neuron" / "neuron-0.lock").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Leases across processes


def _contend(lock_dir: str, worker: int, requests: list[int], out: str) -> None:
    resource = NeuronResource(total_cores=24, lock_dir=lock_dir, wait_timeout_s=120, poll_interval_s=0.01)
    records = []
    for n in requests:
        with resource.lease(n, holder=f"worker-{worker}") as lease:
            start = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable across processes
            assert os.environ[NEURON_ENV] == format_core_range(lease.first, lease.last)
            assert lease.last - lease.first + 1 == lease.count == n
            time.sleep(0.02)
            records.append({"first": lease.first, "last": lease.last, "start": start, "end": time.monotonic()})
    Path(out).write_text(json.dumps(records))


def test_many_processes_never_share_a_core(host: types.SimpleNamespace) -> None:
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

    neuron.fcntl = types.SimpleNamespace(
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
        assert neuron._descends_from(os.getpid(), {os.getppid()})
        assert not neuron._descends_from(os.getppid(), {os.getpid()})
    finally:
        release.touch()
        child.join(30)
    assert child.exitcode == 0
