"""The torch backend: the reference implementation, and the CUDA path where a GPU exists.

Encoders are saved as sentence-transformers folders (safetensors); chat models as transformers folders. The static
shapes are enforced by the runner, exactly as a Neuron artifact would enforce them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from neuronforge.backends.base import Backend, ExportResult, Runner, artifact_eos_ids, copy_side_files
from neuronforge.chat.generate import Generator
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchRunner(Runner):
    def __init__(self, head, batch_size: int, sequence_length: int, pad_token_id: int, device: str):
        super().__init__(batch_size, sequence_length, pad_token_id)
        self.head = head
        self.device = device

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.head(
                torch.from_numpy(input_ids).to(self.device), torch.from_numpy(attention_mask).to(self.device)
            )
        return out.float().cpu().numpy()


class TorchBackend(Backend):
    name = "torch"

    def export(self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger) -> ExportResult:
        if spec.kind == "chat":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            lm = AutoModelForCausalLM.from_pretrained(
                model.path, trust_remote_code=spec.trust_remote_code, use_safetensors=True, local_files_only=True
            )
            lm.save_pretrained(out_dir, safe_serialization=True)
            AutoTokenizer.from_pretrained(model.path, trust_remote_code=spec.trust_remote_code).save_pretrained(out_dir)
            return ExportResult(format="transformers")
        from neuronforge.backends.heads import load_library_model

        library_model = load_library_model(spec.kind, model.path, trust_remote_code=spec.trust_remote_code)
        library_model.save(str(out_dir), safe_serialization=True, create_model_card=False)
        copy_side_files(model.path, out_dir)
        return ExportResult(format="sentence-transformers")

    def load_runner(self, artifact_dir: Path, manifest: dict[str, Any]) -> Runner:
        from neuronforge.backends.heads import build_head

        device = torch_device()
        head = build_head(manifest["kind"], artifact_dir, device=device)
        shapes = manifest["shapes"]
        return TorchRunner(head, shapes["batch_size"], shapes["sequence_length"], manifest["pad_token_id"], device)

    def load_generator(self, artifact_dir: Path, manifest: dict[str, Any]) -> Generator:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from neuronforge.backends.torch_generation import TorchGenerator

        model = AutoModelForCausalLM.from_pretrained(artifact_dir, use_safetensors=True, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(artifact_dir)
        shapes = manifest["shapes"]
        return TorchGenerator(
            model.to(torch_device()).eval(),
            tokenizer,
            batch_size=shapes["batch_size"],
            sequence_length=shapes["sequence_length"],
            eos_ids=artifact_eos_ids(artifact_dir, tokenizer),
        )
