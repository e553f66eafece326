"""Schedules: a nightly corpus refresh and a weekly chat smoke evaluation (UTC; both start STOPPED).

Each tick selects only what can run: the stages of models that have an export (a fresh deployment has none), so a
scheduled run never fails on a missing artifact; models left out are named in the tick's log.
"""

from __future__ import annotations

import dagster as dg

from assets.partitions import partition_tags
from neuronforge.registry import Registry
from pipelines.jobs import chat_eval_job, corpus_refresh_job, corpus_refresh_keys, has_export, stage_key
from resources.storage import StorageResource

NIGHTLY_CORPUS_CRON = "0 2 * * *"  # 02:00 UTC every day
WEEKLY_CHAT_CRON = "0 4 * * 1"  # 04:00 UTC every Monday
TIMEZONE = "UTC"


def build_nightly_corpus_refresh(registry: Registry, partitions: dg.PartitionsDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="nightly_corpus_refresh",
        cron_schedule=NIGHTLY_CORPUS_CRON,
        execution_timezone=TIMEZONE,
        job=corpus_refresh_job(registry),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="corpus → embeddings / sparse index of every exported retrieval model → retrieval_eval, nightly. "
        "Embedding shards are content-addressed, so an unchanged corpus costs a re-read, not a re-encode.",
    )
    def nightly_corpus_refresh(context: dg.ScheduleEvaluationContext, storage: StorageResource) -> dg.RunRequest:
        keys, not_exported = corpus_refresh_keys(registry, storage)
        if not_exported:
            context.log.info(
                f"left out until exported: {', '.join(not_exported)} (and retrieval_eval, which reads all)"
            )
        tags = {"neuronforge/trigger": "nightly_corpus_refresh", **partition_tags(keys, partitions)}
        return dg.RunRequest(asset_selection=keys, tags=tags)

    return nightly_corpus_refresh


def build_weekly_chat_eval(registry: Registry) -> dg.ScheduleDefinition | None:
    job = chat_eval_job(registry)
    if job is None:
        return None

    @dg.schedule(
        name="weekly_chat_smoke_eval",
        cron_schedule=WEEKLY_CHAT_CRON,
        execution_timezone=TIMEZONE,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="The chat smoke evaluation (and its checks) of every exported chat model, weekly: catches "
        "latency or output drift of the current artifacts on this host.",
    )
    def weekly_chat_smoke_eval(
        context: dg.ScheduleEvaluationContext, storage: StorageResource
    ) -> dg.RunRequest | dg.SkipReason:
        chat = registry.of_kind("chat")
        exported = [m for m in chat if has_export(storage, m.name)]
        if not exported:
            names = ", ".join(f"{m.name}/export" for m in chat)
            return dg.SkipReason(f"no chat model is exported yet; materialize {names} first")
        return dg.RunRequest(
            asset_selection=[stage_key(m) for m in exported], tags={"neuronforge/trigger": "weekly_chat_smoke_eval"}
        )

    return weekly_chat_smoke_eval


def build_schedules(registry: Registry, partitions: dg.PartitionsDefinition) -> list[dg.ScheduleDefinition]:
    """Every schedule of the code location (`partitions`: the corpus partitions, all refreshed in one run)."""
    weekly = build_weekly_chat_eval(registry)
    return [build_nightly_corpus_refresh(registry, partitions), *([weekly] if weekly else [])]
