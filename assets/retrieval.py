"""retrieval_eval: nDCG@10, Recall@100 and MRR@10 of dense, sparse and hybrid retrieval over the corpus's qrels."""

import time

import dagster as dg

from assets.common import (
    ROW_COUNT,
    after_upstream_passes,
    code_version_metadata,
    cores_needed,
    metadata_table,
    plot_metadata,
    stage_inputs,
)
from neuronforge import plots
from neuronforge.artifacts import read_manifest, stable_hash
from neuronforge.registry import Registry
from resources.corpus import CorpusResource
from resources.devices import NeuronResource
from resources.storage import StorageResource, record_metadata


def build_retrieval_eval(
    registry: Registry, partitions_def: dg.PartitionsDefinition
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    partitions = partitions_def.get_partition_keys()
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
        group_name="retrieval",  # after the model groups; corpus has its own group, so the group graph is acyclic
        kinds={"python"},
        pool="neuron",  # it encodes the queries with every model: a model step, leased like the others
        automation_condition=after_upstream_passes(),
        description="Every dense model, every sparse model and each dense+sparse pair fused by reciprocal rank "
        "fusion, scored on the corpus's judged queries.",
    )
    def retrieval_eval(
        context: dg.AssetExecutionContext, storage: StorageResource, neuron: NeuronResource, corpus: CorpusResource
    ):
        from neuronforge.corpus import load_qrels, load_queries, qrels_splits
        from neuronforge.retrieval import evaluate, reciprocal_rank_fusion
        from neuronforge.search import Searcher

        # Exactly the outputs this run's upstream materializations named, not whatever finished last: for the corpus
        # stages, one record per partition (built in this run, or the partition's latest), searched as one corpus.
        corpus_record = storage.record_for(context, dg.AssetKey("corpus"))
        inputs = {
            f"dense:{n}": storage.partition_records(context, dg.AssetKey([n, "corpus_embeddings"]), partitions)
            for n in dense
        }
        inputs |= {
            f"sparse:{n}": storage.partition_records(context, dg.AssetKey([n, "sparse_index"]), partitions)
            for n in sparse
        }
        # The fusion settings are inputs too: another rrf_k gives other hybrid results, so another record.
        fusion = {
            "rrf_k": corpus.rrf_k,
            "weights": {
                f"hybrid:{d}+{s}": [corpus.fusion_weight("dense", d), corpus.fusion_weight("sparse", s)]
                for d in dense
                for s in sparse
            },
        }
        key = stable_hash([corpus_record.key, {system: [r.key for r in rs] for system, rs in inputs.items()}, fusion])
        scored = {
            system: {"record_keys": {r.partition: r.key for r in rs}, "compile_key": rs[0]["compile_key"]}
            for system, rs in inputs.items()
        }
        # What was scored, as the first things a person looks at: which corpus, which compiled artifacts.
        provenance = {
            "corpus_fingerprint": corpus_record.key,
            "compile_keys": dg.MetadataValue.json({system: s["compile_key"] for system, s in scored.items()}),
        }
        source = corpus_record.path_of("path")
        splits = qrels_splits(source) if source.is_dir() else []
        if not splits:
            # Recorded, so the check judges this corpus ("not evaluated"), never an earlier corpus's results.
            reason = f"no judgements: {source} has no qrels/<split>.tsv (relevance judgements), so nothing to score"
            context.log.warning(reason)
            record = storage.write_record(
                context.asset_key,
                key,
                {"evaluated": False, "reason": reason, "corpus_fingerprint": corpus_record.key, "inputs": scored},
            )
            return dg.MaterializeResult(
                data_version=dg.DataVersion(record.key),
                metadata={
                    **record_metadata(record),
                    **code_version_metadata(context, stage_inputs("retrieval_eval", corpus)),
                    "evaluated": False,
                    "reason": reason,
                    **provenance,
                },
            )
        split = "test" if "test" in splits else splits[0]
        qrels = load_qrels(source, split)
        queries = {qid: text for qid, text in load_queries(source).items() if qid in qrels}
        qids, texts = list(queries), list(queries.values())
        results: dict[str, dict[str, float]] = {}
        runs: dict[str, dict] = {}
        # Every model is loaded in this process: one lease as large as the largest of them, held until it exits.
        cores = max(
            cores_needed(registry.get(s.split(":", 1)[1]), read_manifest(rs[0].path_of("artifact_dir")))
            for s, rs in inputs.items()
        )
        with neuron.lease(cores, holder=f"retrieval_eval run {context.run_id[:8]}", log=context.log):
            for name in dense:
                started = time.perf_counter()
                runs[f"dense:{name}"] = Searcher(dense=inputs[f"dense:{name}"]).dense(texts, 100, qids)
                context.log.info(f"dense {name}: {len(qids)} queries in {time.perf_counter() - started:.1f}s")
            for name in sparse:
                runs[f"sparse:{name}"] = Searcher(sparse=inputs[f"sparse:{name}"]).sparse(texts, 100, qids)
        for system, weights in fusion["weights"].items():
            d, s = system.removeprefix("hybrid:").split("+")
            runs[system] = reciprocal_rank_fusion(
                [runs[f"dense:{d}"], runs[f"sparse:{s}"]], k=corpus.rrf_k, top=100, weights=weights
            )
        for system, run in runs.items():
            results[system] = evaluate(run, qrels)
        record = storage.write_record(
            context.asset_key,
            key,
            {
                "evaluated": True,
                "corpus": str(source),
                "corpus_fingerprint": corpus_record.key,
                "queries": len(qids),
                "split": split,
                "results": results,
                "fusion": fusion,
                "inputs": scored,
            },
        )
        rows = [
            [system, round(m["ndcg@10"], 4), round(m["recall@100"], 4), round(m["mrr@10"], 4), m["queries"]]
            for system, m in results.items()
        ]
        columns = [("system", "string"), ("nDCG@10", "float"), ("Recall@100", "float"), ("MRR@10", "float")]
        metadata = {
            **record_metadata(record),
            **code_version_metadata(context, stage_inputs("retrieval_eval", corpus)),
            "evaluated": True,
            "queries": len(qids),
            "qrels_split": split,
            **provenance,
            "rrf_k": corpus.rrf_k,
            ROW_COUNT: dg.MetadataValue.int(len(rows)),  # one row per system
            "results": metadata_table([*columns, ("queries", "int")], rows),
            **plot_metadata(
                "ndcg_by_system",
                plots.score_bars({s: m["ndcg@10"] for s, m in results.items()}, "nDCG@10"),
                "nDCG@10 per system",
            ),
        }
        # Every metric of every system as a number, so the UI can plot each one across runs.
        for system, m in results.items():
            for metric in ("ndcg@10", "recall@100", "mrr@10"):
                metadata[f"{metric} {system}"] = round(float(m[metric]), 4)
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(record.key))

    @dg.asset_check(asset=retrieval_eval, name="ndcg_above_floor")
    def ndcg_above_floor(
        context: dg.AssetCheckExecutionContext, storage: StorageResource, corpus: CorpusResource
    ) -> dg.AssetCheckResult:
        """Every system's nDCG@10 is at least CorpusResource.ndcg_floor."""
        record = storage.record_for(context, dg.AssetKey("retrieval_eval"))
        if not record["evaluated"]:
            # A check that could not run does not pass.
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"Not evaluated: {record['reason']}.",
                metadata={"evaluated": False, "reason": record["reason"], "record_key": record.key},
            )
        results = record["results"]
        scores = {s: round(m["ndcg@10"], 4) for s, m in results.items()}
        below = {s: v for s, v in scores.items() if v < corpus.ndcg_floor}
        judged = ", ".join(f"{s} {v:.4f}" for s, v in scores.items())
        return dg.AssetCheckResult(
            passed=not below,
            description=f"nDCG@10 of every system ≥ {corpus.ndcg_floor} (CorpusResource.ndcg_floor) required; "
            f"{len(scores) - len(below)} of {len(scores)} reach it: {judged}.",
            metadata={
                "ndcg@10": dg.MetadataValue.json(scores),
                "floor": corpus.ndcg_floor,
                "below_floor": dg.MetadataValue.json(below),
                "systems": len(results),
                "record_key": record.key,
            },
        )

    return [retrieval_eval], [ndcg_above_floor]
