"""Runs whose worker processes are gone: mark them failed and give back their pool slots.

A run killed with SIGKILL (or by the OOM killer, or a host reboot) writes no failure event, so it stays STARTED and
keeps its `neuron` pool slots; every later model step then waits forever ("Step blocked by limit for pool neuron", at
DEBUG). What Dagster 1.13.27 already does, and where it stops (dagster/ in the venv's site-packages):

- Run monitoring judges a STARTED run only through the run launcher's health check
  (_daemon/monitoring/run_monitoring.py:121, `if instance.run_launcher.supports_check_run_worker_health`), which is
  False for the DefaultRunLauncher (_core/launcher/base.py:94; not overridden). The k8s/ECS launchers have one.
- The code server marks a run failed when the run worker it spawned crashes (_grpc/server.py:590-602), but only for
  runs it launched (the UI's Launch button) and only while it is itself alive. `dagster job execute` and `make run`
  execute in their own process: nothing watches them.
- `free_slots_after_run_end_seconds` frees the slots of *finished* runs only (_daemon/monitoring/concurrency.py:38,
  `statuses=FINISHED_STATUSES`), a minute after they end, and only where the monitoring daemon runs.

So this module adds the missing judgement and reuses Dagster for the rest: a STARTED run is dead when no process that
wrote its events is still that process (pid and start time, neuronforge.processes); it is then marked failed with
`DagsterInstance.report_run_failed` (_core/instance/methods/event_methods.py:458, as run monitoring does) and its
slots freed with the event log's `free_concurrency_slots_for_run` (_core/storage/event_log/sql_event_log.py:3147,
what the concurrency daemon calls), which also hands them to waiting steps.

Pids are host-local, and Dagster records no host with its events. So a run is judged only where its processes are
known to run on this host: a run tagged `neuronforge/host` (`make run` tags its runs) must name this host; an untagged
run is judged only on a sqlite instance, which is one host's by construction. On a shared (Postgres) instance untagged
runs are reported, never failed. Runs of a launcher with a health check (K8sRunLauncher, ...) are left to Dagster's
run monitoring.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from neuronforge.processes import process_state

# Events written by the processes of a run (the orchestrator, each step worker), with the writer's pid.
_PID_EVENTS = {
    dg.DagsterEventType.RUN_START,
    dg.DagsterEventType.ENGINE_EVENT,
    dg.DagsterEventType.STEP_WORKER_STARTED,
    dg.DagsterEventType.STEP_START,
}
HOST_TAG = "neuronforge/host"
# A finished run's own clean-up frees its slots; give it this long before freeing them from outside.
FINISHED_GRACE_S = 60.0


@dataclass(frozen=True)
class RunProcesses:
    """A run in progress, the processes that wrote its events, and what it holds."""

    run_id: str
    job_name: str
    status: str
    pids: dict[int, str]  # pid → alive | gone | zombie | reused
    steps_in_progress: tuple[str, ...]
    slots: tuple[tuple[str, str], ...]  # (pool, step key) claimed by the run

    @property
    def live_pids(self) -> list[int]:
        return sorted(pid for pid, state in self.pids.items() if state == "alive")

    @property
    def dead(self) -> bool:
        """Every process that wrote its events is gone. A run with no pid on record is never judged."""
        return bool(self.pids) and not self.live_pids

    def describe(self) -> str:
        procs = ", ".join(f"pid {pid} {state}" for pid, state in sorted(self.pids.items())) or "no pid recorded"
        steps = ", ".join(self.steps_in_progress) or "none"
        slots = ", ".join(f"{pool}:{step}" for pool, step in self.slots) or "none"
        return (
            f"run {self.run_id} ({self.job_name}, {self.status}): {procs}; steps in progress: {steps}; slots: {slots}"
        )


@dataclass
class Repair:
    """What one pass found and did."""

    live: list[RunProcesses] = field(default_factory=list)
    dead: list[RunProcesses] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # run ids marked failed
    orphaned_slots: list[tuple[str, str, str, str]] = field(default_factory=list)  # (pool, run id, step, run status)
    freed_runs: list[str] = field(default_factory=list)  # run ids whose slots were freed
    skipped: str = ""  # why nothing was judged (a launcher with its own health check)
    elsewhere: list[tuple[str, str]] = field(default_factory=list)  # (run id, why it is not judged on this host)

    @property
    def problems(self) -> int:
        return len(self.dead) + len({run_id for _, run_id, _, _ in self.orphaned_slots})


def claimed_slots(instance: dg.DagsterInstance) -> dict[str, list[tuple[str, str]]]:
    """run id → [(pool, step key)] of every claimed pool slot."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    claims: dict[str, list[tuple[str, str]]] = {}
    for pool, info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items():
        for slot in info.claimed_slots:
            claims.setdefault(slot.run_id, []).append((pool, slot.step_key))
    return claims


def run_pids(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """pid → the first time it wrote an event of the run (the writer's pid, and the pid an engine event names)."""
    first_seen: dict[int, float] = {}
    for entry in instance.all_logs(run_id, of_type=_PID_EVENTS):
        event = entry.dagster_event
        if event is None:
            continue
        found = [event.pid]
        if event.is_engine_event and "pid" in event.engine_event_data.metadata:
            found.append(event.engine_event_data.metadata["pid"].value)  # "Started process for run (pid: N)"
        for pid in found:
            try:
                pid = int(pid)  # metadata pids are text
            except (TypeError, ValueError):
                continue
            first_seen.setdefault(pid, entry.timestamp)
    return first_seen


def inspect_run(instance: dg.DagsterInstance, run: dg.DagsterRun, slots: Iterable[tuple[str, str]]) -> RunProcesses:
    states = {pid: process_state(pid, recorded_at=seen) for pid, seen in run_pids(instance, run.run_id).items()}
    in_progress = tuple(
        stat.step_key
        for stat in instance.get_run_step_stats(run.run_id)
        if stat.status is None or stat.status.value == "IN_PROGRESS"
    )
    return RunProcesses(run.run_id, run.job_name, run.status.value, states, in_progress, tuple(slots))


def judged_by_dagster(instance: dg.DagsterInstance) -> str:
    """Why Dagster's own run monitoring covers this instance's runs, or "" when it does not."""
    launcher = instance.run_launcher
    if launcher.supports_check_run_worker_health:
        enabled = "enabled" if instance.run_monitoring_enabled else "disabled in dagster.yaml: enable it"
        return f"{type(launcher).__name__} checks its run workers' health (run monitoring, {enabled})"
    return ""


def single_host_instance(instance: dg.DagsterInstance) -> bool:
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

    return isinstance(instance.run_storage, SqliteRunStorage)


def not_judged_here(run: dg.DagsterRun, single_host: bool) -> str:
    """Why this host cannot tell whether the run's processes live ("" when it can)."""
    host = run.tags.get(HOST_TAG)
    if host is not None:
        return "" if host == socket.gethostname() else f"its processes run on {host}"
    return "" if single_host else "a shared instance and no neuronforge/host tag: its host is unknown"


def repair(instance: dg.DagsterInstance, *, by: str, dry_run: bool = False, log=None) -> Repair:
    """Find STARTED runs whose processes are gone and slots held by finished or deleted runs; unless `dry_run`, mark
    the dead runs failed and free those slots. `by` names who acted (in the failure message); `log` gets one
    warning per run acted on."""
    result = Repair(skipped=judged_by_dagster(instance))
    claims = claimed_slots(instance)
    if not result.skipped:
        single_host = single_host_instance(instance)
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            why = not_judged_here(run, single_host)
            if why:
                result.elsewhere.append((run.run_id, why))
                continue
            found = inspect_run(instance, run, claims.get(run.run_id, ()))
            (result.dead if found.dead else result.live).append(found)
    for found in result.dead:
        if dry_run:
            continue
        current = instance.get_run_by_id(found.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            continue  # it finished (or was marked) between the look and now
        message = (
            f"Marked failed by {by}: every process of this run is gone ({found.describe()}). It was killed "
            "(SIGKILL, the OOM killer, a reboot) without writing a failure; its pool slots are freed. Re-execute it "
            "from the run page: finished steps are not redone."
        )
        instance.report_run_failed(current, message)
        instance.event_log_storage.free_concurrency_slots_for_run(found.run_id)
        result.failed.append(found.run_id)
        result.freed_runs.append(found.run_id)
        if log is not None:
            log.warning(f"{by}: marked failed and freed the pool slots of {found.describe()}")

    acted = {found.run_id for found in result.dead}
    now = time.time()
    for run_id, slots in claims.items():
        if run_id in acted:
            continue
        record = instance.get_run_record_by_id(run_id)
        if record is not None and not record.dagster_run.is_finished:
            continue
        ended = record.end_time if record is not None else None
        if ended is not None and now - ended < FINISHED_GRACE_S:
            continue  # its own clean-up (or the concurrency daemon) is about to free them
        status = record.dagster_run.status.value if record is not None else "deleted"
        result.orphaned_slots += [(pool, run_id, step, status) for pool, step in slots]
        if dry_run:
            continue
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        result.freed_runs.append(run_id)
        if log is not None:
            held = ", ".join(f"{pool}:{step}" for pool, step in slots)
            log.warning(f"{by}: freed pool slots {held} still held by run {run_id} ({status})")
    return result


def build_dead_run_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="dead_run_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks STARTED runs whose every process is gone (killed with SIGKILL, OOM, reboot) as failed and "
        "frees their pool slots, and frees slots still held by finished or deleted runs, so later `neuron` steps do "
        "not wait forever. Launches nothing; `make doctor` does the same by hand.",
    )
    def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        found = repair(context.instance, by="dead_run_sensor", log=context.log)
        if found.skipped:
            return dg.SkipReason(f"left to Dagster: {found.skipped}")
        done = []
        if found.failed:
            done.append(f"marked failed and freed: {', '.join(found.failed)}")
        orphans = sorted({run_id for _, run_id, _, _ in found.orphaned_slots})
        if orphans:
            done.append(f"freed slots of ended runs: {', '.join(orphans)}")
        alive = f"{len(found.live)} started run(s), each with a live process"
        elsewhere = [f"{len(found.elsewhere)} not judged on this host"] if found.elsewhere else []
        return dg.SkipReason("; ".join([*done, alive, *elsewhere]))

    return dead_run_sensor
