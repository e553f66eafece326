"""retrieval_eval: nDCG@10, Recall@100 and MRR@10 of dense, sparse and hybrid retrieval over the corpus's qrels."""

import time
from pathlib import Path

import dagster as dg

from assets.common import after_upstream_passes, markdown_table
from neuronforge.registry import Registry
from resources.corpus import CorpusResource
from resources.storage import StorageResource


def build_retrieval_eval(registry: Registry) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    dense = [m.name for m in registry.of_kind("dense")]
    sparse = [m.name for m in registry.of_kind("sparse")]
    if not dense and not sparse:
        return [], []
    deps = [dg.AssetKey("corpus")]
    deps += [dg.AssetKey([name, "corpus_embeddings"]) for name in dense]
    deps += [dg.AssetKey([name, "sparse_index"]) for name in sparse]

    @dg.asset(
        key="retrieval_eval",
        deps=deps,
        group_name="retrieval",
        kinds={"python"},
        automation_condition=after_upstream_passes(),
        description="Every dense model, every sparse model and each dense+sparse pair fused by reciprocal rank "
        "fusion, scored on the corpus's judged queries.",
    )
    def retrieval_eval(context: dg.AssetExecutionContext, storage: StorageResource):
        from neuronforge.artifacts import write_json_atomic
        from neuronforge.corpus import load_qrels, load_queries, qrels_splits
        from neuronforge.retrieval import evaluate, reciprocal_rank_fusion
        from neuronforge.search import Searcher

        source = Path(storage.read_pointer("corpus", "default")["path"])
        splits = qrels_splits(source) if source.is_dir() else []
        if not splits:
            context.log.warning(f"{source} has no qrels: nothing to evaluate")
            return dg.MaterializeResult(metadata={"evaluated": False, "reason": "corpus has no qrels"})
        qrels = load_qrels(source, "test" if "test" in splits else splits[0])
        queries = {qid: text for qid, text in load_queries(source).items() if qid in qrels}
        qids, texts = list(queries), list(queries.values())
        results: dict[str, dict[str, float]] = {}
        runs: dict[str, dict] = {}
        for name in dense:
            started = time.perf_counter()
            runs[f"dense:{name}"] = Searcher(storage.base, dense_model=name).dense(texts, 100, qids)
            context.log.info(f"dense {name}: {len(qids)} queries in {time.perf_counter() - started:.1f}s")
        for name in sparse:
            searcher = Searcher(storage.base, sparse_model=name)
            runs[f"sparse:{name}"] = searcher.sparse(texts, 100, qids)
        for d in dense:
            for s in sparse:
                runs[f"hybrid:{d}+{s}"] = reciprocal_rank_fusion([runs[f"dense:{d}"], runs[f"sparse:{s}"]], top=100)
        for system, run in runs.items():
            results[system] = evaluate(run, qrels)
        out = storage.stage_dir("retrieval_eval", "default") / "results.json"
        write_json_atomic(out, {"corpus": str(source), "queries": len(qids), "results": results})
        storage.write_pointer("retrieval_eval", "default", {"results": str(out)})
        rows = [
            [system, f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}", f"{m['mrr@10']:.4f}", m["queries"]]
            for system, m in results.items()
        ]
        metadata = {
            "queries": len(qids),
            "results": dg.MetadataValue.md(
                markdown_table(["system", "nDCG@10", "Recall@100", "MRR@10", "queries"], rows)
            ),
        }
        for system, m in results.items():
            metadata[f"ndcg@10 {system.split(':')[0]}:{system.split(':', 1)[1]}"] = round(m["ndcg@10"], 4)
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset_check(asset=retrieval_eval, name="ndcg_above_floor")
    def ndcg_above_floor(storage: StorageResource, corpus: CorpusResource) -> dg.AssetCheckResult:
        """Every system's nDCG@10 is at least CorpusResource.ndcg_floor."""
        import json

        results = json.loads(Path(storage.read_pointer("retrieval_eval", "default")["results"]).read_text())["results"]
        below = {s: round(m["ndcg@10"], 4) for s, m in results.items() if m["ndcg@10"] < corpus.ndcg_floor}
        return dg.AssetCheckResult(
            passed=not below,
            metadata={"floor": corpus.ndcg_floor, "below_floor": dg.MetadataValue.json(below), "systems": len(results)},
        )

    return [retrieval_eval], [ndcg_above_floor]
