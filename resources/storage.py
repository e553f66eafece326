"""Where stage outputs live on disk, and the stage records that say which output each materialization produced.

Layout under the data directory (NEURONFORGE_HOME, default .neuronforge/):
  artifacts/<model>/<compile_key>/   exported artifact folders (immutable once written)
  stages/<stage>/<name>/             other stage outputs (embeddings, index, eval results)
  records/<stage>/<name>/<key>.json  one record per output (neuronforge/records.py); the materialization names it
A partitioned asset (the corpus stages) writes one record per partition, under `<name>/<partition>`, and names it in
that partition's materialization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from neuronforge.paths import data_dir
from neuronforge.records import RecordMissingError, RecordStore, StageRecord, asset_name, partition_name

RECORD_KEY = "record_key"  # the materialization metadata entry that names the asset's record


def record_ref(asset_key: dg.AssetKey) -> tuple[str, str]:
    """(stage, name) of an asset's records: `<model>/<stage>` → (stage, model); a one-part key → (key, "default")."""
    *name, stage = asset_key.path
    return stage, "/".join(name) or "default"


def _materialization_in_run(
    instance: dg.DagsterInstance, run_id: str, asset_key: dg.AssetKey, partition: str | None
) -> dg.AssetMaterialization | None:
    events = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    found = None
    for event in events:
        materialization = event.event_log_entry.asset_materialization
        if materialization and materialization.asset_key == asset_key and materialization.partition == partition:
            found = materialization  # the last one wins (a step retried within the run)
    return found


def _latest_materialization(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str | None
) -> dg.AssetMaterialization | None:
    if partition is None:
        event = instance.get_latest_materialization_event(asset_key)
        return event.asset_materialization if event else None
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    )
    return result.records[0].asset_materialization if result.records else None


class StorageResource(dg.ConfigurableResource):
    """The project's data directory. `root` defaults to NEURONFORGE_HOME or .neuronforge/ in the repository."""

    root: str | None = None

    @property
    def base(self) -> Path:
        base = Path(self.root).resolve() if self.root else data_dir()
        base.mkdir(parents=True, exist_ok=True)
        return base

    @property
    def records(self) -> RecordStore:
        return RecordStore(self.base)

    def path(self, *parts: str) -> Path:
        """A directory under the data directory, created on first use."""
        path = self.base.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifact_dir(self, model: str, compile_key: str) -> Path:
        return self.path("artifacts", model) / compile_key

    def stage_dir(self, stage: str, name: str) -> Path:
        return self.path("stages", stage, name)

    def write_record(
        self, asset_key: dg.AssetKey, key: str, data: dict[str, Any], *, partition: str | None = None
    ) -> StageRecord:
        stage, name = record_ref(asset_key)
        return self.records.write(stage, partition_name(name, partition), key, data)

    def record_for(
        self,
        context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | dg.OpExecutionContext,
        asset_key: dg.AssetKey,
        *,
        partition: str | None = None,
    ) -> StageRecord:
        """The record of `asset_key` that this step must read: the one its materialization in this run named (a
        check judges its own run's output), else the one its latest materialization named (an upstream asset
        materialized by an earlier run)."""
        stage, name = record_ref(asset_key)
        instance = context.instance
        materialization = _materialization_in_run(instance, context.run.run_id, asset_key, partition)
        materialization = materialization or _latest_materialization(instance, asset_key, partition)
        if materialization is None:
            which = f" partition {partition}" if partition else ""
            raise RecordMissingError(
                f"{asset_key.to_user_string()}{which} has never been materialized in this Dagster instance; "
                f"materialize {asset_name(stage, name)}{which} first (`make run` materializes everything)"
            )
        entry = materialization.metadata.get(RECORD_KEY)
        if entry is None:
            raise RecordMissingError(
                f"the latest materialization of {asset_key.to_user_string()} names no record (made by an older "
                f"neuronforge); materialize {asset_name(stage, name)} again"
            )
        return self.records.read(stage, partition_name(name, partition), str(entry.value))

    def partition_records(
        self,
        context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | dg.OpExecutionContext,
        asset_key: dg.AssetKey,
        partitions: list[str],
    ) -> list[StageRecord]:
        """`record_for` of every partition of a partitioned asset, in partition order."""
        return [self.record_for(context, asset_key, partition=p) for p in partitions]

    def partitions_in_run(
        self, context: dg.AssetCheckExecutionContext | dg.AssetExecutionContext, asset_key: dg.AssetKey
    ) -> set[str]:
        """The partitions of `asset_key` that this step's run materialized."""
        events = context.instance.get_records_for_run(
            context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        found = (e.event_log_entry.asset_materialization for e in events)
        return {m.partition for m in found if m and m.asset_key == asset_key and m.partition is not None}

    def has_materialization(
        self, context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey, *, partition: str | None = None
    ) -> bool:
        return _latest_materialization(context.instance, asset_key, partition) is not None

    def current_record(self, asset_key: dg.AssetKey, *, partition: str | None = None) -> StageRecord | None:
        """The last finished output of `asset_key` (of one partition) on disk (what sensors look at), or None."""
        stage, name = record_ref(asset_key)
        return self.records.current_or_none(stage, partition_name(name, partition))


def record_metadata(record: StageRecord) -> dict[str, Any]:
    """The metadata entries that name a record: every asset returns them beside its own."""
    return {RECORD_KEY: record.key, "record": dg.MetadataValue.path(str(record.path))}
