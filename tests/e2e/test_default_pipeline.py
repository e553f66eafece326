"""The default pipeline, every asset and check, on the embedded defaults — then again, to prove it is idempotent."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
from huggingface_hub import HfApi, snapshot_download
from pipeline_helpers import checks, materialize, metadata, pipeline_resources

from neuronforge.artifacts import verify_manifest
from neuronforge.backends import load_encoder
from pipelines.definitions import build_definitions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, hub):
    root = tmp_path_factory.mktemp("home")
    defs = build_definitions(resources=pipeline_resources(root, hub.url))
    first = materialize(defs, dg.AssetSelection.all())
    return root, defs, first


def test_every_asset_and_check(run):
    _, defs, result = run
    assert result.success
    materialized = {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    outcomes = checks(result)
    # Every check ran, the ones the chat evaluation emits itself (check_specs) included.
    asset_checks = defs.resolve_asset_graph().asset_check_keys
    assert set(outcomes) == {f"{key.asset_key.to_user_string()}:{key.name}" for key in asset_checks}
    failed = sorted(name for name, passed in outcomes.items() if not passed)
    # The one check without evidence on a fresh data directory says so instead of passing: there is no earlier
    # evaluation to compare latency with.
    assert failed == ["smollm2_135m_instruct/chat_smoke_eval:latency_vs_last_run"], failed
    latency = next(e for e in result.get_asset_check_evaluations() if e.check_name == "latency_vs_last_run")
    assert latency.severity == dg.AssetCheckSeverity.WARN and latency.metadata["evaluated"].value is False


def test_retrieval_quality_is_reported(run):
    _, _, result = run
    meta = metadata(result, "retrieval_eval")
    assert meta["queries"] > 1000
    for system in ("dense:all_minilm_l6_v2", "sparse:splade_tiny", "hybrid:all_minilm_l6_v2+splade_tiny"):
        assert 0.3 < meta[f"ndcg@10 {system}"] <= 1.0


def test_published_artifacts_download_identically(run, hub, tmp_path):
    root, _, result = run
    for model in ("all_minilm_l6_v2", "splade_tiny", "smollm2_135m_instruct"):
        published = metadata(result, f"{model}/publish")
        exported = metadata(result, f"{model}/export")
        local = snapshot_download(
            published["repo_id"], revision=published["tag"], endpoint=hub.url, cache_dir=tmp_path / model
        )
        manifest = verify_manifest(local)  # every byte matches the manifest's sha256s
        assert manifest["compile_key"] == exported["compile_key"]
        refs = HfApi(endpoint=hub.url).list_repo_refs(published["repo_id"])
        assert f"ck-{exported['compile_key']}" in {t.name for t in refs.tags}
        if model != "smollm2_135m_instruct":
            # The downloaded artifact runs through our backend exactly like the local export.
            texts = ["static shapes on Inferentia", "a second, somewhat longer sentence about sparse retrieval"]
            local_out = load_encoder(exported["artifact_dir"]).encode(texts)
            np.testing.assert_array_equal(load_encoder(local).encode(texts), local_out)


def test_search_cli(run, capsys):
    from neuronforge.search import main

    root, _, _ = run
    assert (
        main(["parse a JSON document into Python objects", "--mode", "hybrid", "-k", "3", "--data-dir", str(root)]) == 0
    )
    assert "json" in capsys.readouterr().out.lower()


def test_second_run_reuses_everything(run, hub):
    root, defs, _ = run
    selection = dg.AssetSelection.all() - dg.AssetSelection.groups("smollm2_135m_instruct")
    again = materialize(defs, selection)
    assert again.success
    for model in ("all_minilm_l6_v2", "splade_tiny"):
        assert metadata(again, f"{model}/export")["reused_existing"] is True
        assert metadata(again, f"{model}/publish")["new_commit"] is False
    embeddings = metadata(again, "all_minilm_l6_v2/corpus_embeddings")
    assert embeddings["chunks_encoded"] == 0 and embeddings["shards_reused"] == embeddings["shards"]
    assert metadata(again, "splade_tiny/sparse_index")["chunks_encoded"] == 0
