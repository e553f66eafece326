"""The Neuron backend: compile for AWS Inferentia2 / Trainium with optimum-neuron and the Neuron SDK.

- dense: `optimum.exporters.neuron.main_export(task="feature-extraction", library_name="sentence_transformers")`, the
  compile-only path (`NeuronSentenceTransformers.from_pretrained(export=True)` returns None on a host without a
  device); loaded back with `NeuronSentenceTransformers`.
- sparse: optimum-neuron has no SPLADE support, so our own head (neuronforge/backends/heads.py) is compiled with
  `torch_neuronx.trace`, with the compiler flags optimum-neuron would use, and saved as `model.neuron`.
- chat: `NeuronModelForCausalLM.get_neuron_config(...)` + `.export(...)`, saved with its own `save_pretrained`.

Everything Neuron is imported lazily: importing optimum.neuron sets NEURON_PLATFORM_TARGET_OVERRIDE in os.environ, and
the Neuron SDK (neuronx-cc, torch-neuronx, neuronx-distributed, libneuronxla) exists only on Neuron hosts or DLAMIs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from neuronforge.backends.base import (
    SIDE_FILES,
    Backend,
    ExportResult,
    Runner,
    artifact_eos_ids,
    toolchain_versions,
)
from neuronforge.backends.neuron_repo import hub_loadable_layout
from neuronforge.chat.generate import Generator
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel

# The file name optimum-neuron's own traced-model loaders look for (`*.neuron`, utils.NEURON_FILE_NAME).
NEURON_FILE = "model.neuron"
# NxDPreTrainedModel.COMPILED_MODEL_FILE_NAME: the decoder graphs of a chat export.
CAUSAL_LM_FILE = "model.pt"
OPTLEVEL = "2"  # main_export's default: the best balance of compile time and speed
# Weights inside the NEFF: the artifact is one self-contained file, and the loader need not move weights to the device.
INLINE_WEIGHTS_TO_NEFF = True
TARGET_ENV = "NEURON_PLATFORM_TARGET_OVERRIDE"
# Instance families the compiler targets; inf2 and trn1 share NeuronCore-v2.
INSTANCE_FAMILIES = {"inf2": "inf2", "trn1": "trn1", "trn1n": "trn1", "trn2": "trn2"}
NEURON_TOOLCHAIN_PACKAGES = ("optimum", "neuronx-cc", "torch-neuronx", "neuronx-distributed", "libneuronxla")
# import name -> pip name of each Neuron SDK package we may need.
SDK_MODULES = {
    "torch_neuronx": "torch-neuronx",
    "neuronxcc": "neuronx-cc",
    "neuronx_distributed": "neuronx-distributed",
    "libneuronxla": "libneuronxla",
}
INSTALL_HINT = (
    "Run this step on a Neuron host: an AWS Deep Learning AMI Neuron (PyTorch 2.8 venv) or Neuron DLC, or install the "
    "SDK from AWS's Neuron pip repository: pip install --extra-index-url https://pip.repos.neuron.amazonaws.com "
    '"optimum-neuron[neuronx]==0.4.5" (PyPI alone only has placeholder neuronx-cc/torch-neuronx packages). '
    "On a host without Neuron, set `backend: onnx` or `backend: torch` for this model in models.yaml."
)


class NeuronSDKError(RuntimeError):
    """The Neuron SDK (or a Neuron device) needed for this step is not available."""


def require_neuron_sdk(purpose: str, modules: tuple[str, ...]) -> None:
    """Raise NeuronSDKError naming every missing SDK package (checked without importing them)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(SDK_MODULES.get(module, module))
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise NeuronSDKError(
            f"{purpose} needs the AWS Neuron SDK, but {', '.join(missing)} {verb} not installed. {INSTALL_HINT}"
        )


def compiler_target(spec: ModelSpec) -> str:
    """The `--target` of neuronx-cc: spec.target, checked against spec.instance_type (e.g. inf2.8xlarge) if given.

    The instance size only decides how many NeuronCores exist, not the NEFF, so it is not part of the compile options.
    """
    if spec.instance_type:
        family = spec.instance_type.split(".")[0]
        if family not in INSTANCE_FAMILIES:
            raise ValueError(
                f"{spec.name}: instance_type {spec.instance_type!r} is not a Neuron instance; "
                f"use one of the families {', '.join(INSTANCE_FAMILIES)} (e.g. inf2.xlarge)"
            )
        if INSTANCE_FAMILIES[family] != INSTANCE_FAMILIES[spec.target]:
            raise ValueError(
                f"{spec.name}: instance_type {spec.instance_type!r} does not match target {spec.target!r}; "
                f"set target: {family} (or leave instance_type out)"
            )
    return spec.target


def neuronx_cc_flags(spec: ModelSpec) -> list[str]:
    """The neuronx-cc flags optimum-neuron's exporter builds (exporters/neuron/convert.py prepare_compiler_flags)."""
    if spec.auto_cast == "none":
        flags = ["--auto-cast", "none"]
    else:
        # neuronx-cc spells the matmul-only mode "matmult".
        mode = "matmult" if spec.auto_cast == "matmul" else spec.auto_cast
        flags = ["--auto-cast", mode, "--auto-cast-type", spec.auto_cast_type]
    return [*flags, "--optlevel", OPTLEVEL, "--target", compiler_target(spec), "--model-type", "transformer"]


def chat_dtype(spec: ModelSpec) -> str | None:
    """The decoder's weight/compute dtype; None keeps the checkpoint's own dtype (auto_cast: none)."""
    if spec.auto_cast == "none":
        return None
    if spec.auto_cast_type not in ("bf16", "fp16"):
        raise ValueError(
            f"{spec.name}: chat models compile on Neuron in bf16 or fp16 (optimum-neuron casts the whole decoder), "
            f"not {spec.auto_cast_type}; set auto_cast_type: bf16"
        )
    return spec.auto_cast_type


@contextlib.contextmanager
def compilation_target(target: str) -> Iterator[None]:
    """Point NEURON_PLATFORM_TARGET_OVERRIDE at `target` while compiling, and restore it afterwards.

    Importing optimum.neuron on a host without a device pins the override to trn1, and optimum-neuron's decoder
    export refuses to override it later, so it is aligned here, before torch_neuronx / neuronx_distributed load
    (the same as `optimum-cli export neuron --instance_type` does).
    """
    previous = os.environ.get(TARGET_ENV)
    try:
        from optimum.neuron.utils.instance import align_compilation_target

        align_compilation_target(target, override=True)
        yield
    finally:
        if previous is None:
            os.environ.pop(TARGET_ENV, None)
        else:
            os.environ[TARGET_ENV] = previous


def no_neuron_device() -> bool:
    from optimum.neuron.utils.system import get_neuron_major

    return get_neuron_major() == -1


def copy_missing_side_files(model_dir: Path, out_dir: Path) -> list[str]:
    """Tokenizer/generation files the exporter did not write; never replaces its config.json (neuron section)."""
    copied = []
    for name in SIDE_FILES:
        src, dst = Path(model_dir) / name, Path(out_dir) / name
        if src.is_file() and not dst.exists():
            shutil.copy2(src, dst)
            copied.append(name)
    return copied


class NeuronSentenceTransformersRunner(Runner):
    """A dense artifact loaded with optimum-neuron's NeuronSentenceTransformers.

    Its `encode()` returns rows in the wrong order for >= 3 texts of different lengths, so batches are tokenised by
    the Encoder, padded to the static shapes by Runner.run, and passed to the model's forward directly.
    """

    def __init__(self, model: Any, batch_size: int, sequence_length: int, pad_token_id: int):
        super().__init__(batch_size, sequence_length, pad_token_id)
        self.model = model

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
        return out["sentence_embedding"].float().cpu().numpy()


class TracedHeadRunner(Runner):
    """A sparse artifact: our SPLADE head compiled by torch_neuronx.trace, (ids, mask) -> activations [B, V]."""

    def __init__(self, module: Any, batch_size: int, sequence_length: int, pad_token_id: int):
        super().__init__(batch_size, sequence_length, pad_token_id)
        self.module = module

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        return out.float().cpu().numpy()


class NeuronBackend(Backend):
    name = "neuron"

    def toolchain(self) -> dict[str, str | None]:
        # The compiler and runtime versions decide whether a NEFF is reusable (optimum-neuron's cache ignores them).
        return {**toolchain_versions(), **toolchain_versions(NEURON_TOOLCHAIN_PACKAGES)}

    def export_options(self, spec: ModelSpec) -> dict[str, Any]:
        target = compiler_target(spec)
        if spec.kind == "chat":
            # The decoder is sharded over tensor_parallel_size cores and cast to one dtype; optimum-neuron picks
            # the compiler flags itself.
            return {"dtype": chat_dtype(spec), "target": target, "tensor_parallel_size": spec.tensor_parallel_size}
        # Encoders compile for one NeuronCore whatever `cores` says (extra cores could only replicate the model),
        # so tensor_parallel_size does not change their NEFF and stays out of the key.
        return {
            "auto_cast": spec.auto_cast,
            "auto_cast_type": spec.auto_cast_type if spec.auto_cast != "none" else None,
            "target": target,
            "optlevel": OPTLEVEL,
            "inline_weights_to_neff": INLINE_WEIGHTS_TO_NEFF,
        }

    def export(self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger) -> ExportResult:
        out_dir = Path(out_dir)
        options = self.export_options(spec)
        if spec.kind == "dense":
            extra = self._export_dense(spec, model, out_dir, log)
        elif spec.kind == "sparse":
            extra = self._export_sparse(spec, model, out_dir, log)
        elif spec.kind == "chat":
            extra = self._export_chat(spec, model, out_dir, log)
        else:
            raise ValueError(
                f"{spec.name}: the neuron backend exports dense, sparse and chat models, not {spec.kind!r}"
            )
        return ExportResult(format="neuronx", options=options, extra={"neuron": extra})

    def _export_dense(self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger) -> dict:
        require_neuron_sdk(f"{spec.name}: compiling for Neuron", tuple(SDK_MODULES))
        target = compiler_target(spec)
        auto_cast = None if spec.auto_cast == "none" else spec.auto_cast
        # The same compiler_kwargs `optimum-cli export neuron` derives from its flags (infer_compiler_kwargs).
        compiler_kwargs = {
            "auto_cast": auto_cast,
            "auto_cast_type": spec.auto_cast_type if auto_cast else None,
            "instance_type": target,
        }
        log.info(f"{spec.name}: main_export to Neuron ({spec.batch_size}x{spec.sequence_length}, {compiler_kwargs})")
        with compilation_target(target):
            from optimum.exporters.neuron import main_export

            main_export(
                model_name_or_path=str(model.path),
                output=out_dir,
                compiler_kwargs=compiler_kwargs,
                task="feature-extraction",
                library_name="sentence_transformers",
                inline_weights_to_neff=INLINE_WEIGHTS_TO_NEFF,
                optlevel=OPTLEVEL,
                # Our compile key is the cache: optimum-neuron's cache entries ignore the model revision/weights.
                disable_neuron_cache=True,
                # Without a device it skips validation anyway; with one, the export check does the parity test.
                do_validation=False,
                trust_remote_code=spec.trust_remote_code,
                local_files_only=True,
                # Static input shapes travel as **input_shapes.
                batch_size=spec.batch_size,
                sequence_length=spec.sequence_length,
            )
        if not (out_dir / NEURON_FILE).is_file():
            raise RuntimeError(f"{spec.name}: optimum-neuron's main_export finished without writing {NEURON_FILE}")
        copy_missing_side_files(model.path, out_dir)
        return {"file": NEURON_FILE, "loader": "optimum.neuron.NeuronSentenceTransformers"}

    def _export_sparse(self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger) -> dict:
        require_neuron_sdk(f"{spec.name}: compiling for Neuron", ("torch_neuronx", "neuronxcc"))
        import torch

        from neuronforge.backends.heads import build_head

        head = build_head("sparse", model.path, trust_remote_code=spec.trust_remote_code)
        shape = (spec.batch_size, spec.sequence_length)
        example = (torch.ones(shape, dtype=torch.long), torch.ones(shape, dtype=torch.long))
        flags = neuronx_cc_flags(spec)
        with compilation_target(compiler_target(spec)):
            import torch_neuronx

            kwargs: dict[str, Any] = {"compiler_args": flags, "inline_weights_to_neff": INLINE_WEIGHTS_TO_NEFF}
            cpu_only = no_neuron_device()
            if "cpu_backend" in inspect.signature(torch_neuronx.trace).parameters:
                # Lets torch-neuronx >= 2.8 compile on a host without a device (what optimum-neuron passes too).
                kwargs["cpu_backend"] = cpu_only
            elif cpu_only:
                raise NeuronSDKError(
                    f"{spec.name}: this torch-neuronx cannot compile without a Neuron device (no cpu_backend); "
                    f"compile on an inf2/trn1 host or upgrade the SDK. {INSTALL_HINT}"
                )
            log.info(f"{spec.name}: torch_neuronx.trace of the SPLADE head at {shape}, neuronx-cc {' '.join(flags)}")
            with torch.no_grad():
                traced = torch_neuronx.trace(head, example, **kwargs)
        torch.jit.save(traced, str(out_dir / NEURON_FILE))
        copy_missing_side_files(model.path, out_dir)
        return {"file": NEURON_FILE, "loader": "torch.jit.load", "compiler_args": flags}

    def _export_chat(self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger) -> dict:
        require_neuron_sdk(f"{spec.name}: compiling for Neuron", ("torch_neuronx", "neuronxcc", "neuronx_distributed"))
        from transformers import AutoConfig, AutoTokenizer

        dtype = chat_dtype(spec)
        target = compiler_target(spec)
        with compilation_target(target):
            import torch
            from optimum.neuron import NeuronModelForCausalLM

            config = AutoConfig.from_pretrained(model.path, trust_remote_code=spec.trust_remote_code).get_text_config()
            # get_neuron_config takes its dtype from the config; a checkpoint without one would fail its lookup.
            config.dtype = (
                {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype] if dtype else (config.dtype or torch.float32)
            )
            neuron_config = NeuronModelForCausalLM.get_neuron_config(
                str(model.path),
                config=config,
                batch_size=spec.batch_size,
                sequence_length=spec.sequence_length,
                tensor_parallel_size=spec.tensor_parallel_size,
                instance_type=target,
            )
            log.info(f"{spec.name}: NeuronModelForCausalLM.export (tp={spec.tensor_parallel_size}, {neuron_config})")
            neuron_model = NeuronModelForCausalLM.export(
                model_id=str(model.path),
                neuron_config=neuron_config,
                config=config,
                load_weights=False,  # compile only; weights are sharded into the artifact by save_pretrained
                trust_remote_code=spec.trust_remote_code,
            )
            neuron_model.save_pretrained(str(out_dir))
        # Rank checkpoints where optimum-neuron's loader finds them from a Hub id too (neuron_repo.py).
        hub_loadable_layout(out_dir)
        AutoTokenizer.from_pretrained(model.path, trust_remote_code=spec.trust_remote_code).save_pretrained(out_dir)
        copy_missing_side_files(model.path, out_dir)
        return {
            "file": CAUSAL_LM_FILE,
            "loader": "optimum.neuron.NeuronModelForCausalLM",
            "dtype": str(config.dtype).removeprefix("torch."),
        }

    def load_runner(self, artifact_dir: Path, manifest: dict[str, Any]) -> Runner:
        # NeuronCores come from NEURON_RT_VISIBLE_CORES, set by the caller's lease before the runtime starts.
        artifact_dir = Path(artifact_dir)
        kind = manifest["kind"]
        batch_size, sequence_length = manifest["shapes"]["batch_size"], manifest["shapes"]["sequence_length"]
        pad = manifest["pad_token_id"]
        if kind == "dense":
            require_neuron_sdk(f"loading {artifact_dir}", tuple(SDK_MODULES))
            from optimum.neuron import NeuronSentenceTransformers

            with self._runtime_errors(artifact_dir):
                model = NeuronSentenceTransformers.from_pretrained(artifact_dir, local_files_only=True)
            compiled = tuple(model.input_static_shapes["input_ids"])
            if compiled != (batch_size, sequence_length):
                raise ValueError(
                    f"{artifact_dir}: {NEURON_FILE} is compiled for {compiled} but manifest.json says "
                    f"({batch_size}, {sequence_length}); the artifact is inconsistent, export it again"
                )
            return NeuronSentenceTransformersRunner(model, batch_size, sequence_length, pad)
        if kind == "sparse":
            require_neuron_sdk(f"loading {artifact_dir}", ("torch_neuronx",))
            import torch
            import torch_neuronx  # registers the Neuron ops torch.jit.load needs

            with self._runtime_errors(artifact_dir):
                module = torch.jit.load(str(artifact_dir / NEURON_FILE))
                # As optimum-neuron's loader does: keep inputs and model on the first visible core.
                torch_neuronx.experimental.set_neuron_cores(module, start_nc=0, nc_count=1)
            return TracedHeadRunner(module, batch_size, sequence_length, pad)
        raise ValueError(f"{artifact_dir} holds a {kind} model; use load_generator for chat artifacts")

    def load_generator(self, artifact_dir: Path, manifest: dict[str, Any]) -> Generator:
        """optimum-neuron's decoder behind our generator; it needs tensor_parallel_size visible cores (the lease)."""
        require_neuron_sdk(f"loading {artifact_dir}", ("torch_neuronx", "neuronx_distributed"))
        from optimum.neuron import NeuronModelForCausalLM
        from transformers import AutoTokenizer

        from neuronforge.backends.neuron_generation import NeuronGenerator

        with self._runtime_errors(artifact_dir):
            model = NeuronModelForCausalLM.from_pretrained(str(artifact_dir))
        tokenizer = AutoTokenizer.from_pretrained(artifact_dir)
        return NeuronGenerator(model, tokenizer, eos_ids=artifact_eos_ids(artifact_dir, tokenizer))

    @staticmethod
    @contextlib.contextmanager
    def _runtime_errors(artifact_dir: Path) -> Iterator[None]:
        try:
            yield
        except RuntimeError as exc:
            if isinstance(exc, NeuronSDKError):
                raise
            raise NeuronSDKError(
                f"could not load the Neuron artifact {artifact_dir}: {exc}. Compiled models run only on a NeuronCore of "
                "the target they were compiled for: run on that inf2/trn host with free cores (`neuron-ls`), leased "
                "through NEURON_RT_VISIBLE_CORES"
            ) from exc
