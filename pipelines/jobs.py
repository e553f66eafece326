"""Asset jobs the schedules and sensors launch, and the asset selections they share.

Every run request names the exact assets it needs (`asset_selection`); the job only bounds what it may contain and
gives the runs a readable name in the UI. Checks of the selected assets run in the same run, so a blocking check (export
parity, the chat smoke evaluation) still gates publish and the retrieval stages.
"""

from __future__ import annotations

import functools

import dagster as dg

from assets.partitions import PARTITION_TAG, RANGE_START_TAG, all_partitions_tags
from neuronforge.registry import ModelSpec, Registry
from resources.storage import StorageResource

RECOMPILE_PREFIX = "recompile_"
CORPUS_REFRESH_JOB = "corpus_refresh"
CHAT_EVAL_JOB = "chat_eval"

STAGE_BY_KIND = {"dense": "corpus_embeddings", "sparse": "sparse_index", "chat": "chat_smoke_eval"}
CORPUS = dg.AssetKey("corpus")
RETRIEVAL_EVAL = dg.AssetKey("retrieval_eval")


def stage_key(spec: ModelSpec) -> dg.AssetKey:
    """The model's own downstream stage: embeddings, sparse index or chat smoke evaluation."""
    return dg.AssetKey([spec.name, STAGE_BY_KIND[spec.kind]])


def recompile_keys(spec: ModelSpec, *, include_source: bool = True) -> list[dg.AssetKey]:
    """source_model → export → the model's stage → publish (publish of a chat model waits for its evaluation)."""
    keys = [dg.AssetKey([spec.name, "source_model"])] if include_source else []
    return [*keys, dg.AssetKey([spec.name, "export"]), stage_key(spec), dg.AssetKey([spec.name, "publish"])]


def with_all_partitions(job: dg.JobDefinition, tags: dict[str, str]) -> dict[str, str]:
    """Run tags for `job`: when it holds the partitioned corpus stages and the tags name no partition, every partition
    in one run (what a single-run backfill launches), so `make run` needs no partition chosen."""
    if job.partitions_def is None or PARTITION_TAG in tags or RANGE_START_TAG in tags:
        return tags
    return {**tags, **all_partitions_tags(job.partitions_def)}


def has_export(storage: StorageResource, name: str) -> bool:
    return storage.current_record(dg.AssetKey([name, "export"])) is not None


def corpus_refresh_keys(registry: Registry, storage: StorageResource) -> tuple[list[dg.AssetKey], list[str]]:
    """corpus, the embeddings / sparse index of every exported retrieval model, and retrieval_eval when every
    retrieval model takes part (it reads all of their outputs). Returns (keys, models left out: not exported yet)."""
    retrieval = [m for m in registry.models if m.kind in ("dense", "sparse")]
    exported = [m for m in retrieval if has_export(storage, m.name)]
    keys = [CORPUS, *(stage_key(m) for m in exported)]
    if exported and len(exported) == len(retrieval):
        keys.append(RETRIEVAL_EVAL)
    return keys, [m.name for m in retrieval if m not in exported]


def recompile_job_name(spec: ModelSpec) -> str:
    return f"{RECOMPILE_PREFIX}{spec.name}"


# Cached: the sensors and schedules that target a job must share one definition of it.
@functools.cache
def recompile_jobs(registry: Registry) -> list[dg.UnresolvedAssetJobDefinition]:
    """One recompile job per model, so a run (and each row of a sensor's preview, which shows only the job's name)
    says which model it rebuilds: recompile_<model>."""
    return [
        dg.define_asset_job(
            recompile_job_name(spec),
            selection=dg.AssetSelection.assets(*recompile_keys(spec)),
            description=f"Recompile {spec.name} (source_model → export → {stage_key(spec).path[-1]} → publish); "
            "launched by the upstream-revision, toolchain and models.yaml sensors.",
            tags={"neuronforge/job": "recompile", "neuronforge/model": spec.name},
        )
        for spec in registry.models
    ]


@functools.cache
def corpus_refresh_job(registry: Registry) -> dg.UnresolvedAssetJobDefinition:
    retrieval = [m for m in registry.models if m.kind in ("dense", "sparse")]
    keys = [CORPUS, *(stage_key(m) for m in retrieval)] + ([RETRIEVAL_EVAL] if retrieval else [])
    return dg.define_asset_job(
        CORPUS_REFRESH_JOB,
        selection=dg.AssetSelection.assets(*keys),
        description="Re-read the corpus, embed / index only new content, and re-score retrieval.",
        tags={"neuronforge/job": CORPUS_REFRESH_JOB},
    )


@functools.cache
def chat_eval_job(registry: Registry) -> dg.UnresolvedAssetJobDefinition | None:
    chat = registry.of_kind("chat")
    if not chat:
        return None
    return dg.define_asset_job(
        CHAT_EVAL_JOB,
        selection=dg.AssetSelection.assets(*(stage_key(m) for m in chat)),
        description="The smoke evaluation (and its checks) of every chat model's current artifact.",
        tags={"neuronforge/job": CHAT_EVAL_JOB},
    )
