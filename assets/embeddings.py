"""corpus_embeddings: dense embeddings of every corpus chunk, through the model's exported artifact."""

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
from neuronforge import plots
from neuronforge.artifacts import read_manifest, stable_hash
from neuronforge.registry import ModelSpec
from resources.corpus import CorpusResource
from resources.devices import NeuronResource
from resources.storage import StorageResource, record_metadata


def build_embeddings_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @stage_asset(
        spec,
        "corpus_embeddings",
        reads_corpus=True,
        kinds={"parquet", "numpy"},
        description="Dense embeddings of every corpus chunk (Parquet shards; resumable, only new content encoded).",
    )
    def corpus_embeddings(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        corpus: CorpusResource,
        neuron: NeuronResource,
    ):
        import numpy as np

        from neuronforge.shards import dense_matrix, read_shards

        exported, corpus_record = upstream_records(context, storage, spec)
        artifact_dir, manifest = exported.path_of("artifact_dir"), read_manifest(exported.path_of("artifact_dir"))
        source = corpus_record.path_of("path")
        out_dir = storage.stage_dir("corpus_embeddings", spec.name)
        run, lease, _ = encode_stage_shards(
            context, spec, neuron, corpus, artifact_dir, manifest, source, out_dir, corpus_record.get("documents")
        )
        table = read_shards(out_dir, ["doc_id", "char_start", "char_end", "vector"], run.shards)
        vectors = dense_matrix(table)
        norms = np.linalg.norm(vectors, axis=1)
        lengths = np.asarray(table.column("char_end")) - np.asarray(table.column("char_start"))
        sources = [plots.source_label(d) for d in table.column("doc_id").to_pylist()]
        record = storage.write_record(
            context.asset_key,
            # Shard names hash the compile key and every chunk: the same content always gives the same record.
            stable_hash([manifest["compile_key"], run.shards]),
            {
                **shard_record(out_dir, run),
                "compile_key": manifest["compile_key"],
                "artifact_dir": str(artifact_dir),
                "corpus_fingerprint": corpus_record.key,
                "source_path": exported["source_path"],
            },
        )
        return dg.MaterializeResult(
            data_version=dg.DataVersion(record.key),
            metadata={
                **record_metadata(record),
                **code_version_metadata(context, stage_inputs("corpus_embeddings", corpus, spec)),
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
                **plot_metadata("chunk_lengths", plots.chunk_length_histogram(lengths), "chunk length distribution"),
                **plot_metadata("projection", plots.projection(vectors, sources), "2-D projection of the embeddings"),
                **replica_metadata(run),
                **lease.metadata(),
            },
        )

    return corpus_embeddings


def build_embeddings_checks(spec: ModelSpec) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey([spec.name, "corpus_embeddings"])

    @dg.asset_check(asset=key, name="complete_and_finite", blocking=True)
    def complete_and_finite(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        """One embedding per chunk listed, no NaN/inf, and unit norm when the model normalises."""
        import numpy as np

        from neuronforge.shards import dense_matrix, read_shards

        record = storage.record_for(context, key)
        listed = record["chunks"]
        table = read_shards(record.path_of("dir"), ["chunk_id", "vector"], record["shards"])
        vectors = dense_matrix(table)
        unique_ids = len(set(table.column("chunk_id").to_pylist()))
        finite = bool(np.isfinite(vectors).all())
        norms = np.linalg.norm(vectors, axis=1)
        modules = record.path_of("source_path") / "modules.json"
        normalises = modules.is_file() and "Normalize" in modules.read_text()
        unit = bool(np.allclose(norms, 1.0, atol=1e-3)) if normalises else True
        max_norm_error = float(np.abs(norms - 1).max()) if norms.size else 0.0
        passed = table.num_rows == listed == unique_ids and finite and unit
        norm_clause = (
            f"max |norm - 1| = {max_norm_error:.2g} (≤ 1e-3 required: the model normalises)"
            if normalises
            else "norms not judged (the model does not normalise)"
        )
        return dg.AssetCheckResult(
            passed=passed,
            description=f"{table.num_rows} embedding rows for {listed} listed chunks ({unique_ids} unique ids; all "
            f"three must be equal), {'all' if finite else 'NOT all'} finite, {norm_clause}.",
            metadata={
                "rows": table.num_rows,
                "chunks_listed": listed,
                "unique_chunk_ids": unique_ids,
                "finite": finite,
                "model_normalises": normalises,
                "max_norm_error": max_norm_error,
                "record_key": record.key,
            },
        )

    return [complete_and_finite]
