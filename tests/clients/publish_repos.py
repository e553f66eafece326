"""Publish the built-in models' CPU artifacts to a loopback Hub through the real pipeline, then run a command (the
client venv's tests) against that Hub, as a user's machine would see it.

    python tests/clients/publish_repos.py [--work DIR] -- <command...>

Runs source_model → export (and its parity check) → publish for every model in models.yaml, on a fresh data
directory and a fresh Hub, writes <work>/repos.json (repo id, tag, the source model's local folder for each kind) and
runs the command with HF_ENDPOINT and NEURONFORGE_CLIENT_REPOS set; exits with the command's status.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def publish_all(work: Path, hub_url: str) -> dict[str, dict[str, str]]:
    import dagster as dg

    from neuronforge.records import RecordStore
    from neuronforge.registry import load_registry
    from pipelines.definitions import build_definitions
    from resources.devices import NeuronResource
    from resources.hub import HubResource
    from resources.storage import StorageResource

    root = work / "data"
    registry = load_registry(os.environ.get("NEURONFORGE_MODELS") or None)
    defs = build_definitions(
        registry,
        resources={
            "storage": StorageResource(root=str(root)),
            "hub": HubResource(endpoint=hub_url),
            "neuron": NeuronResource(lock_dir=str(root / "locks")),
        },
    )
    keys = [dg.AssetKey([m.name, stage]) for m in registry.models for stage in ("source_model", "export", "publish")]
    job = dg.define_asset_job("client_repos", selection=dg.AssetSelection.assets(*keys))
    result = (
        dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
        .resolve_job_def("client_repos")
        .execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=True,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    )
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    if failed:
        raise SystemExit(f"checks failed while publishing the client repos: {failed}")
    records = RecordStore(root)
    repos = {}
    for spec in registry.models:
        published, exported = records.current("publish", spec.name), records.current("export", spec.name)
        repos[spec.name] = {
            "kind": spec.kind,
            "backend": exported["backend"],
            "format": exported["format"],
            "repo_id": published["repo_id"],
            "tag": published["tag"],
            "source_dir": exported["source_path"],
        }
    return repos


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default $NEURONFORGE_HOME/clients)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    from neuronforge.hub import HubServer
    from neuronforge.paths import subdir

    work = (args.work or subdir("clients")).resolve()
    shutil.rmtree(work, ignore_errors=True)  # a fresh data directory and Hub: every repo is published now
    work.mkdir(parents=True)
    with HubServer(work / "hub") as hub:
        started = time.perf_counter()
        repos = publish_all(work, hub.url)
        print(f"published {len(repos)} repos to {hub.url} in {time.perf_counter() - started:.0f}s", flush=True)
        (work / "repos.json").write_text(json.dumps({"endpoint": hub.url, "repos": repos}, indent=2))
        env = {**os.environ, "HF_ENDPOINT": hub.url, "NEURONFORGE_CLIENT_REPOS": str(work / "repos.json")}
        env["HF_HOME"] = str(work / "hf-home")  # an empty cache: everything comes from the Hub
        for name in ("HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE", "HF_TOKEN", "PYTHONPATH", "VIRTUAL_ENV"):
            env.pop(name, None)  # as on a user's machine: nothing of ours leaks into the client
        return subprocess.run(command, env=env, cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
