"""The published repos load with the standard classes, straight from the Hub, and equal the source models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from conftest import TEXTS


def cosines(got, want) -> np.ndarray:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


def loaded_from_the_hub(folder: Path) -> bool:
    """A file of the Hub download cache, not a temporary export made on this machine."""
    return Path(os.environ["HF_HOME"]).resolve() in Path(folder).resolve().parents


def test_dense_loads_with_the_onnx_backend(dense):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(dense["repo_id"], revision=dense["tag"], backend="onnx")
    ort_model = model[0].auto_model
    assert type(ort_model).__name__ == "ORTModelForFeatureExtraction"
    # The published onnx/model.onnx itself (sentence-transformers would otherwise export one on the fly).
    assert loaded_from_the_hub(ort_model.model_save_dir) and ort_model.model_save_dir.name == "onnx"
    want = SentenceTransformer(dense["source_dir"]).encode(TEXTS)
    assert cosines(model.encode(TEXTS), want).min() >= 0.9999


def test_dense_loads_with_torch(dense):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(dense["repo_id"], revision=dense["tag"])
    assert type(model[0].auto_model).__name__ == "BertModel"
    want = SentenceTransformer(dense["source_dir"]).encode(TEXTS)
    assert cosines(model.encode(TEXTS), want).min() >= 0.9999


def test_sparse_loads_with_sparse_encoder(sparse):
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(sparse["repo_id"], revision=sparse["tag"])
    got = model.encode(TEXTS, convert_to_sparse_tensor=False).numpy()
    want = SparseEncoder(sparse["source_dir"]).encode(TEXTS, convert_to_sparse_tensor=False).numpy()
    assert ((got > 0) == (want > 0)).all()  # the same active vocabulary dimensions
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_chat_loads_with_transformers_and_its_chat_template(chat):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    messages = [{"role": "user", "content": "Name three primary colours."}]

    def greedy(name: str, **kwargs) -> tuple[list[int], list[int]]:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs).eval()
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24, do_sample=False)
        return prompt[0].tolist(), out[0, prompt.shape[-1] :].tolist()

    prompt, reply = greedy(chat["repo_id"], revision=chat["tag"])
    want_prompt, want_reply = greedy(chat["source_dir"])
    assert prompt == want_prompt  # the repo's tokenizer carries the model's own chat template
    assert "<|im_start|>assistant" in AutoTokenizer.from_pretrained(chat["repo_id"], revision=chat["tag"]).decode(
        prompt
    )
    assert reply == want_reply and len(reply) > 0
