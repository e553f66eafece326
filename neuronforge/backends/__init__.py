"""Backends (neuron | onnx | torch) behind one interface, the rule that picks one per host, and the Encoder that runs
tokenised static-shape batches through any of them.

The submodules `onnx`, `torch` and `neuron` share their names with the libraries they wrap. Imports are absolute, so
`import torch` in them is the library; this file binds no global `torch`/`onnx` (it imports them inside functions),
which loading a submodule of the same name would replace.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuronforge.artifacts import verify_manifest
from neuronforge.backends.base import Backend, ExportResult, Runner, StaticShapeError, toolchain_versions
from neuronforge.progress import Progress
from neuronforge.registry import BACKENDS

__all__ = [
    "Backend",
    "Encoder",
    "ExportResult",
    "Runner",
    "StaticShapeError",
    "auto_backend_name",
    "cuda_available",
    "get_backend",
    "load_encoder",
    "neuron_available",
    "neuron_host_problem",
    "toolchain_versions",
]


@functools.lru_cache(maxsize=1)
def neuron_host_problem() -> str | None:
    """Why this host cannot run Neuron artifacts, or None when a Neuron device is present and the Neuron SDK imports.

    Checked in a subprocess: importing optimum.neuron / torch_neuronx mutates os.environ and can initialise the
    runtime, which must not happen in the step process before its cores are leased.
    """
    from neuronforge.devices import neuron_device_count

    # Any /dev/neuron<N>: a pod given one device by the device plugin may see /dev/neuron3 alone.
    if not neuron_device_count():
        return "this host has no Neuron device (no /dev/neuron<N>)"
    probe = subprocess.run([sys.executable, "-c", "import torch_neuronx"], capture_output=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return f"the Neuron SDK does not import here (import torch_neuronx: {last})"
    return None


def neuron_available() -> bool:
    """A Neuron device is present and the Neuron SDK imports."""
    return neuron_host_problem() is None


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def get_backend(name: str, *, onnx_threads: int = 0, neuron_compile_cache_url: str | None = None) -> Backend:
    if name == "onnx":
        from neuronforge.backends.onnx import OnnxBackend

        return OnnxBackend(threads=onnx_threads)
    if name == "torch":
        from neuronforge.backends.torch import TorchBackend

        return TorchBackend()
    if name == "neuron":
        from neuronforge.backends.neuron import NeuronBackend

        return NeuronBackend(compile_cache_url=neuron_compile_cache_url)
    raise ValueError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


def auto_backend_name(kind: str) -> str:
    if neuron_available():
        return "neuron"
    if cuda_available() or kind == "chat":
        return "torch"
    return "onnx"


class Encoder:
    """An exported dense or sparse model, ready to encode text through its backend's static-shape runner."""

    def __init__(self, artifact_dir: Path, manifest: dict[str, Any], runner: Runner, tokenizer: Any):
        self.artifact_dir = Path(artifact_dir)
        self.manifest = manifest
        self.runner = runner
        self.tokenizer = tokenizer
        self.kind: str = manifest["kind"]
        self.batch_size: int = runner.batch_size
        self.sequence_length: int = runner.sequence_length
        self.max_active_dims: int | None = manifest.get("options", {}).get("max_active_dims")

    def tokenize(self, texts: Sequence[str], *, truncate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Pad to the longest text (the runner pads on up to the static shape); without `truncate`, a text longer
        than sequence_length raises StaticShapeError, as a Neuron model would."""
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=truncate,
            max_length=self.sequence_length if truncate else None,
            return_tensors="np",
        )
        return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)

    def encode_batches(
        self,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        log: logging.Logger | None = None,
        progress: Progress | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield one output array per static batch, in input order (advancing `progress` by each batch's texts)."""
        total = len(texts)
        started = time.perf_counter()
        for start in range(0, total, self.batch_size):
            ids, mask = self.tokenize(texts[start : start + self.batch_size], truncate=truncate)
            yield self.runner.run(ids, mask)
            done = min(start + self.batch_size, total)
            if progress is not None:
                progress.advance(done - start)
            if log is not None and (done == total or (start // self.batch_size) % 50 == 49):
                rate = done / max(time.perf_counter() - started, 1e-9)
                log.info(f"encoded {done}/{total} texts, {rate:.1f}/s, ETA {(total - done) / rate:.0f}s")

    def encode(
        self,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        log: logging.Logger | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """dense → [N, D] embeddings (normalised if the model normalises); sparse → [N, V] SPLADE activations."""
        parts = list(self.encode_batches(texts, truncate=truncate, log=log, progress=progress))
        if not parts:
            width = self.manifest.get("dimension") or 0
            return np.zeros((0, width), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


def load_encoder(artifact_dir: Path | str, *, onnx_threads: int = 0) -> Encoder:
    """Load an exported encoder artifact; refuses folders whose files do not match their manifest."""
    from transformers import AutoTokenizer

    artifact_dir = Path(artifact_dir)
    manifest = verify_manifest(artifact_dir)
    if manifest["kind"] not in ("dense", "sparse"):
        raise ValueError(f"{artifact_dir} holds a {manifest['kind']} model, not an encoder")
    backend = get_backend(manifest["backend"], onnx_threads=onnx_threads)
    runner = backend.load_runner(artifact_dir, manifest)
    tokenizer = AutoTokenizer.from_pretrained(artifact_dir)
    return Encoder(artifact_dir, manifest, runner, tokenizer)
