"""Helpers for whole-pipeline tests: real definitions with scratch resources, and result accessors."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipelines.jobs import with_all_partitions


def pipeline_resources(root: Path, hub_url: str) -> dict[str, object]:
    from resources.devices import NeuronResource
    from resources.hub import HubResource
    from resources.storage import StorageResource

    return {
        "storage": StorageResource(root=str(root)),
        "hub": HubResource(endpoint=hub_url),
        "neuron": NeuronResource(lock_dir=str(root / "locks")),
    }


# One Dagster instance per set of definitions (i.e. per data directory), as in a deployment: later runs read the
# stage records that earlier runs' materializations named.
_INSTANCES: dict[int, dg.DagsterInstance] = {}


def instance_for(defs: dg.Definitions) -> dg.DagsterInstance:
    return _INSTANCES.setdefault(id(defs), dg.DagsterInstance.ephemeral())


def materialize(
    defs: dg.Definitions,
    selection: dg.AssetSelection,
    run_config: dict | None = None,
    instance: dg.DagsterInstance | None = None,
):
    """Run `selection` in process (on `instance`, default the one of `defs`), every corpus partition in one run."""
    job = dg.define_asset_job("e2e", selection=selection)
    merged = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    job_def = merged.resolve_job_def("e2e")
    return job_def.execute_in_process(
        instance=instance or instance_for(defs),
        raise_on_error=False,
        run_config=run_config or {},
        tags=with_all_partitions(job_def, {}),  # every corpus partition in this one run, as `make run` does
    )


def metadata(result, key: str) -> dict:
    events = [
        e for e in result.get_asset_materialization_events() if e.materialization.asset_key.to_user_string() == key
    ]
    assert events, f"{key} was not materialized"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def checks(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}
