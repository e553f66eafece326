"""The corpus partitions in Dagster: corpus_embeddings and sparse_index are partitioned by hash buckets of the
document id (neuronforge/partitions.py; how many: `partitions` in corpus.yaml).

Backfill policy: single run by default, so `make run`, the schedules and the sensors build every partition in one run
(one step per stage, the partitions one after another, each with its own record, shards and index segment). A fleet
deployment passes `BackfillPolicy.multi_run(1)` to `build_definitions(corpus_backfill=...)`, and a backfill then runs
each partition as its own run (with the k8s executor, its own pods).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg

from neuronforge.artifacts import stable_hash
from neuronforge.partitions import Partition, partition_keys
from neuronforge.records import StageRecord
from resources.storage import StorageResource

PARTITIONED_STAGES = ("corpus_embeddings", "sparse_index")
# Dagster's own run tags for a partition range (what a single-run backfill launches), dagster/_core/storage/tags.py.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"


def corpus_partitions(count: int) -> dg.StaticPartitionsDefinition:
    """Partition keys "0-of-N" .. "N-1-of-N" (each key says which bucket of how many it is)."""
    return dg.StaticPartitionsDefinition(partition_keys(count))


def partitioned(partitions_def: dg.PartitionsDefinition, backfill_policy: dg.BackfillPolicy | None) -> dict[str, Any]:
    """The @dg.asset arguments of a partitioned corpus stage."""
    return {"partitions_def": partitions_def, "backfill_policy": backfill_policy or dg.BackfillPolicy.single_run()}


def all_partitions_tags(partitions_def: dg.PartitionsDefinition) -> dict[str, str]:
    """Run tags that cover every partition in one run."""
    keys = partitions_def.get_partition_keys()
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def selects_partitioned(keys: Iterable[dg.AssetKey]) -> bool:
    return any(key.path[-1] in PARTITIONED_STAGES for key in keys)


def partition_tags(keys: Iterable[dg.AssetKey], partitions_def: dg.PartitionsDefinition) -> dict[str, str]:
    """The tags a run request selecting `keys` needs: every partition, when it selects a partitioned stage."""
    return all_partitions_tags(partitions_def) if selects_partitioned(keys) else {}


def step_data_version(records: list[StageRecord]) -> dg.DataVersion:
    """The data version of a step that materialized these partitions (Dagster gives a step's partitions one): their
    records' keys, so an unchanged re-run keeps it and downstream automation sees no change."""
    return dg.DataVersion(stable_hash([[r.partition, r.key] for r in records]))


def records_to_judge(
    context: dg.AssetCheckExecutionContext, storage: StorageResource, key: dg.AssetKey, all_keys: list[str]
) -> list[StageRecord]:
    """What a check of a partitioned asset judges: the partitions its run materialized; run on its own, the latest
    record of every partition that has one."""
    in_run = storage.partitions_in_run(context, key)
    partitions = [p for p in all_keys if p in in_run] or [
        p for p in all_keys if storage.has_materialization(context, key, partition=p)
    ]
    return storage.partition_records(context, key, partitions)


def partition_documents(corpus_record: StageRecord, partition: str) -> int | None:
    """About how many documents a partition holds (for the progress estimate): the corpus's share per bucket."""
    documents = corpus_record.get("documents")
    return documents // Partition.parse(partition).count if documents else None


def read_partition_shards(records: list[StageRecord], columns: list[str]) -> Any:
    """The shards every record lists, partition after partition, as one table (`columns` only; empty partitions of a
    small corpus add nothing)."""
    import pyarrow as pa

    from neuronforge.shards import read_shards

    tables = [read_shards(r.path_of("dir"), columns, r["shards"]) for r in records if r["shards"]]
    return pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.null()) for c in columns})
