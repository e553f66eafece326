"""sparse_index: SPLADE activations of every corpus chunk, as an inverted index with exact top-k search."""

import time
from pathlib import Path

import dagster as dg

from assets.common import after_upstream_passes, cores_needed, current_artifact, markdown_table
from neuronforge.registry import ModelSpec
from resources.corpus import CorpusResource
from resources.devices import NeuronResource
from resources.storage import StorageResource

CHECK_QUERIES = 25


def build_sparse_index_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "sparse_index"],
        deps=[dg.AssetKey("corpus"), dg.AssetKey([spec.name, "export"])],
        group_name=spec.name,
        kinds={"numpy", "scipy"},
        pool="neuron",
        automation_condition=after_upstream_passes(),
        description="SPLADE encoding of every corpus chunk (max_active_dims from models.yaml) and an inverted index "
        "(posting lists, memory-mappable) with exact top-k search.",
        tags={"model_kind": spec.kind},
    )
    def sparse_index(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        corpus: CorpusResource,
        neuron: NeuronResource,
    ):
        from neuronforge.backends import load_encoder
        from neuronforge.shards import encode_shards, read_shards, sparse_matrix, sparse_table
        from neuronforge.sparse_index import SparseIndex, sparsity_stats, to_csr, top_tokens

        artifact_dir, manifest = current_artifact(storage, spec.name)
        vocab = int(manifest["dimension"])
        source = Path(storage.read_pointer("corpus", "default")["path"])
        shard_dir = storage.stage_dir("sparse_index", spec.name) / "shards"
        holder = f"{spec.name}/sparse_index run {context.run_id[:8]}"
        with neuron.lease(cores_needed(spec, manifest), holder=holder, log=context.log) as lease:
            encoder = load_encoder(artifact_dir)

            def encode(chunks):
                activations = encoder.encode([c.input_text for c in chunks], truncate=False)
                return sparse_table(chunks, to_csr(activations, encoder.max_active_dims))

            shards = corpus.plan_shards(source, encoder.tokenizer, encoder.sequence_length)
            run = encode_shards(shards, shard_dir, manifest["compile_key"], encode, context.log)

        started = time.perf_counter()
        table = read_shards(shard_dir, ["doc_id", "term_ids", "weights"])
        matrix = sparse_matrix(table, vocab)
        index = SparseIndex.build(matrix, table.column("doc_id").to_pylist(), vocab)
        index_dir = storage.stage_dir("sparse_index", spec.name) / "index"
        index.save(index_dir, extra_meta={"model": spec.name, "compile_key": manifest["compile_key"]})
        build_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in index_dir.iterdir())
        storage.write_pointer(
            "sparse_index",
            spec.name,
            {"index_dir": str(index_dir), "shard_dir": str(shard_dir), "compile_key": manifest["compile_key"]},
        )
        stats = sparsity_stats(matrix, vocab)
        examples = [
            [doc, ", ".join(f"{tok} {w:.2f}" for tok, w in top_tokens(matrix[row], encoder.tokenizer, 8))]
            for row, doc in list(enumerate(table.column("doc_id").to_pylist()))[:: max(1, matrix.shape[0] // 5)][:5]
        ]
        return dg.MaterializeResult(
            metadata={
                "index_dir": dg.MetadataValue.path(str(index_dir)),
                "documents": index.n_docs,
                "chunks": run.chunks,
                "shards_reused": run.reused,
                "chunks_encoded": run.encoded_chunks,
                "chunks_per_s": round(run.chunks_per_s, 1),
                "avg_active_dims": round(float(stats["active_dims"]), 1),
                "sparsity_ratio": round(float(stats["sparsity_ratio"]), 5),
                "max_active_dims": encoder.max_active_dims or 0,
                "index_size_mb": round(size / 2**20, 2),
                "index_build_s": round(build_s, 3),
                "top_tokens": dg.MetadataValue.md(markdown_table(["document", "top tokens"], examples)),
                **lease.metadata(),
            },
        )

    return sparse_index


def build_sparse_index_checks(spec: ModelSpec) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey([spec.name, "sparse_index"])

    @dg.asset_check(asset=key, name="exact_top_k", blocking=True)
    def exact_top_k(storage: StorageResource) -> dg.AssetCheckResult:
        """For sample queries (rows of the index itself), index top-10 equals brute-force scoring over all chunks."""
        import numpy as np

        from neuronforge.shards import read_shards, sparse_matrix
        from neuronforge.sparse_index import SparseIndex, brute_force_search

        pointer = storage.read_pointer("sparse_index", spec.name)
        index = SparseIndex.load(Path(pointer["index_dir"]))
        table = read_shards(Path(pointer["shard_dir"]), ["doc_id", "term_ids", "weights"])
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
            metadata={"queries_checked": len(rows), "mismatched_queries": dg.MetadataValue.json(mismatches)},
        )

    return [exact_top_k]
