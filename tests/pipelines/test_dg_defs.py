"""`dg list defs --json` against a committed snapshot, so every wiring change (an asset, a dependency, a group, a kind,
a check, a job, a schedule, a sensor) shows up in review as a diff of dg_list_defs.snapshot.json.

After an intended change: `NEURONFORGE_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest tests/pipelines/test_dg_defs.py`
and commit the rewritten snapshot with the change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("dg_list_defs.snapshot.json")


def owner_name(owner: dict[str, str] | str) -> str:
    """dg lists owners as {"team": name} or {"email": address}."""
    if isinstance(owner, str):
        return owner
    return f"team:{owner['team']}" if "team" in owner else owner["email"]


def wiring(listed: dict[str, Any]) -> dict[str, Any]:
    """What the wiring is made of; descriptions are left out (prose changes are not wiring changes)."""
    return {
        "assets": {
            a["asset_key"]: {
                "group": a["group_name"],
                "kinds": sorted(a["kinds"]),
                "deps": sorted(a["dependency_keys"]),
                "owners": sorted(owner_name(o) for o in a["owners"]),
                "automation": " ".join((a.get("automation_condition") or {}).get("expanded_label") or []) or None,
            }
            for a in listed["assets"]
        },
        "asset_checks": sorted(c["key"] for c in listed["asset_checks"]),
        "jobs": sorted(j["name"] for j in listed["jobs"]),
        "schedules": {s["name"]: s["cron_schedule"] for s in listed["schedules"]},
        "sensors": sorted(s["name"] for s in listed["sensors"]),
        "resources": sorted(r["name"] for r in listed["resources"]),
    }


def test_dg_list_defs_matches_the_snapshot(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-local.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "VIRTUAL_ENV": str(venv)}
    env.pop("NEURONFORGE_MODELS", None)  # the repository's models.yaml
    done = subprocess.run(
        [str(venv / "bin" / "dg"), "list", "defs", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    current = wiring(json.loads(done.stdout))
    if os.environ.get("NEURONFORGE_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the code location's wiring differs from tests/pipelines/dg_list_defs.snapshot.json; if intended, rerun with "
        "NEURONFORGE_UPDATE_SNAPSHOT=1 and commit the snapshot"
    )
    # dg sees every part of the location.
    assert {"default_pipeline", "recompile_all_minilm_l6_v2", "corpus_refresh"} <= set(current["jobs"])
    assert "default_automation_sensor" in current["sensors"]
