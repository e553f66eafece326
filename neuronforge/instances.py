"""Will a model fit the Neuron instance it is compiled for? Checked before compiling, which takes minutes to hours,
so a model that cannot load fails at once with the smallest tensor_parallel_size or instance that would fit.

- Cores: tensor_parallel_size at most the instance's NeuronCores (neuronforge.devices.INSTANCE_CORES; trn2 counts
  logical cores at LNC=2). trn1 runs collectives only over 1, 2, 8, 16 or 32·k cores ("nrt_load_collectives:
  Unsupported topology", optimum-neuron#619); inf2 takes 1 or any even count (the same message sends other counts
  to inf2). Encoders compile for one core whatever tensor_parallel_size says.
- Memory per core: weights = bytes/param × params / tp, plus the KV cache = 2 × layers × kv_heads × head_dim ×
  sequence_length × batch_size × bytes / tp, where a decoder's KV heads are replicated or padded to tp the way
  optimum-neuron shards them (models/inference/backend/modules/attention/gqa.py:58-82), against 16 GiB per core on
  inf2/trn1 and 24 GiB per logical core on trn2. No headroom is added for activations or the runtime: a model that
  passes may still not load, one that fails never would.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronforge.devices import INSTANCE_CORES
from neuronforge.registry import ModelSpec

GIB = 1 << 30
MEMORY_PER_CORE = {"inf2": 16 * GIB, "trn1": 16 * GIB, "trn2": 24 * GIB}
FAMILY = {"inf2": "inf2", "trn1": "trn1", "trn1n": "trn1", "trn2": "trn2", "trn2u": "trn2"}
_DTYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F64": 8,
    "I64": 8,
    "I32": 4,
    "I8": 1,
    "U8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


class InstanceFitError(ValueError):
    """The model cannot run on the configured instance or tensor_parallel_size; the message names what would."""


def allowed_tp(family: str, tp: int) -> bool:
    if family == "trn1":
        return tp in (1, 2, 8, 16) or tp % 32 == 0
    if family == "inf2":
        return tp == 1 or tp % 2 == 0
    return tp >= 1


def instances_of(family: str) -> list[tuple[str, int]]:
    """(instance type, cores) of a family, fewest cores first."""
    return sorted(
        ((name, n) for name, n in INSTANCE_CORES.items() if FAMILY[name.split(".")[0]] == family), key=lambda x: x[1]
    )


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    bytes_per_param: int
    weights_per_core: float
    kv_cache_per_core: float
    per_core_limit: int

    @property
    def per_core(self) -> float:
        return self.weights_per_core + self.kv_cache_per_core

    @property
    def fits(self) -> bool:
        return self.per_core <= self.per_core_limit

    def describe(self) -> str:
        return (
            f"{self.per_core / GIB:.1f} GiB per core (weights {self.weights_per_core / GIB:.1f} GiB of "
            f"{self.params / 1e9:.2f}B params × {self.bytes_per_param} bytes, KV cache "
            f"{self.kv_cache_per_core / GIB:.1f} GiB) against {self.per_core_limit / GIB:.0f} GiB per core"
        )


def count_parameters(model_dir: Path, config: dict[str, Any]) -> int:
    """Parameters from the safetensors headers (exact, no weights read), else estimated from config.json."""
    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total or estimate_parameters(config)


def estimate_parameters(config: dict[str, Any]) -> int:
    """A decoder's parameters from its config (Llama-style: attention, gated MLP, embeddings, untied head)."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    inter = config.get("intermediate_size") or 4 * hidden
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * inter
    embeddings = config["vocab_size"] * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp) + embeddings


def kv_heads_per_core(heads: int, kv_heads: int, tp: int) -> float:
    """KV heads one core holds once optimum-neuron shards them over tp (gqa.py:58-82)."""
    padded_heads = heads + (-heads) % tp  # neuronx_distributed.parallel_layers.pad.get_number_of_extra_heads
    if heads == kv_heads:
        return padded_heads / tp
    if kv_heads % tp == 0:
        return kv_heads / tp
    if tp % kv_heads == 0:
        return 1.0  # replicated to one KV head per rank
    return padded_heads / tp  # converted to multi-head attention


def bytes_per_param(spec: ModelSpec, config: dict[str, Any]) -> int:
    if spec.kind == "chat":
        if spec.auto_cast != "none":
            return _DTYPE_BYTES[spec.auto_cast_type]  # the decoder is cast to one dtype
        return _DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype") or "float32"), 4)
    # Encoders keep fp32 weights unless everything is auto-cast to a 16-bit type.
    return 2 if spec.auto_cast == "all" and spec.auto_cast_type in ("bf16", "fp16") else 4


def estimate_memory(spec: ModelSpec, config: dict[str, Any], params: int, tp: int) -> MemoryEstimate:
    family = FAMILY[spec.target]
    size = bytes_per_param(spec, config)
    shards = tp if spec.kind == "chat" else 1
    kv = 0.0
    if spec.kind == "chat":
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        per_core_heads = kv_heads_per_core(heads, kv_heads, tp)
        kv = 2 * config["num_hidden_layers"] * per_core_heads * head_dim * spec.sequence_length * spec.batch_size * size
    return MemoryEstimate(params, size, params * size / shards, kv, MEMORY_PER_CORE[family])


def check_fits(spec: ModelSpec, model_dir: Path) -> MemoryEstimate:
    """Raise InstanceFitError unless `spec` fits its instance (or, without instance_type, its target family)."""
    config_file = Path(model_dir) / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config = config.get("text_config", config)
    family = FAMILY[spec.target]
    tp = spec.tensor_parallel_size if spec.kind == "chat" else 1
    where = spec.instance_type or f"any {family} instance"
    cores = INSTANCE_CORES.get(spec.instance_type or "", max(n for _, n in instances_of(family)))
    fix = f"set tensor_parallel_size for {spec.name} in models.yaml"

    if not allowed_tp(family, tp):
        options = [n for n in range(1, cores + 1) if allowed_tp(family, n)]
        near = [max(n for n in options if n < tp), *[n for n in options if n > tp][:1]]
        raise InstanceFitError(
            f"{spec.name}: tensor_parallel_size {tp} cannot run on {family}: its runtime connects only "
            f"{'1, 2, 8, 16 or a multiple of 32' if family == 'trn1' else '1 or an even number of'} NeuronCores; "
            f"{fix} to {' or '.join(map(str, near))}"
        )
    if tp > cores:
        bigger = [name for name, n in instances_of(family) if n >= tp]
        hint = f"use instance_type {bigger[0]} or larger" if bigger else f"no {family} instance has {tp} cores"
        raise InstanceFitError(
            f"{spec.name}: tensor_parallel_size {tp} exceeds the {cores} NeuronCores of {where}; {hint}"
        )
    if not config:
        return MemoryEstimate(0, 0, 0.0, 0.0, MEMORY_PER_CORE[family])  # nothing to estimate from
    params = count_parameters(Path(model_dir), config)
    estimate = estimate_memory(spec, config, params, tp)
    if estimate.fits:
        return estimate
    if spec.kind != "chat":
        raise InstanceFitError(
            f"{spec.name}: needs {estimate.describe()}; an encoder compiles for one NeuronCore, so it cannot be "
            "split: use a smaller model, or auto_cast: all with auto_cast_type bf16 to halve its weights"
        )
    largest = max(n for _, n in instances_of(family))
    for candidate in (n for n in range(tp + 1, largest + 1) if allowed_tp(family, n)):
        if estimate_memory(spec, config, params, candidate).fits:
            if candidate <= cores:
                raise InstanceFitError(f"{spec.name}: needs {estimate.describe()}; {fix} to {candidate} (or more)")
            instance = next(name for name, n in instances_of(family) if n >= candidate)
            raise InstanceFitError(
                f"{spec.name}: needs {estimate.describe()} at tensor_parallel_size {tp}; it fits from "
                f"tensor_parallel_size {candidate}, which needs instance_type {instance} or larger"
            )
    raise InstanceFitError(
        f"{spec.name}: needs {estimate.describe()}; it does not fit even at tensor_parallel_size {largest} on the "
        f"largest {family} instance: lower batch_size or sequence_length, or use a smaller model"
    )
