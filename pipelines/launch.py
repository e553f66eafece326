"""`make run`: run a job of the `neuronforge` code location in the foreground, recorded as the UI records its runs.

`dagster job execute` and `dg launch` run a job from a Python pointer and store the run without its code location
(`repositoryOrigin: null`), so the run shows under Runs but never on the Overview timeline or the job's page, which
filter on the `.dagster/repository` tag (dagster-io/dagster#17707, open). Here the run is created with the remote
origin of the location that workspace.yaml declares — the same origin `dagster dev` loads — and then executed in this
process, as the run worker would execute it.

    python -m pipelines.launch [JOB] [--workspace workspace.yaml] [--tag key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

import dagster as dg

from neuronforge.registry import RegistryError, load_registry
from pipelines.dead_runs import HOST_TAG, repair
from pipelines.jobs import with_all_partitions

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JOB = "default_pipeline"


def code_location_origin(workspace: Path):
    """The (only) python_module location of the workspace file, as `dagster dev -w` builds it."""
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    origins = location_origins_from_yaml_paths([str(workspace)])
    if len(origins) != 1:
        raise SystemExit(f"{workspace}: expected one code location, found {[o.location_name for o in origins]}")
    origin = origins[0]
    target = getattr(origin, "loadable_target_origin", None)
    if target is None or not target.module_name:
        raise SystemExit(f"{workspace}: the location must load a python_module (found {type(origin).__name__})")
    return origin


def launch(job_name: str, workspace: Path, tags: dict[str, str]) -> dg.ExecutionResult:
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import RemoteRepositoryOrigin

    origin = code_location_origin(workspace)
    target = origin.loadable_target_origin
    working_directory = str((workspace.parent / (target.working_directory or ".")).resolve())
    sys.path.insert(0, working_directory)
    repository = ReconstructableRepository.for_module(
        target.module_name, target.attribute or "defs", working_directory=working_directory
    )
    repository_def = repository.get_definition()
    if job_name not in repository_def.job_names:
        known = ", ".join(sorted(n for n in repository_def.job_names if not n.startswith("__")))
        raise SystemExit(f"no job {job_name!r} in code location {origin.location_name!r}; jobs: {known}")
    recon_job = repository.get_reconstructable_job(job_name)
    remote_origin = RemoteRepositoryOrigin(origin, repository_def.name).get_job_origin(job_name)
    with dg.DagsterInstance.get() as instance:
        # Runs killed without a trace (kill -9) would hold the pool slots this run needs: repair first, as the
        # dead-run sensor would if a daemon ran. The host tag lets a shared instance judge this run later.
        repair(instance, by="make run", log=logging.getLogger("neuronforge.launch"))
        job_def = recon_job.get_definition()
        run = instance.create_run_for_job(
            job_def=job_def,
            # the corpus stages: every partition, in this one run
            tags=with_all_partitions(job_def, {HOST_TAG: socket.gethostname(), **tags}),
            remote_job_origin=remote_origin,
            job_code_origin=recon_job.get_python_origin(),
        )
        print(f"run {run.run_id} of {job_name} in code location {origin.location_name!r}", file=sys.stderr)
        return execute_run(recon_job, run, instance)


def parse_tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--tag {pair!r}: write key=value")
        tags[key] = value
    return tags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default=DEFAULT_JOB)
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT / "workspace.yaml")
    parser.add_argument("--tag", action="append", default=[], help="a run tag, key=value (repeatable)")
    args = parser.parse_args(argv)
    try:
        # The UI keeps serving the last valid models.yaml while it is broken; a command run on purpose stops instead.
        load_registry(os.environ.get("NEURONFORGE_MODELS") or None)
    except RegistryError as exc:
        print(f"{exc}\nFix models.yaml, then run again.", file=sys.stderr)
        return 2
    result = launch(args.job, args.workspace.resolve(), {"neuronforge/launched_by": "make run", **parse_tags(args.tag)})
    if not result.success:
        print(f"run {result.run_id} failed; open it in the UI (`make ui`) under Runs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
