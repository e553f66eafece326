"""`make doctor` / `neuronforge-doctor`: what holds the pools and the cores, and the repair of dead runs by hand.

Reports the instance's pools (claimed slots, waiting steps), the runs in progress and whether their processes live,
and the NeuronCore / GPU leases (which live pid holds which cores). Then does what `dead_run_sensor` does on each
tick, for hosts where no daemon runs (`make run` alone): STARTED runs whose every process is gone are marked failed
and their pool slots freed; slots still held by finished or deleted runs are freed. `--dry-run` only reports.

Leases need no repair: they are flocks, which the kernel drops when the holding process exits, even by kill -9.

    neuronforge-doctor [--dry-run] [--json] [--lock-dir DIR]

Exit status: 0 when nothing is wrong (or everything found was repaired), 1 when --dry-run found something to repair,
2 when the instance cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import dagster as dg

from neuronforge.devices import CoreAllocator, CoreLeaseError
from neuronforge.devices.lock_dir import LockDirError, prepare_lock_dir
from neuronforge.processes import process_state
from pipelines.dead_runs import Repair, repair

log = logging.getLogger("neuronforge.doctor")


def pools(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    return [
        {
            "pool": pool,
            "limit": info.limit if info.limit is not None else info.slot_count,
            "claimed": [{"run_id": s.run_id, "step": s.step_key} for s in info.claimed_slots],
            "waiting_steps": info.pending_step_count,
        }
        for pool, info in infos.items()
    ]


def leases(lock_dir: str | None) -> dict[str, Any]:
    """Who holds which cores now, one entry per lease (a held flock means a live process holds it)."""
    try:
        root = str(prepare_lock_dir(lock_dir))
        allocator = CoreAllocator(lock_dir=root)
        records = [rec for kind in ("neuron", "cuda") for rec in allocator.holders(kind)]
    except (CoreLeaseError, LockDirError) as exc:
        return {"lock_dir": lock_dir, "error": str(exc), "held": []}
    held: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records:
        key = (rec.get("kind"), rec.get("pid"), rec.get("holder"), rec.get("cores"))
        pid = int(rec.get("pid") or 0)
        state = process_state(pid)
        # The recorded pid gone while its flock is still held: a child that inherited the descriptor holds it.
        note = "" if state == "alive" else "the lock is held by a process that inherited it from this pid"
        held[key] = {**rec, "pid_state": state, "note": note}
    return {"lock_dir": root, "held": list(held.values())}


def daemon_status(instance: dg.DagsterInstance) -> str:
    beats = instance.get_daemon_heartbeats()
    if not beats:
        return "not running: sensors (dead_run_sensor included) and run monitoring need `dagster-daemon` (`make ui`)"
    age = time.time() - max(beat.timestamp for beat in beats.values())
    return f"last heartbeat {age:.0f} s ago"


def report(instance: dg.DagsterInstance, found: Repair, dry_run: bool, lock_dir: str | None) -> dict[str, Any]:
    settings = instance.run_monitoring_settings or {}
    return {
        "dagster_home": instance.root_directory,
        "run_launcher": type(instance.run_launcher).__name__,
        "run_monitoring": {
            "enabled": instance.run_monitoring_enabled,
            "free_slots_after_run_end_seconds": settings.get("free_slots_after_run_end_seconds"),
        },
        "daemon": daemon_status(instance),
        "pools": pools(instance),
        "runs_in_progress": [vars(r) | {"live_pids": r.live_pids} for r in found.live],
        "dead_runs": [vars(r) for r in found.dead],
        "marked_failed": found.failed,
        "slots_of_ended_runs": [
            {"pool": pool, "run_id": run_id, "step": step, "run_status": status}
            for pool, run_id, step, status in found.orphaned_slots
        ],
        "slots_freed_for_runs": found.freed_runs,
        "skipped": found.skipped,
        "not_judged_here": [{"run_id": run_id, "why": why} for run_id, why in found.elsewhere],
        "leases": leases(lock_dir),
        "dry_run": dry_run,
    }


def print_report(data: dict[str, Any]) -> None:
    out = print
    out(f"Dagster instance {data['dagster_home']}: {data['run_launcher']}; daemon {data['daemon']}")
    mon = data["run_monitoring"]
    out(
        f"  run monitoring {'on' if mon['enabled'] else 'off'}, "
        f"free_slots_after_run_end_seconds: {mon['free_slots_after_run_end_seconds']}"
    )
    out("Pools:" + ("" if data["pools"] else " none yet (a pool's slots appear when its first step runs)"))
    for pool in data["pools"]:
        claimed = ", ".join(f"{c['step']} of run {c['run_id']}" for c in pool["claimed"]) or "none"
        out(
            f"  {pool['pool']}: {len(pool['claimed'])} of {pool['limit']} slots claimed ({claimed}); "
            f"{pool['waiting_steps']} step(s) waiting"
        )
    if data["skipped"]:
        out(f"Runs: left to Dagster's run monitoring ({data['skipped']})")
    out("Runs in progress:" + ("" if data["runs_in_progress"] or data["not_judged_here"] else " none"))
    for run in data["runs_in_progress"]:
        out(f"  {describe(run)}")
    for item in data["not_judged_here"]:
        out(f"  run {item['run_id']}: not judged on this host ({item['why']})")
    out("Dead runs (every process gone):" + ("" if data["dead_runs"] else " none"))
    for run in data["dead_runs"]:
        if data["dry_run"]:
            action = "would mark failed and free its slots (dry run)"
        elif run["run_id"] in data["marked_failed"]:
            action = "marked failed, slots freed"
        else:
            action = "left alone: it finished while the doctor looked"
        out(f"  {describe(run)}\n    → {action}")
    out("Pool slots held by ended or deleted runs:" + ("" if data["slots_of_ended_runs"] else " none"))
    for slot in data["slots_of_ended_runs"]:
        action = "would free (dry run)" if data["dry_run"] else "freed"
        out(f"  {slot['pool']}:{slot['step']} of run {slot['run_id']} ({slot['run_status']}) → {action}")
    lease_info = data["leases"]
    if lease_info.get("error"):
        out(f"Core leases: cannot read the lock directory: {lease_info['error']}")
        return
    out(f"Core leases ({lease_info['lock_dir']}):" + ("" if lease_info["held"] else " none held"))
    for rec in lease_info["held"]:
        note = f"; {rec['note']}" if rec["note"] else ""
        out(
            f"  {rec.get('kind')} {rec.get('cores')}: {rec.get('holder')} (pid {rec.get('pid')} {rec['pid_state']} "
            f"on {rec.get('host', '?')}, since {rec.get('since', '?')}, until {rec.get('until', '?')}{note})"
        )


def describe(run: dict[str, Any]) -> str:
    procs = ", ".join(f"pid {pid} {state}" for pid, state in sorted(run["pids"].items())) or "no pid recorded"
    steps = ", ".join(run["steps_in_progress"]) or "none"
    slots = ", ".join(f"{pool}:{step}" for pool, step in run["slots"]) or "none"
    return f"run {run['run_id']} ({run['job_name']}): {procs}; steps in progress: {steps}; slots: {slots}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuronforge-doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="report only; mark nothing failed, free nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--lock-dir", help="the lease lock directory (default: as NeuronResource: node-local)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        instance = dg.DagsterInstance.get()
    except dg.DagsterInvariantViolationError as exc:  # DAGSTER_HOME unset or not a directory
        print(f"cannot open the Dagster instance: {exc}\nRun `make doctor` (it sets DAGSTER_HOME).", file=sys.stderr)
        return 2
    with instance:
        found = repair(instance, by="neuronforge-doctor", dry_run=args.dry_run, log=log)
        data = report(instance, found, args.dry_run, args.lock_dir)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print_report(data)
    return 1 if args.dry_run and found.problems else 0


if __name__ == "__main__":
    sys.exit(main())
