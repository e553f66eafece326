"""sparse_index: SPLADE activations of every corpus chunk, as an inverted index with exact top-k search."""

import time

import dagster as dg

from assets.common import (
    ROW_COUNT,
    code_version_metadata,
    encode_stage_shards,
    metadata_table,
    replica_metadata,
    shard_record,
    stage_asset,
    stage_inputs,
    upstream_records,
)
from neuronforge.artifacts import read_manifest, stable_hash
from neuronforge.registry import ModelSpec
from resources.corpus import CorpusResource
from resources.devices import NeuronResource
from resources.storage import StorageResource, record_metadata

CHECK_QUERIES = 25


def build_sparse_index_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @stage_asset(
        spec,
        "sparse_index",
        reads_corpus=True,
        kinds={"numpy", "scipy"},
        description="SPLADE encoding of every corpus chunk (max_active_dims from models.yaml) and an inverted index "
        "(posting lists, memory-mappable) with exact top-k search.",
    )
    def sparse_index(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        corpus: CorpusResource,
        neuron: NeuronResource,
    ):
        from neuronforge.shards import read_shards, sparse_matrix
        from neuronforge.sparse_build import write_index
        from neuronforge.sparse_index import FORMAT_VERSION, top_tokens

        exported, corpus_record = upstream_records(context, storage, spec)
        artifact_dir, manifest = exported.path_of("artifact_dir"), read_manifest(exported.path_of("artifact_dir"))
        vocab = int(manifest["dimension"])
        source = corpus_record.path_of("path")
        shard_dir = storage.stage_dir("sparse_index", spec.name) / "shards"
        run, lease, tokenizer = encode_stage_shards(
            context, spec, neuron, corpus, artifact_dir, manifest, source, shard_dir, corpus_record.get("documents")
        )

        started = time.perf_counter()

        def shard_batches():  # one shard at a time: the build's memory stays flat however large the corpus
            for name in run.shards:
                table = read_shards(shard_dir, ["doc_id", "term_ids", "weights"], [name])
                yield sparse_matrix(table, vocab), table.column("doc_id").to_pylist()

        # Shard names hash the compile key and every chunk: the same content gives the same record (and folder).
        key = stable_hash([manifest["compile_key"], run.shards, FORMAT_VERSION])
        index_dir = storage.stage_dir("sparse_index", spec.name) / f"index-{key}"
        meta = write_index(
            index_dir, shard_batches, vocab, {"model": spec.name, "compile_key": manifest["compile_key"]}
        )
        build_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in index_dir.iterdir())
        record = storage.write_record(
            context.asset_key,
            key,
            {
                **shard_record(shard_dir, run),
                "index_dir": str(index_dir),
                "compile_key": manifest["compile_key"],
                "artifact_dir": str(artifact_dir),
                "corpus_fingerprint": corpus_record.key,
            },
        )
        stats = meta["stats"]
        matrix, doc_ids = next(iter(shard_batches()), (None, []))  # examples from the first shard
        examples = [
            [doc, ", ".join(f"{tok} {w:.2f}" for tok, w in top_tokens(matrix[row], tokenizer, 8))]
            for row, doc in list(enumerate(doc_ids))[:: max(1, len(doc_ids) // 5)][:5]
        ]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(record.key),
            metadata={
                **record_metadata(record),
                **code_version_metadata(context, stage_inputs("sparse_index", corpus, spec)),
                "index_dir": dg.MetadataValue.path(str(index_dir)),
                "documents": meta["documents"],
                "chunks": run.chunks,
                "shards_reused": run.reused,
                "chunks_encoded": run.encoded_chunks,
                "chunks_per_s": round(run.chunks_per_s, 1),
                "avg_active_dims": round(float(stats["active_dims"]), 1),
                "sparsity_ratio": round(float(stats["sparsity_ratio"]), 5),
                "max_active_dims": manifest.get("options", {}).get("max_active_dims") or 0,
                "index_size_mb": round(size / 2**20, 2),
                "index_build_s": round(build_s, 3),
                ROW_COUNT: dg.MetadataValue.int(run.chunks),
                "top_tokens": metadata_table([("document", "string"), ("top tokens", "string")], examples),
                **replica_metadata(run),
                **lease.metadata(),
            },
        )

    return sparse_index


def build_sparse_index_checks(spec: ModelSpec) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey([spec.name, "sparse_index"])

    @dg.asset_check(asset=key, name="exact_top_k", blocking=True)
    def exact_top_k(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        """For sample queries (rows of the index itself), index top-10 equals brute-force scoring over all chunks."""
        import numpy as np

        from neuronforge.shards import read_shards, sparse_matrix
        from neuronforge.sparse_index import SparseIndex, brute_force_search

        record = storage.record_for(context, key)
        index = SparseIndex.load(record.path_of("index_dir"))
        table = read_shards(record.path_of("dir"), ["doc_id", "term_ids", "weights"], record["shards"])
        matrix = sparse_matrix(table, index.vocab_size)
        doc_ids = table.column("doc_id").to_pylist()
        rows = np.linspace(0, matrix.shape[0] - 1, num=min(CHECK_QUERIES, matrix.shape[0]), dtype=int)
        mismatches = []
        for row in rows:
            query = matrix[row]
            got = index.search(query, k=10)
            want = brute_force_search(matrix, doc_ids, query, k=10)
            same_ids = [d for d, _ in got] == [d for d, _ in want]
            same_scores = np.allclose([s for _, s in got], [s for _, s in want], rtol=1e-6, atol=1e-6)
            if not (same_ids and same_scores):
                mismatches.append(int(row))
        return dg.AssetCheckResult(
            passed=not mismatches,
            description=f"{len(rows) - len(mismatches)} of {len(rows)} sample queries got the same top-10 ids and "
            f"scores (rtol 1e-6) from the index as from brute-force scoring of all {matrix.shape[0]} chunks; all must.",
            metadata={
                "queries_checked": len(rows),
                "mismatched_queries": dg.MetadataValue.json(mismatches),
                "record_key": record.key,
            },
        )

    return [exact_top_k]
