"""Encoder heads: the exact computation an export contains, as plain torch modules.

Each head takes (input_ids, attention_mask) of static shape and returns what SentenceTransformer / SparseEncoder would:
dense → the pooled (and, if the model says so, normalised) embedding [B, D]; sparse → SPLADE activations [B, V]
(log1p(relu(mlm_logits)) masked, max over the sequence). Running the library's own modules keeps pooling and
normalisation exactly as the model defines them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import numpy as np


class EncoderHead(torch.nn.Module):
    """(input_ids [B, S] int64, attention_mask [B, S] int64) → sentence_embedding [B, D or V] float32."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": torch.zeros_like(input_ids),
        }
        return self.encoder(features)["sentence_embedding"]


def load_library_model(kind: str, model_dir: Path, *, trust_remote_code: bool = False, device: str = "cpu"):
    """The sentence-transformers model for a dense or sparse model folder (safetensors only)."""
    from sentence_transformers import SentenceTransformer, SparseEncoder

    cls = SentenceTransformer if kind == "dense" else SparseEncoder
    model = cls(
        str(model_dir),
        device=device,
        trust_remote_code=trust_remote_code,
        model_kwargs={"use_safetensors": True},
        local_files_only=True,
    )
    return model.eval()


def build_head(kind: str, model_dir: Path, *, trust_remote_code: bool = False, device: str = "cpu") -> EncoderHead:
    if kind not in ("dense", "sparse"):
        raise ValueError(f"encoder heads exist for dense and sparse models, not {kind!r}")
    return EncoderHead(load_library_model(kind, model_dir, trust_remote_code=trust_remote_code, device=device)).eval()


def reference_encode(kind: str, model_dir: Path, texts: list[str], sequence_length: int) -> np.ndarray:
    """What the plain library returns for `texts`: SentenceTransformer.encode (dense) or SparseEncoder.encode as
    dense activations (sparse), truncated to the same sequence_length. The yardstick every backend is checked against."""
    import numpy as np

    model = load_library_model(kind, model_dir)
    model.max_seq_length = sequence_length
    if kind == "dense":
        return np.asarray(model.encode(texts, batch_size=32, convert_to_numpy=True), dtype=np.float32)
    out = model.encode(texts, batch_size=32, convert_to_tensor=True, convert_to_sparse_tensor=False)
    return out.float().cpu().numpy()
