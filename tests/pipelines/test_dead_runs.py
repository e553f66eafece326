"""A run killed with SIGKILL while its step holds the `neuron` pool slot: the dead-run sensor (or the doctor) marks it
failed and frees the slot, and the next run proceeds.

Real runs: `dagster job execute` subprocesses (the multiprocess executor, so a run worker and a step process) of a
tiny job in a temporary instance whose `neuron` pool has one slot. The step also leases a (configured) NeuronCore,
so the doctor's lease report is seen with a live holder and then empty after the kill.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from pipelines.dead_runs import build_dead_run_sensor

BIN = Path(sys.executable).parent
DEADLINE_S = 240.0  # generous: a cold `dagster job execute` on a loaded 2-core host

JOB = """
import os, time
from pathlib import Path

import dagster as dg
from neuronforge.devices import CoreAllocator


class HoldConfig(dg.Config):
    marker: str = ""  # when set: lease a core, say so in this file, then hold the pool slot until killed
    lock_dir: str = ""


@dg.op(pool="neuron")
def hold_slot(config: HoldConfig) -> None:
    if not config.marker:
        return
    allocator = CoreAllocator(total_cores=2, device="neuron", lock_dir=config.lock_dir)
    with allocator.lease(1, holder="hold_slot"):
        Path(config.marker).write_text(str(os.getpid()))
        while True:
            time.sleep(0.2)


@dg.job
def hold_job():
    hold_slot()
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        "concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "hold.yaml").write_text(
        f"ops:\n  hold_slot:\n    config:\n      marker: {tmp_path / 'holding'}\n      lock_dir: {tmp_path / 'locks'}\n"
    )
    return tmp_path


def dagster_job(home: Path, *extra: str, **kwargs) -> subprocess.Popen:
    cmd = [str(BIN / "dagster"), "job", "execute", "-f", str(home / "job.py"), "-j", "hold_job", *extra]
    log = open(home / f"run-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, cwd=home, stdout=log, stderr=subprocess.STDOUT, **kwargs)


def start_holding_run(home: Path) -> subprocess.Popen:
    """A run whose step holds the pool slot (and a core lease) until it is killed."""
    proc = dagster_job(home, "-c", str(home / "hold.yaml"), start_new_session=True)
    deadline = time.monotonic() + DEADLINE_S
    while not (home / "holding").exists():
        assert proc.poll() is None, f"the holding run exited ({proc.returncode}) before its step started"
        assert time.monotonic() < deadline, "the holding run's step never started"
        time.sleep(0.2)
    return proc


def kill_run(proc: subprocess.Popen) -> None:
    """SIGKILL the run worker and its step process (one session): nothing gets to write a failure."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    runs = instance.get_runs()
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


def neuron_slots(instance: dg.DagsterInstance) -> list[str]:
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info("neuron").claimed_slots]


def assert_next_run_proceeds(home: Path, dead_run_id: str) -> None:
    """With one `neuron` slot, the next run can only finish if the dead run's slot was freed."""
    proc = dagster_job(home)
    try:
        assert proc.wait(timeout=DEADLINE_S) == 0, "the next run failed"
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the next run did not finish within {DEADLINE_S} s: is the neuron slot still held?")
    with dg.DagsterInstance.get() as instance:
        statuses = {r.run_id: r.status for r in instance.get_runs()}
        assert statuses.pop(dead_run_id) == dg.DagsterRunStatus.FAILURE
        assert list(statuses.values()) == [dg.DagsterRunStatus.SUCCESS]
        assert neuron_slots(instance) == []


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert len(events) == 1
    return events[0].dagster_event.message or ""


def test_dead_run_sensor_fails_a_killed_run_and_frees_its_slot(home: Path) -> None:
    sensor = build_dead_run_sensor()
    proc = start_holding_run(home)
    try:
        with dg.DagsterInstance.get() as instance:
            run = only_run(instance)
            # Alive: the sensor leaves it alone.
            skip = sensor(dg.build_sensor_context(instance=instance))
            assert "1 started run(s), each with a live process" in skip.skip_message
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    finally:
        kill_run(proc)

    with dg.DagsterInstance.get() as instance:
        # What Dagster alone leaves behind: a STARTED run holding the only slot.
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        assert neuron_slots(instance) == [run.run_id]

        skip = sensor(dg.build_sensor_context(instance=instance))
        assert f"marked failed and freed: {run.run_id}" in skip.skip_message
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert neuron_slots(instance) == []
        message = failure_message(instance, run.run_id)
        assert "Marked failed by dead_run_sensor" in message and "steps in progress: hold_slot" in message
    assert_next_run_proceeds(home, run.run_id)


def doctor(*args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [str(BIN / "neuronforge-doctor"), "--json", *args], capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_doctor_reports_leases_and_repairs_a_killed_run(home: Path) -> None:
    locks = str(home / "locks")
    proc = start_holding_run(home)
    step_pid = int((home / "holding").read_text())
    try:
        rc, report = doctor("--dry-run", "--lock-dir", locks)
        assert rc == 0 and report["dead_runs"] == []
        (running,) = report["runs_in_progress"]
        assert step_pid in running["live_pids"] and running["steps_in_progress"] == ["hold_slot"]
        assert [(pool["pool"], len(pool["claimed"]), pool["limit"]) for pool in report["pools"]] == [("neuron", 1, 1)]
        # The live step holds core 0 until its process exits.
        ((lease),) = report["leases"]["held"]
        assert (lease["pid"], lease["pid_state"], lease["cores"], lease["holder"]) == (
            step_pid,
            "alive",
            "0",
            "hold_slot",
        )
    finally:
        kill_run(proc)

    rc, report = doctor("--dry-run", "--lock-dir", locks)
    (dead,) = report["dead_runs"]
    assert rc == 1 and dead["run_id"] == running["run_id"] and report["marked_failed"] == []
    assert report["leases"]["held"] == []  # the kernel dropped the killed step's flocks: nothing to repair there

    rc, report = doctor("--lock-dir", locks)
    assert rc == 0 and report["marked_failed"] == [dead["run_id"]]
    assert report["pools"][0]["claimed"] == []
    with dg.DagsterInstance.get() as instance:
        assert "Marked failed by neuronforge-doctor" in failure_message(instance, dead["run_id"])
    assert_next_run_proceeds(home, dead["run_id"])


def a_started_run(instance: dg.DagsterInstance, pid: int, tags: dict[str, str] | None = None) -> dg.DagsterRun:
    """A STARTED run whose run worker said "Started process for run (pid: N)", as `dagster api execute_run` does."""
    from dagster._core.events import EngineEventData
    from dagster._core.storage.dagster_run import DagsterRun

    run = instance.add_run(
        DagsterRun(job_name="hold_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED, tags=tags or {})
    )
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))
    return run


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_runs_known_to_live_on_this_host_are_judged() -> None:
    from pipelines.dead_runs import HOST_TAG, repair

    dead = exited_pid()
    with dg.instance_for_test() as instance:  # sqlite: one host's instance
        untagged = a_started_run(instance, dead)
        here = a_started_run(instance, dead, {HOST_TAG: socket.gethostname()})
        elsewhere = a_started_run(instance, dead, {HOST_TAG: "another-host"})
        alive = a_started_run(instance, os.getpid())
        found = repair(instance, by="test")
        assert sorted(found.failed) == sorted([untagged.run_id, here.run_id])
        assert found.elsewhere == [(elsewhere.run_id, "its processes run on another-host")]
        assert [r.run_id for r in found.live] == [alive.run_id]
        status = {r.run_id: r.status for r in instance.get_runs()}
        assert status[elsewhere.run_id] == status[alive.run_id] == dg.DagsterRunStatus.STARTED
        assert status[untagged.run_id] == status[here.run_id] == dg.DagsterRunStatus.FAILURE


def test_make_run_repairs_dead_runs_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` (pipelines/launch.py) marks a killed run failed before its own run, and tags its run with the host."""
    from pipelines.dead_runs import HOST_TAG

    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (tmp_path / "tiny_defs.py").write_text(
        "import dagster as dg\n\n@dg.asset\ndef tiny() -> None:\n    pass\n\n"
        "defs = dg.Definitions(assets=[tiny], jobs=[dg.define_asset_job('tiny_job')])\n"
    )
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: tiny_defs\n      working_directory: .\n"
        "      location_name: neuronforge\n"
    )
    with dg.DagsterInstance.get() as instance:
        dead = a_started_run(instance, exited_pid())
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.launch", "tiny_job", "--workspace", str(workspace)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    assert f"make run: marked failed and freed the pool slots of run {dead.run_id}" in done.stderr
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        (launched,) = instance.get_runs(filters=dg.RunsFilter(job_name="tiny_job"))
        assert launched.status == dg.DagsterRunStatus.SUCCESS
        assert launched.tags[HOST_TAG] == socket.gethostname()
