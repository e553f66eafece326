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
import re
import shlex
import shutil
import tempfile
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
# The packages whose versions change a Neuron binary: the compiler and its torch/XLA front end, optimum-neuron's and
# neuronx-distributed's graph builders, and transformers' modeling code that is traced. onnx, onnxruntime and
# sentence-transformers are no part of a NEFF, so they stay out of a Neuron compile key.
NEURON_TOOLCHAIN_PACKAGES = (
    "torch",
    "transformers",
    "optimum",
    "optimum-neuron",
    "neuronx-cc",
    "torch-neuronx",
    "neuronx-distributed",
    "libneuronxla",
)
ARTIFACT_FORMAT = "neuronx"
# Environment variables that change what gets compiled (compile-key inputs, recorded in the manifest's options):
# - NEURON_CC_FLAGS: extra neuronx-cc flags, which optimum-neuron also edits in place
#   (utils/torch_xla_and_neuronx_initialization.py:38-57); only cache placement (--cache_dir, --no-cache) is left out,
#   since it decides where a NEFF is kept, not what it is (utils/cache_utils.py:208-245).
# - NXD_LAYOUT_TRANSFORMATION_OPTIONS: the weight layout neuronx-distributed shards a decoder into
#   (models/inference/backend/pretrained_model.py:176); decoders only.
# - NEURON_LOGICAL_NC_CONFIG: physical cores per logical core on trn2 (LNC, default 2); a decoder always compiles with
#   optimum-neuron's `--lnc=2` on trn2 (backend/config.py:157, decoder/modeling_decoder.py:425).
CC_FLAGS_ENV = "NEURON_CC_FLAGS"
LAYOUT_ENV = "NXD_LAYOUT_TRANSFORMATION_OPTIONS"
LNC_ENV = "NEURON_LOGICAL_NC_CONFIG"
# Where neuronx-distributed builds a decoder; it deletes this folder at the start of every compile, so two exports
# sharing the default /tmp/nxd_model/ destroy each other's work (models/inference/backend/pretrained_model.py:77).
WORK_DIR_ENV = "BASE_COMPILE_WORK_DIR"
# libneuronxla's persistent compile cache (a folder or s3:// URL) that optimum-neuron's decoder compile goes through
# (cache/hub_cache.py:243-255, 288-291); default /var/tmp/neuron-compile-cache (utils/cache_utils.py:219).
CACHE_URL_ENV = "NEURON_COMPILE_CACHE_URL"
DEFAULT_COMPILE_CACHE = "/var/tmp/neuron-compile-cache"
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


def cache_free_cc_flags(flags: str) -> str:
    """NEURON_CC_FLAGS without the flags that only place the compile cache, whitespace-normalised."""
    kept, tokens = [], shlex.split(flags)
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token == "--no-cache":
            continue
        elif token == "--cache_dir":
            skip = True  # `--cache_dir <path>`
        elif not token.startswith("--cache_dir="):
            kept.append(token)
    return " ".join(kept)


def compile_environment(spec: ModelSpec, target: str) -> dict[str, Any]:
    """The settings read from the environment that change this model's Neuron binary (see CC_FLAGS_ENV above)."""
    settings: dict[str, Any] = {}
    flags = cache_free_cc_flags(os.environ.get(CC_FLAGS_ENV, ""))
    if flags:
        settings["neuron_cc_flags"] = flags
    if spec.kind == "chat" and os.environ.get(LAYOUT_ENV):
        settings["nxd_layout_transformation_options"] = os.environ[LAYOUT_ENV]
    if target == "trn2":
        lnc = "2" if spec.kind == "chat" else os.environ.get(LNC_ENV, "2")
        if lnc not in ("1", "2"):
            raise ValueError(f"{LNC_ENV}={lnc!r}: trn2 logical cores are 1 or 2 physical cores; unset it or use 1 or 2")
        settings["logical_nc_config"] = int(lnc)
    return settings


@contextlib.contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, leave alone) environment variables for the body, then restore them."""
    previous = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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

    def __init__(self, compile_cache_url: str | None = None):
        self._compile_cache_url = compile_cache_url

    def compile_cache_url(self) -> str:
        """The persistent compile cache decoder compiles use: configured, else NEURON_COMPILE_CACHE_URL, else the SDK's
        default. Where a NEFF is cached, not what it is: recorded, never part of the compile key."""
        return self._compile_cache_url or os.environ.get(CACHE_URL_ENV) or DEFAULT_COMPILE_CACHE

    def toolchain(self) -> dict[str, str | None]:
        # The compiler and runtime versions decide whether a NEFF is reusable (optimum-neuron's cache ignores them).
        return toolchain_versions(NEURON_TOOLCHAIN_PACKAGES)

    def export_options(self, spec: ModelSpec) -> dict[str, Any]:
        target = compiler_target(spec)
        if spec.kind == "chat":
            # The decoder is sharded over tensor_parallel_size cores and cast to one dtype; optimum-neuron picks
            # the compiler flags itself.
            options = {"dtype": chat_dtype(spec), "target": target, "tensor_parallel_size": spec.tensor_parallel_size}
        else:
            # Encoders compile for one NeuronCore whatever `cores` says (extra cores could only replicate the model),
            # so tensor_parallel_size does not change their NEFF and stays out of the key.
            options = {
                "auto_cast": spec.auto_cast,
                "auto_cast_type": spec.auto_cast_type if spec.auto_cast != "none" else None,
                "target": target,
                "optlevel": OPTLEVEL,
                "inline_weights_to_neff": INLINE_WEIGHTS_TO_NEFF,
            }
        return {**options, **compile_environment(spec, target)}

    def export(self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger) -> ExportResult:
        out_dir = Path(out_dir)
        options = self.export_options(spec)
        exporters = {"dense": self._export_dense, "sparse": self._export_sparse, "chat": self._export_chat}
        if spec.kind not in exporters:
            raise ValueError(
                f"{spec.name}: the neuron backend exports dense, sparse and chat models, not {spec.kind!r}"
            )
        # Each export compiles in its own work folder, removed afterwards: under BASE_COMPILE_WORK_DIR if the user set
        # one (neuronx-distributed empties that folder, so concurrent exports must not share it), else beside the
        # artifact.
        parent = Path(os.environ.get(WORK_DIR_ENV) or out_dir.parent)
        parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(dir=parent, prefix=".compile-"))
        cache = self.compile_cache_url() if spec.kind == "chat" else None
        try:
            with environment({WORK_DIR_ENV: str(workdir), CACHE_URL_ENV: cache}):
                extra = exporters[spec.kind](spec, model, out_dir, log, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return ExportResult(format=ARTIFACT_FORMAT, options=options, extra={"neuron": extra})

    def _export_dense(
        self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger, workdir: Path
    ) -> dict:
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
                compiler_workdir=workdir,
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

    def _export_sparse(
        self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger, workdir: Path
    ) -> dict:
        require_neuron_sdk(f"{spec.name}: compiling for Neuron", ("torch_neuronx", "neuronxcc"))
        import torch

        from neuronforge.backends.heads import build_head

        head = build_head("sparse", model.path, trust_remote_code=spec.trust_remote_code)
        shape = (spec.batch_size, spec.sequence_length)
        example = (torch.ones(shape, dtype=torch.long), torch.ones(shape, dtype=torch.long))
        flags = neuronx_cc_flags(spec)
        with compilation_target(compiler_target(spec)):
            import torch_neuronx

            kwargs: dict[str, Any] = {
                "compiler_args": flags,
                "compiler_workdir": str(workdir),
                "inline_weights_to_neff": INLINE_WEIGHTS_TO_NEFF,
            }
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

    def _export_chat(
        self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger, workdir: Path
    ) -> dict:
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
        """Name the fix for the two ways loading fails on a host: no free NeuronCore, or an artifact built by another
        toolchain. Any other error passes through unchanged (it is not the host's fault)."""
        try:
            yield
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, NeuronSDKError):
                raise
            message = str(exc)
            if _TOOLCHAIN_REFUSAL.search(message):
                raise NeuronToolchainMismatch(
                    f"{artifact_dir} was compiled by another Neuron toolchain than this host's: {message}. Re-export "
                    "it here (materialize its export asset; the compile key records the versions) or install the "
                    "versions in its manifest.json"
                ) from exc
            if _RUNTIME_REFUSAL.search(message):
                raise NeuronSDKError(
                    f"could not load the Neuron artifact {artifact_dir}: {message}. Compiled models run only on a "
                    "NeuronCore of the target they were compiled for: run on that inf2/trn host with free cores "
                    "(`neuron-ls`), leased through NEURON_RT_VISIBLE_CORES"
                ) from exc
            raise


class NeuronToolchainMismatch(RuntimeError):
    """The artifact was compiled by a neuronx-cc / optimum-neuron other than the installed one."""


# optimum-neuron's refusals of an artifact built by another toolchain: configuration_utils.py:229-240 (optimum-neuron
# and neuronx-cc versions of a decoder), utils/version_utils.py:92-99 (a traced model from a newer compiler).
_TOOLCHAIN_REFUSAL = re.compile(
    r"generated with optimum-neuron version|exported using version .* of the neuronxcc compiler|"
    r"newer than current compiler"
)
# The runtime (or optimum-neuron's pre-checks) finding no usable NeuronCore: "Neuron runtime cannot be initialized",
# "The PyTorch Neuron Runtime could not be initialized", "NRT:nrt_allocate_neuron_cores NeuronCore(s) not available"
# (aws-neuron-samples#44, optimum-neuron#377), models/inference/backend/pretrained_model.py:401-413 (instance type and core count checks).
_RUNTIME_REFUSAL = re.compile(
    r"neuron runtime|nrt[_:]|neuroncore|no neuron device|NEURON_RT|requires at least \d+ Neuron cores|"
    r"current instance type is",
    re.IGNORECASE,
)
