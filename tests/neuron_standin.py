"""CPU graphs that stand in for the NEFFs neuronx-distributed compiles for optimum-neuron's decoder.

On a Neuron host, `ModelBuilder.trace()` compiles one graph per bucket (context encoding, token generation) of
optimum-neuron's `NxDDecoderModelForCausalLM` and returns a TorchScript module that routes each call to the graph
whose traced input shapes match, keeps the KV cache on the device and samples there. `StandInDecoderGraph` is that
module on CPU: a transformers causal LM (the same weights, handed over by optimum-neuron's own
`nxd_model.initialize(weights, start_rank)` call) keeping its own KV cache, one cache line per `seq_ids` entry, and
sampling with optimum-neuron's own `Sampler` in its CPU form. Its `forward` is `create_autospec`'d from the real
`NxDDecoderModelForCausalLM.forward` (modeling_decoder.py:124-130), so any argument the real graph would not accept
(`attention_mask=`, `use_cache=`, `past_key_values=`…) raises TypeError, and it refuses inputs whose shapes or
dtypes differ from the traced example inputs, as a NEFF does.

Everything around it — NxDModelForCausalLM, its decoder wrappers (padding, int32 casts, batch splitting), the
neuron config, checkpoint conversion and loading, sampling-parameter helpers — is optimum-neuron's real code.
"""

from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path
from typing import Any
from unittest import mock

MARKER = "neuronforge-standin-decoder.json"


class BaseModelInstance:
    """neuronx_distributed.trace.model_builder.BaseModelInstance (the base optimum-neuron's model instances extend)."""

    def __init__(self, module_cls: Any, input_output_aliases: Any) -> None:
        self.module_cls = module_cls
        self.module = None
        self.input_output_aliases = [input_output_aliases]


class StandInModelBuilder:
    """neuronx-distributed's ModelBuilder, with the arguments optimum-neuron passes (pretrained_model.py:79-100).

    trace() returns the CPU stand-in instead of compiling; like the real one it first empties its compiler_workdir.
    shard_checkpoint() runs optimum-neuron's checkpoint loader (its HF -> Neuron state-dict conversion) and writes or
    returns one checkpoint per local rank (unsharded: the stand-in runs the whole model on rank 0).
    """

    def __init__(
        self,
        router,
        tp_degree,
        checkpoint_loader,
        start_rank_id=0,
        pp_degree=1,
        ep_degree=1,
        local_ranks_size=None,
        world_size=None,
        compiler_workdir=None,
        master_proc_env_vars=None,
        debug=False,
        num_cores_per_group=1,
        init_custom_process_group_fn=None,
        logical_nc_config=1,
        weights_to_skip_layout_optimization=frozenset(),
    ) -> None:
        self.tp_degree = tp_degree
        self.world_size = world_size or tp_degree * pp_degree * ep_degree
        self.start_rank_id = start_rank_id
        self.local_ranks_size = local_ranks_size or self.world_size
        self.checkpoint_loader = checkpoint_loader
        self.compiler_workdir = compiler_workdir or "/tmp/nxd_model/"
        self.logical_nc_config = logical_nc_config
        self.models: dict[str, dict[str, Any]] = {}
        self.traced = False

    def add(self, key, model_instance, example_inputs, compiler_args=None, bucket_config=None, priority_model_idx=None):
        self.models[key] = {
            "instance": model_instance,
            "example_inputs": example_inputs,
            "compiler_args": compiler_args,
        }
        return self

    def trace(self, initialize_model_weights=True):
        if os.path.exists(self.compiler_workdir):
            shutil.rmtree(self.compiler_workdir)  # neuronx-distributed cleans its work dir at every compile
        os.makedirs(self.compiler_workdir)
        self.traced = True
        return StandInDecoderGraph(graph_spec(self.models))

    def shard_checkpoint(self, serialize_path=None):
        from safetensors.torch import save_file

        state = {name: tensor.contiguous() for name, tensor in self.checkpoint_loader().items()}
        ranks = range(self.start_rank_id, self.start_rank_id + self.local_ranks_size)
        if serialize_path is None:
            return [state for _ in ranks]
        os.makedirs(serialize_path, exist_ok=True)
        for rank in ranks:
            save_file(state, os.path.join(serialize_path, f"tp{rank}_sharded_checkpoint.safetensors"))
        return None


def graph_spec(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the traced graphs fix: the model config, the neuron config facts the graph uses, each bucket's inputs."""
    first = next(iter(models.values()))["instance"]
    neuron = first.neuron_config
    return {
        "config": first.config.to_dict(),
        "neuron": {
            "max_batch_size": neuron.max_batch_size,
            "sequence_length": neuron.sequence_length,
            "speculation_length": neuron.speculation_length,
            "on_device_sampling": neuron.on_device_sampling,
            "output_logits": neuron.output_logits,
            "max_topk": neuron.max_topk,
            "torch_dtype": str(neuron.torch_dtype).removeprefix("torch."),
        },
        "buckets": {
            tag: [[list(t.shape), str(t.dtype)] for t in model["example_inputs"][0]] for tag, model in models.items()
        },
    }


def registered_jit_load(real_load):
    """torch.jit.load that also reads stand-in graphs (the stub SDK's counterpart of torch-neuronx's registration)."""

    def load(f, map_location=None, _extra_files=None, _restore_shapes=False):
        extra = dict(_extra_files or {})
        extra.setdefault(MARKER, "")
        module = real_load(f, map_location, extra, _restore_shapes)
        if _extra_files is not None:
            _extra_files.update({k: v for k, v in extra.items() if k in _extra_files})
        if extra[MARKER]:
            return StandInDecoderGraph(json.loads(extra[MARKER]))
        return module

    return load


class _NxDModel:
    """The `nxd_model` attribute of a traced NxD model: `initialize` moves the rank checkpoints onto the device."""

    def __init__(self, graph: StandInDecoderGraph) -> None:
        self.graph = graph

    def initialize(self, weights: list[dict[str, Any]], start_rank: Any) -> None:
        self.graph.load_weights(weights[0])


class StandInDecoderGraph:
    """The traced decoder graphs of one export, on CPU (see the module docstring)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from optimum.neuron.models.inference.backend.modules.decoder.modeling_decoder import (
            NxDDecoderModelForCausalLM,
        )

        self.spec = spec
        self.neuron = spec["neuron"]
        self.nxd_model = _NxDModel(self)
        self.lm = None
        self.cache_lines: dict[int, Any] = {}
        # The traced module's forward, exactly: (input_ids, position_ids, seq_ids, sampling_params), no **kwargs.
        self.graph = mock.create_autospec(NxDDecoderModelForCausalLM, instance=True)
        self.graph.forward.side_effect = self._run

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.graph.forward(*args, **kwargs)

    forward = __call__

    @property
    def calls(self) -> list[Any]:
        return self.graph.forward.call_args_list

    # -- torch.jit.save / torch.jit.load ------------------------------------------------------------------------------

    def save(self, path: str, _extra_files: dict[str, Any] | None = None) -> None:
        """What torch.jit.save(graph, path) calls: a TorchScript archive that only the stub SDK can run."""
        import torch

        class NeedsTheNeuronSDK(torch.nn.Module):
            def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("a stand-in decoder graph: load it with the stub Neuron SDK installed")

        files = {**(_extra_files or {}), MARKER: json.dumps(self.spec)}
        torch.jit.script(NeedsTheNeuronSDK()).save(path, _extra_files=files)

    # -- weights ------------------------------------------------------------------------------------------------------

    def load_weights(self, state: dict[str, Any]) -> None:
        """Undo optimum-neuron's HF -> Neuron conversion (fused QKV, "model." prefix, rank tensors) into an HF LM."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config_dict = dict(self.spec["config"])
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        hf_state = {}
        for name, tensor in state.items():
            if name.endswith("rank_util.rank"):
                continue
            if name.endswith("self_attn.Wqkv.weight"):
                q, k, v = torch.split(tensor, [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim])
                prefix = "model." + name.removesuffix("Wqkv.weight")
                hf_state.update({prefix + "q_proj.weight": q, prefix + "k_proj.weight": k, prefix + "v_proj.weight": v})
            else:
                hf_state[name if name.startswith("lm_head.") else "model." + name] = tensor
        dtype = getattr(torch, self.neuron["torch_dtype"])
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype)
        lm.load_state_dict(hf_state, strict=True)
        self.lm = lm.eval()

    # -- one call of the compiled graphs -----------------------------------------------------------------------------

    def _bucket(self, args: tuple[Any, ...]) -> str:
        got = [[list(t.shape), str(t.dtype)] for t in args]
        for tag, inputs in self.spec["buckets"].items():
            if inputs == got:
                return tag
        raise RuntimeError(f"no compiled graph takes inputs {got}; the traced buckets are {self.spec['buckets']}")

    def _run(self, input_ids: Any, position_ids: Any, seq_ids: Any, sampling_params: Any) -> Any:
        import torch
        from optimum.neuron.models.inference.backend.modules.generation.sampling import Sampler
        from transformers import DynamicCache

        if self.lm is None:
            raise RuntimeError("the decoder's weights were never loaded onto the device (nxd_model.initialize)")
        tag = self._bucket((input_ids, position_ids, seq_ids, sampling_params))
        context_encoding = input_ids.shape[-1] > 1 and input_ids.shape[-1] != self.neuron["speculation_length"]
        rows = []
        with torch.inference_mode():
            for row in range(input_ids.shape[0]):
                line = int(seq_ids[row])
                if context_encoding:
                    # The graph reads the hidden state at the largest position id (modeling_decoder.py:226).
                    last = int(torch.max(position_ids[row], dim=0).indices)
                    cache = DynamicCache()
                    out = self.lm(
                        input_ids=input_ids[row : row + 1, : last + 1].long(),
                        position_ids=position_ids[row : row + 1, : last + 1].long(),
                        past_key_values=cache,
                        use_cache=True,
                    )
                    self.cache_lines[line] = cache
                    rows.append(out.logits[0, -1].float())
                    continue
                position = int(position_ids[row, 0])
                cache = self.cache_lines.get(line)
                if cache is None or cache.get_seq_length() < position:
                    # A padding row of the static batch: the device reads unwritten cache slots; the caller drops it.
                    rows.append(torch.zeros(self.spec["config"]["vocab_size"]))
                    continue
                cache.crop(position)  # the device overwrites slot `position` and attends to the slots before it
                out = self.lm(
                    input_ids=input_ids[row : row + 1].long(),
                    position_ids=position_ids[row : row + 1].long(),
                    past_key_values=cache,
                    use_cache=True,
                )
                rows.append(out.logits[0, -1].float())
        logits = torch.stack(rows)
        if self.neuron["output_logits"]:
            raise NotImplementedError(f"{tag}: the stand-in does not return logits beside sampled tokens")
        if not self.neuron["on_device_sampling"]:
            return logits[:, None, :]
        # optimum-neuron's on-device sampler, in the CPU form of the same code (sampling.py:175, on_cpu=True).
        sampler = Sampler(types.SimpleNamespace(max_topk=self.neuron["max_topk"]), do_sample=True, on_cpu=True)
        return sampler(logits, sampling_params)


def artifact_graph(artifact_dir: Path) -> dict[str, Any]:
    """The stand-in spec saved in an artifact's model.pt (for assertions about the traced buckets)."""
    import torch

    files = {MARKER: ""}
    torch.jit.load(str(Path(artifact_dir) / "model.pt"), _extra_files=files)
    return json.loads(files[MARKER])
