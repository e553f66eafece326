"""Prepare a Dagster instance for this project: `python -m pipelines.instance` (make run / make ui do it).

Automation here runs through `default_automation_sensor` (sensor-based declarative automation). The UI's job and
asset-group pages still show the legacy asset daemon's pause flag as an "Auto-materialize off" tag, and a never-set
flag reads as paused although the sensor evaluates every condition. Clearing it makes the tag say what is true.
"""

from __future__ import annotations

import dagster as dg


def clear_legacy_automation_pause(instance: dg.DagsterInstance) -> None:
    from dagster._daemon.asset_daemon import get_auto_materialize_paused, set_auto_materialize_paused

    if get_auto_materialize_paused(instance):
        set_auto_materialize_paused(instance, False)


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        clear_legacy_automation_pause(instance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
