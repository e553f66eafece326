"""corpus_embeddings: dense embeddings of every corpus chunk, through the model's exported artifact."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets.common import (
    ROW_COUNT,
    code_version_metadata,
    encode_stage_shards,
    plot_metadata,
    replica_metadata,
    shard_record,
    stage_asset,
    stage_inputs,
    upstream_records,
)
from assets.partitions import (
    partition_documents,
    partitioned,
    read_partition_shards,
    records_to_judge,
    step_data_version,
)
from neuronforge import plots
from neuronforge.artifacts import read_manifest, stable_hash
from neuronforge.records import StageRecord
from neuronforge.registry import ModelSpec
from resources.corpus import CorpusResource
from resources.devices import NeuronResource
from resources.storage import StorageResource, record_metadata

if TYPE_CHECKING:
    from neuronforge.shards import ShardRun  # pyarrow: not at definitions load


def build_embeddings_asset(
    spec: ModelSpec, partitions_def: dg.PartitionsDefinition, backfill_policy: dg.BackfillPolicy | None = None
) -> dg.AssetsDefinition:
    @stage_asset(
        spec,
        "corpus_embeddings",
        reads_corpus=True,
        kinds={"parquet", "numpy"},
        description="Dense embeddings of every corpus chunk (Parquet shards; resumable, only new content encoded), "
        "one partition per hash bucket of the document id.",
        **partitioned(partitions_def, backfill_policy),
    )
    def corpus_embeddings(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        corpus: CorpusResource,
        neuron: NeuronResource,
    ):
        exported, corpus_record = upstream_records(context, storage, spec)
        artifact_dir, manifest = exported.path_of("artifact_dir"), read_manifest(exported.path_of("artifact_dir"))
        records = []
        for partition in context.partition_keys:  # one in a multi-run backfill; all of them in `make run`
            out_dir = storage.stage_dir("corpus_embeddings", spec.name) / partition
            run, lease, _ = encode_stage_shards(
                context,
                spec,
                neuron,
                corpus,
                artifact_dir,
                manifest,
                corpus_record.path_of("path"),
                out_dir,
                partition_documents(corpus_record, partition),
                partition=partition,
            )
            record, metadata = partition_record(context, storage, exported, corpus_record, out_dir, run, partition)
            records.append(record)
            context.add_asset_metadata({**metadata, **lease.metadata()}, partition_key=partition)
        return dg.MaterializeResult(
            data_version=step_data_version(records),
            metadata=code_version_metadata(context, stage_inputs("corpus_embeddings", corpus, spec)),
        )

    return corpus_embeddings


def partition_record(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    exported: StageRecord,
    corpus_record: StageRecord,
    out_dir: Path,
    run: "ShardRun",
    partition: str,
) -> tuple[StageRecord, dict[str, Any]]:
    """The record of one partition's embeddings (in `out_dir`) and its materialization metadata."""
    import numpy as np

    from neuronforge.shards import dense_matrix, read_shards

    table = read_shards(out_dir, ["doc_id", "char_start", "char_end", "vector"], run.shards)
    vectors = dense_matrix(table) if table.num_rows else np.zeros((0, 0), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    lengths = np.asarray(table.column("char_end")) - np.asarray(table.column("char_start")) if table.num_rows else []
    sources = [plots.source_label(d) for d in table.column("doc_id").to_pylist()] if table.num_rows else []
    record = storage.write_record(
        context.asset_key,
        # Shard names hash the compile key and every chunk: the same content always gives the same record.
        stable_hash([exported["compile_key"], run.shards]),
        {
            **shard_record(out_dir, run),
            "partition": partition,
            "compile_key": exported["compile_key"],
            "artifact_dir": exported["artifact_dir"],
            "corpus_fingerprint": corpus_record.key,
            "source_path": exported["source_path"],
        },
        partition=partition,
    )
    plotted = {}
    if table.num_rows:
        plotted = {
            **plot_metadata("chunk_lengths", plots.chunk_length_histogram(lengths), "chunk length distribution"),
            **plot_metadata("projection", plots.projection(vectors, sources), "2-D projection of the embeddings"),
        }
    return record, {
        **record_metadata(record),
        "dir": dg.MetadataValue.path(str(out_dir)),
        "documents": run.documents,
        "chunks": run.chunks,
        "dimension": int(vectors.shape[1]) if vectors.size else 0,
        "shards": len(run.shards),
        "shards_reused": run.reused,
        "chunks_encoded": run.encoded_chunks,
        "chunks_per_s": round(run.chunks_per_s, 1),
        "norm_min": float(norms.min()) if norms.size else 0.0,
        "norm_mean": float(norms.mean()) if norms.size else 0.0,
        "norm_max": float(norms.max()) if norms.size else 0.0,
        ROW_COUNT: dg.MetadataValue.int(run.chunks),
        **plotted,
        **replica_metadata(run),
    }


def build_embeddings_checks(spec: ModelSpec, partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey([spec.name, "corpus_embeddings"])

    @dg.asset_check(asset=key, name="complete_and_finite", blocking=True)
    def complete_and_finite(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        """One embedding per chunk listed, no NaN/inf, and unit norm when the model normalises (every partition this
        run materialized)."""
        import numpy as np

        from neuronforge.shards import dense_matrix

        records = records_to_judge(context, storage, key, partitions_def.get_partition_keys())
        listed = sum(r["chunks"] for r in records)
        table = read_partition_shards(records, ["chunk_id", "vector"])
        vectors = dense_matrix(table) if table.num_rows else np.zeros((0, 0), dtype=np.float32)
        unique_ids = len(set(table.column("chunk_id").to_pylist()))
        finite = bool(np.isfinite(vectors).all())
        norms = np.linalg.norm(vectors, axis=1)
        modules = records[0].path_of("source_path") / "modules.json" if records else None
        normalises = modules is not None and modules.is_file() and "Normalize" in modules.read_text()
        unit = bool(np.allclose(norms, 1.0, atol=1e-3)) if normalises else True
        max_norm_error = float(np.abs(norms - 1).max()) if norms.size else 0.0
        passed = bool(records) and table.num_rows == listed == unique_ids and finite and unit
        norm_clause = (
            f"max |norm - 1| = {max_norm_error:.2g} (≤ 1e-3 required: the model normalises)"
            if normalises
            else "norms not judged (the model does not normalise)"
        )
        return dg.AssetCheckResult(
            passed=passed,
            description=f"{len(records)} partitions: {table.num_rows} embedding rows for {listed} listed chunks "
            f"({unique_ids} unique ids; all three must be equal), {'all' if finite else 'NOT all'} finite, "
            f"{norm_clause}.",
            metadata={
                "rows": table.num_rows,
                "chunks_listed": listed,
                "unique_chunk_ids": unique_ids,
                "finite": finite,
                "model_normalises": normalises,
                "max_norm_error": max_norm_error,
                "record_keys": dg.MetadataValue.json({r.partition: r.key for r in records}),
            },
        )

    return [complete_and_finite]
