"""A job of the partitioned corpus stages for test_partitioned_backfill.py, reconstructable in the multiprocess
executor's step processes: everything it needs comes from the environment the test sets (NEURONFORGE_MODELS,
NEURONFORGE_HOME, NEURONFORGE_CORPUS), as a deployment's code location gets it."""

from __future__ import annotations

import dagster as dg

CORPUS_STAGES = "corpus_stages"


def corpus_stages_job() -> dg.JobDefinition:
    from assets.partitions import PARTITIONED_STAGES
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[-1] in PARTITIONED_STAGES]
    job = dg.define_asset_job(CORPUS_STAGES, selection=dg.AssetSelection.assets(*keys))
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(CORPUS_STAGES)
