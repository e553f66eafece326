"""Code versions follow what changes a stage's output, and the materialization says what changed."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from tiny_registry import TINY_ENCODERS, write_registry

from neuronforge.corpus.config import DEFAULT_RRF_K
from neuronforge.stage_versions import describe, describe_change
from pipelines.definitions import build_definitions
from resources.corpus import CorpusResource

MODELS_YAML = TINY_ENCODERS


@pytest.fixture
def registry(tmp_path: Path):
    return write_registry(tmp_path, MODELS_YAML)


def versions(registry, **corpus_settings) -> dict[str, str | None]:
    defs = build_definitions(registry, resources={"corpus": CorpusResource(**corpus_settings)})
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}


def test_every_computing_asset_has_a_code_version(registry) -> None:
    assert all(versions(registry).values())


def test_a_chunking_setting_changes_the_corpus_stages_only(registry) -> None:
    before, after = versions(registry), versions(registry, chunk_overlap=32)
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == ["tiny_dense/corpus_embeddings", "tiny_sparse/sparse_index"]


def test_fusion_settings_change_retrieval_eval_only(registry) -> None:
    before, after = versions(registry), versions(registry, rrf_k=DEFAULT_RRF_K + 50)
    assert sorted(k for k in before if before[k] != after[k]) == ["retrieval_eval"]


def test_a_code_version_change_is_described() -> None:
    before = {"chunking": 1, "chunk_overlap": 16, "shard_chunks": 512}
    after = {"chunking": 2, "chunk_overlap": 32, "shard_chunks": 512}
    assert describe(after) == "chunking v2, chunk_overlap 32, shard_chunks 512"
    assert describe_change(before, after) == "chunk_overlap 16 → 32; chunking v1 → v2"
    assert describe_change(after, after) == "unchanged"
    assert describe_change(None, after).startswith("first materialization")


def test_the_materialization_says_what_changed(registry, tmp_path: Path) -> None:
    """The corpus asset (the cheapest to run) materialized twice with different settings on one instance."""
    source = tmp_path / "docs"
    source.mkdir()
    (source / "a.txt").write_text("Inverted indexes map each term to the documents that contain it.")
    instance = dg.DagsterInstance.ephemeral()
    from resources.storage import StorageResource

    def run(**settings):
        defs = build_definitions(
            registry,
            resources={
                "corpus": CorpusResource(source=str(source), **settings),
                "storage": StorageResource(root=str(tmp_path / "home")),
            },
        )
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("corpus")})
        result = job.execute_in_process(instance=instance)
        event = result.get_asset_materialization_events()[0].materialization
        return event.metadata["code_version_change"].value

    assert "first materialization" in run()
    assert "max_doc_bytes 1000000 → 2000" in run(max_doc_bytes=2000)


def test_the_partition_count_changes_the_corpus_stages_only(registry) -> None:
    before, after = versions(registry), versions(registry, partitions=2)
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == ["tiny_dense/corpus_embeddings", "tiny_sparse/sparse_index"]
