"""neuronforge-gc: removes exactly the shards, index folders and records no current record needs; dry run by default.

The data directory is laid out the way the stages write it after switching from corpus A to corpus B: A's shards,
index and records are garbage; B's (current) and everything they name stay, and so do shards both corpora share.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from neuronforge.gc import main, plan_gc
from neuronforge.records import RecordStore

DAY = 86400


def touch(path: Path, data: bytes = b"x", age_s: float = 2 * DAY) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def age(path: Path, age_s: float = 2 * DAY) -> None:
    old = time.time() - age_s
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    store = RecordStore(root)
    emb = root / "stages" / "corpus_embeddings" / "minilm"
    idx = root / "stages" / "sparse_index" / "splade"
    for name in ("shard-a1.parquet", "shard-shared.parquet", "shard-b1.parquet"):
        touch(emb / name)
        touch(idx / "shards" / name)
    for key in ("A", "B"):
        touch(idx / f"index-{key}" / "meta.json", b"{}")
        age(idx / f"index-{key}")
    artifact = root / "artifacts" / "minilm" / "ck1"
    touch(artifact / "manifest.json", b"{}")
    built_corpus = root / "stages" / "corpus" / "stdlib"
    touch(built_corpus / "corpus.jsonl")

    store.write("corpus", "default", "fpA", {"path": "/elsewhere/corpus_a"})
    store.write("corpus", "default", "fpB", {"path": str(built_corpus)})
    # Shard lists as plain names (today) and as mappings with checksums (helper C1's shard integrity) both count.
    store.write(
        "corpus_embeddings",
        "minilm",
        "eA",
        {"dir": str(emb), "shards": ["shard-a1.parquet", "shard-shared.parquet"], "corpus_fingerprint": "fpA"},
    )
    store.write(
        "corpus_embeddings",
        "minilm",
        "eB",
        {
            "dir": str(emb),
            "shards": [{"name": "shard-shared.parquet", "sha256": "0"}, {"name": "shard-b1.parquet", "sha256": "1"}],
            "artifact_dir": str(artifact),
            "corpus_fingerprint": "fpB",
        },
    )
    for key, shards in (("iA", ["shard-a1.parquet"]), ("iB", ["shard-shared.parquet", "shard-b1.parquet"])):
        store.write(
            "sparse_index",
            "splade",
            key,
            {"dir": str(idx / "shards"), "shards": shards, "index_dir": str(idx / f"index-{key[1]}")},
        )
    # retrieval_eval of corpus A is not current, but B's names its inputs by record key.
    store.write("retrieval_eval", "default", "rA", {"corpus_fingerprint": "fpA", "inputs": {"dense:minilm": "eA"}})
    store.write(
        "retrieval_eval",
        "default",
        "rB",
        {"corpus_fingerprint": "fpB", "inputs": {"dense:minilm": {"record_key": "eB"}, "sparse:splade": "iB"}},
    )
    # Each write above made its record current, so B's are current now; every record is two days old.
    for path in (root / "records").rglob("*.json"):
        age(path)
    touch(emb / ".shard-zz.parquet.123.tmp")  # an interrupted atomic write
    return root


def garbage(plan) -> set[str]:
    return {p.path.relative_to(plan.root).as_posix() for p in plan.garbage}


def test_only_what_no_current_record_needs_is_garbage(home):
    plan = plan_gc(home)
    assert garbage(plan) == {
        "records/corpus/default/fpA.json",
        "records/corpus_embeddings/minilm/eA.json",
        "records/sparse_index/splade/iA.json",
        "records/retrieval_eval/default/rA.json",
        "stages/corpus_embeddings/minilm/shard-a1.parquet",
        "stages/sparse_index/splade/shards/shard-a1.parquet",
        "stages/sparse_index/splade/index-A",
        "stages/corpus_embeddings/minilm/.shard-zz.parquet.123.tmp",
    }
    assert plan.bytes > 0


def test_dry_run_by_default_then_delete(home, capsys):
    before = sorted(p for p in home.rglob("*"))
    assert main(["--data-dir", str(home)]) == 0
    out = capsys.readouterr()
    assert "would remove" in out.out and "run with --delete" in out.err
    assert sorted(p for p in home.rglob("*")) == before  # nothing removed

    assert main(["--data-dir", str(home), "--delete"]) == 0
    assert not (home / "stages/corpus_embeddings/minilm/shard-a1.parquet").exists()
    assert not (home / "stages/sparse_index/splade/index-A").exists()
    for kept in (
        "stages/corpus_embeddings/minilm/shard-shared.parquet",
        "stages/corpus_embeddings/minilm/shard-b1.parquet",
        "stages/sparse_index/splade/index-B/meta.json",
        "artifacts/minilm/ck1/manifest.json",
        "stages/corpus/stdlib/corpus.jsonl",
        "records/corpus_embeddings/minilm/eB.json",
        "records/corpus_embeddings/minilm/current.json",
        "records/retrieval_eval/default/rB.json",
    ):
        assert (home / kept).exists(), kept
    assert garbage(plan_gc(home)) == set()  # idempotent


def test_young_entries_are_kept_for_runs_in_progress(home):
    touch(home / "stages/corpus_embeddings/minilm/shard-new.parquet", age_s=60)  # a running encode's fresh shard
    plan = plan_gc(home)
    assert "stages/corpus_embeddings/minilm/shard-new.parquet" not in garbage(plan)
    assert plan.young == 1
    assert "stages/corpus_embeddings/minilm/shard-new.parquet" in garbage(plan_gc(home, min_age_hours=0))


def test_json_output_and_bad_arguments(home, capsys, tmp_path):
    assert main(["--data-dir", str(home), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["deleted"] is False and len(listed["garbage"]) == 8
    assert main(["--data-dir", str(tmp_path / "nope")]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["--min-age-hours", "-1"])
    assert exit_.value.code == 2
