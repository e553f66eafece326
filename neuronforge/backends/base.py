"""The backend interface: export a model to a static-shape artifact, load it, run a tokenised batch.

Neuron compiles for fixed (batch_size, sequence_length); every backend keeps that contract, so an artifact behaves the
same on CPU, CUDA and Inferentia: inputs are padded up to the static shapes, and larger inputs are refused.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuronforge.chat.generate import Generator
from neuronforge.registry import ModelSpec
from neuronforge.shapes import StaticShapeError
from neuronforge.sources import ResolvedModel

TOOLCHAIN_PACKAGES = (
    "torch",
    "transformers",
    "sentence-transformers",
    "onnx",
    "onnxruntime",
    "optimum-neuron",
    "neuronx-cc",
    "torch-neuronx",
)
# Tokenizer and config files every artifact carries so it loads on its own (e.g. after a Hub download).
SIDE_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "generation_config.json",
    "chat_template.jinja",
)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def toolchain_versions(packages: Sequence[str] = TOOLCHAIN_PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (no imports: cheap enough for a sensor tick)."""
    return {name: package_version(name) for name in packages}


@dataclass
class ExportResult:
    format: str  # "onnx", "onnx-int8", "sentence-transformers", "transformers", "neuronx"
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Runner(ABC):
    """Runs one static-shape batch. Subclasses implement `_forward` on exactly (batch_size, sequence_length)."""

    def __init__(self, batch_size: int, sequence_length: int, pad_token_id: int = 0):
        self.batch_size = batch_size
        self.sequence_length = sequence_length
        self.pad_token_id = pad_token_id

    @abstractmethod
    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Pad (rows and columns) up to the static shapes, run, and return only the real rows."""
        rows, length = input_ids.shape
        if rows > self.batch_size or length > self.sequence_length:
            raise StaticShapeError(
                f"input of shape ({rows}, {length}) exceeds the compiled static shapes (batch_size={self.batch_size}, "
                f"sequence_length={self.sequence_length}); split the batch or truncate/chunk the text, or re-export "
                "with larger shapes in models.yaml"
            )
        ids = np.full((self.batch_size, self.sequence_length), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((self.batch_size, self.sequence_length), dtype=np.int64)
        ids[:rows, :length] = input_ids
        mask[:rows, :length] = attention_mask
        return self._forward(ids, mask)[:rows]


class Backend(ABC):
    """One way of exporting and running models: neuron, onnx or torch."""

    name: str

    def toolchain(self) -> dict[str, str | None]:
        return toolchain_versions()

    def export_options(self, spec: ModelSpec) -> dict[str, Any]:
        """The options that change this backend's binary (they go into the compile key)."""
        return {}

    @abstractmethod
    def export(self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger) -> ExportResult: ...

    @abstractmethod
    def load_runner(self, artifact_dir: Path, manifest: dict[str, Any]) -> Runner:
        """A runner for an encoder artifact (dense → [B, D] embeddings, sparse → [B, V] activations)."""

    def load_generator(self, artifact_dir: Path, manifest: dict[str, Any]) -> Generator:
        """A chat artifact ready for timed generation within its static shapes (neuronforge.chat.Generator)."""
        raise NotImplementedError(f"the {self.name} backend does not run chat models")


def artifact_eos_ids(artifact_dir: Path, tokenizer: Any) -> set[int]:
    """EOS ids from the artifact's own generation_config.json (plus the tokenizer's), never a loader's default."""
    from transformers import GenerationConfig

    from neuronforge.chat.generate import eos_token_ids

    path = Path(artifact_dir) / "generation_config.json"
    return eos_token_ids(tokenizer, GenerationConfig.from_pretrained(artifact_dir) if path.is_file() else None)


def copy_side_files(model_dir: Path, out_dir: Path) -> list[str]:
    copied = []
    for name in SIDE_FILES:
        src = Path(model_dir) / name
        if src.is_file():
            shutil.copy2(src, Path(out_dir) / name)
            copied.append(name)
    return copied
