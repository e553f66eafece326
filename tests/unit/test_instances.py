"""Instance-aware validation before compiling: tensor_parallel_size against the instance's cores and trn1's allowed
set, and a per-core memory estimate that names the smallest tensor_parallel_size or instance that fits."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from unittest import mock

import pytest

from neuronforge.backends.neuron import NeuronBackend
from neuronforge.export import export_artifact
from neuronforge.instances import (
    GIB,
    InstanceFitError,
    check_fits,
    count_parameters,
    estimate_memory,
    estimate_parameters,
    kv_heads_per_core,
)
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel

# Published configs (config.json of the Hub repos), written as synthetic folders without weights.
LLAMA_2_13B = {
    "model_type": "llama", "hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
    "num_key_value_heads": 40, "intermediate_size": 13824, "vocab_size": 32000, "torch_dtype": "float16",
}  # fmt: skip
LLAMA_2_70B = {**LLAMA_2_13B, "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
               "num_key_value_heads": 8, "intermediate_size": 28672}  # fmt: skip
LLAMA_3_405B = {**LLAMA_2_13B, "hidden_size": 16384, "num_hidden_layers": 126, "num_attention_heads": 128,
                "num_key_value_heads": 8, "intermediate_size": 53248, "vocab_size": 128256}  # fmt: skip


def model_dir(tmp_path: Path, config: dict, name: str = "model.synthetic") -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def chat(tp: int, instance: str | None = "inf2.48xlarge", target: str = "inf2", **fields) -> ModelSpec:
    return ModelSpec(
        name="llm", kind="chat", source="hub:acme/llm", revision="main", batch_size=fields.pop("batch_size", 1),
        sequence_length=fields.pop("sequence_length", 2048), tensor_parallel_size=tp, target=target,
        instance_type=instance, auto_cast_type="fp16", **fields,
    )  # fmt: skip


def test_parameter_count_from_the_config_matches_the_published_size():
    assert round(estimate_parameters(LLAMA_2_13B) / 1e9, 2) == 13.02  # Llama-2-13B: 13.0B
    assert round(estimate_parameters(LLAMA_2_70B) / 1e9, 1) == 69.0  # Llama-2-70B: 69.0B


def test_parameter_count_from_safetensors_headers_is_exact(minilm_dir):
    from safetensors.torch import load_file

    expected = sum(t.numel() for t in load_file(str(minilm_dir / "model.safetensors")).values())
    assert count_parameters(minilm_dir, {}) == expected
    assert 22_000_000 < expected < 23_000_000  # all-MiniLM-L6-v2: 22.7M


@pytest.mark.parametrize(
    ("heads", "kv_heads", "tp", "per_core"),
    [
        (40, 40, 2, 20),  # MHA: heads split over tp
        (9, 9, 2, 5),  # MHA, heads padded to a multiple of tp (9 -> 10)
        (32, 8, 8, 1),  # GQA, kv_heads == tp
        (32, 8, 2, 4),  # GQA, kv_heads divisible by tp: the brief's kv_heads / tp
        (64, 8, 32, 1),  # GQA, replicated to one KV head per rank
        (64, 8, 12, 6),  # neither divides: converted to MHA, 64 heads padded to 72 over 12 ranks
    ],
)
def test_kv_heads_per_core_follow_optimum_neurons_sharding(heads, kv_heads, tp, per_core):
    assert kv_heads_per_core(heads, kv_heads, tp) == per_core


def test_memory_estimate_is_the_briefs_formula():
    spec = chat(2)
    estimate = estimate_memory(spec, LLAMA_2_13B, 13_000_000_000, 2)
    assert estimate.weights_per_core == 2 * 13_000_000_000 / 2  # bytes/param × params / tp
    assert estimate.kv_cache_per_core == 2 * 40 * (40 / 2) * 128 * 2048 * 1 * 2  # 2 × layers × kv_heads × ... / tp
    assert estimate.per_core_limit == 16 * GIB


def test_tp_outside_trn1s_allowed_set_names_the_nearest_allowed(tmp_path):
    path = model_dir(tmp_path, LLAMA_2_13B)
    with pytest.raises(
        InstanceFitError, match=r"tensor_parallel_size 4 cannot run on trn1.*1, 2, 8, 16 or a multiple of 32.*to 2 or 8"
    ):
        check_fits(chat(4, "trn1.32xlarge", "trn1"), path)
    with pytest.raises(InstanceFitError, match="to 16 or 32"):
        check_fits(chat(24, "trn1.32xlarge", "trn1"), path)
    check_fits(chat(32, "trn1.32xlarge", "trn1"), path)  # 32·k is allowed
    with pytest.raises(InstanceFitError, match="1 or an even number of"):
        check_fits(chat(3, "inf2.24xlarge"), path)


def test_tp_beyond_the_instance_names_the_smallest_instance(tmp_path):
    path = model_dir(tmp_path, LLAMA_2_13B)
    with pytest.raises(
        InstanceFitError, match=r"exceeds the 2 NeuronCores of inf2.xlarge; use instance_type inf2.24xlarge"
    ):
        check_fits(chat(4, "inf2.xlarge"), path)
    with pytest.raises(InstanceFitError, match="no inf2 instance has 32 cores"):
        check_fits(chat(32, None), path)


def test_a_model_too_big_for_its_tp_names_the_smallest_tp(tmp_path):
    # Llama-2-13B fp16 ≈ 26 GB of weights: more than one 16 GiB core, fits two (the DESIGN seed).
    path = model_dir(tmp_path, LLAMA_2_13B)
    with pytest.raises(
        InstanceFitError,
        match=r"needs 25.8 GiB per core .* against 16 GiB per core; set tensor_parallel_size for llm in models.yaml to 2",
    ):
        check_fits(chat(1, "inf2.xlarge"), path)
    fits = check_fits(chat(2, "inf2.xlarge"), path)
    assert fits.fits and 12 * GIB < fits.per_core < 16 * GIB


def test_a_model_too_big_for_its_instance_names_the_instance(tmp_path):
    path = model_dir(tmp_path, LLAMA_2_70B)
    # 69B fp16 at tp 8: 16.1 GiB of weights per core; tp 10 fits (inf2 takes even counts), on 12 cores or more.
    with pytest.raises(
        InstanceFitError, match="fits from tensor_parallel_size 10, which needs instance_type inf2.24xlarge"
    ):
        check_fits(chat(2, "inf2.8xlarge"), path)
    with pytest.raises(InstanceFitError, match="to 10"):
        check_fits(chat(8, "inf2.48xlarge"), path)
    # trn1 skips 10 and 12: the next allowed count is 16; trn2 has 24 GiB per logical core.
    with pytest.raises(InstanceFitError, match="to 16"):
        check_fits(chat(8, "trn1.32xlarge", "trn1"), path)
    check_fits(chat(8, "trn2.48xlarge", "trn2"), path)
    huge = model_dir(tmp_path, LLAMA_3_405B, "huge.synthetic")
    with pytest.raises(InstanceFitError, match="does not fit even at tensor_parallel_size 24 on the largest inf2"):
        check_fits(chat(24, "inf2.48xlarge"), huge)


def test_kv_cache_counts(tmp_path):
    path = model_dir(tmp_path, LLAMA_2_13B)
    check_fits(chat(2, "inf2.xlarge", batch_size=1, sequence_length=4096), path)
    # Batch 8 × 4096 tokens of KV cache (12.5 GiB per core at tp 2) no longer fits two cores.
    with pytest.raises(InstanceFitError, match="KV cache 12.5 GiB"):
        check_fits(chat(2, "inf2.xlarge", batch_size=8, sequence_length=4096), path)


def test_an_encoder_too_big_for_one_core_says_it_cannot_be_split(tmp_path):
    big = {"model_type": "bert", "hidden_size": 8192, "num_hidden_layers": 64, "num_attention_heads": 64,
           "intermediate_size": 32768, "vocab_size": 30522}  # fmt: skip
    spec = ModelSpec(name="big", kind="dense", source="hub:acme/big", revision="main", batch_size=1,
                     sequence_length=128, auto_cast="matmul")  # fmt: skip
    with pytest.raises(InstanceFitError, match="compiles for one NeuronCore, so it cannot be split"):
        check_fits(spec, model_dir(tmp_path, big))


def test_the_builtin_models_fit_their_registry_entries(minilm_dir, splade_dir):
    from neuronforge.registry import load_registry

    registry = load_registry()
    for name, path in (("all_minilm_l6_v2", minilm_dir), ("splade_tiny", splade_dir)):
        assert check_fits(registry.get(name), path).fits


def test_export_refuses_before_compiling(tmp_path):
    spec = chat(4, "inf2.xlarge")
    model = ResolvedModel("llm", model_dir(tmp_path, LLAMA_2_13B), "r" * 40, spec.source, None)
    backend = NeuronBackend()
    with mock.patch.object(NeuronBackend, "export", autospec=True) as compile_, pytest.raises(InstanceFitError):
        export_artifact(spec, model, backend, tmp_path / "artifacts", logging.getLogger("test"))
    compile_.assert_not_called()
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())
