"""Every Usage snippet of every published model card runs as written, on a clean machine, and gives what the source
model gives.

Each snippet runs in its own interpreter of this venv with an empty Hub cache and *without* HF_ENDPOINT: if it loads
from the loopback Hub, it is because the snippet itself names that Hub.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Appended to a snippet: hand back the variables the snippets' conventions name.
FOOTER = """
import pickle as _pickle
_names = ("texts", "messages", "inputs", "output", "embeddings", "weights", "reply")
with open({out!r}, "wb") as _fh:
    _pickle.dump({{n: globals()[n] for n in _names if n in globals()}}, _fh)
"""
BLOCK = re.compile(r"```python\n(.*?)\n```", re.DOTALL)


def card_snippets(repo: dict[str, str]) -> list[str]:
    from huggingface_hub import hf_hub_download

    card = Path(hf_hub_download(repo["repo_id"], "README.md", revision=repo["tag"])).read_text()
    snippets = BLOCK.findall(card)
    assert snippets, f"the card of {repo['repo_id']} has no Usage snippet"
    return snippets


def run_snippet(code: str, tmp_path: Path) -> dict[str, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    script, out = tmp_path / "snippet.py", tmp_path / "result.pkl"
    script.write_text(code + FOOTER.format(out=str(out)))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "NEURONFORGE_CLIENT_REPOS")}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # a machine that never downloaded this repo
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, f"the snippet failed:\n{code}\n--- stderr ---\n{done.stderr[-4000:]}"
    return pickle.loads(out.read_bytes())


def as_array(value: Any) -> np.ndarray:
    if hasattr(value, "to_dense") and getattr(value, "is_sparse", False):
        value = value.to_dense()
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def test_dense_card_snippets(dense, tmp_path):
    from sentence_transformers import SentenceTransformer

    source = SentenceTransformer(dense["source_dir"])
    for i, code in enumerate(card_snippets(dense)):
        result = run_snippet(code, tmp_path / str(i))
        got, want = as_array(result["embeddings"]), source.encode(result["texts"])
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert cos.min() >= 0.9999, code


def test_sparse_card_snippets(sparse, tmp_path):
    from sentence_transformers import SparseEncoder

    source = SparseEncoder(sparse["source_dir"])
    for i, code in enumerate(card_snippets(sparse)):
        result = run_snippet(code, tmp_path / str(i))
        got = as_array(result["embeddings"] if "embeddings" in result else result["weights"])
        want = source.encode(result["texts"], convert_to_sparse_tensor=False).numpy()
        assert ((got > 0) == (want > 0)).all(), code
        np.testing.assert_allclose(got, want, atol=5e-5, err_msg=code)


def test_chat_card_snippets(chat, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat["source_dir"])
    source = AutoModelForCausalLM.from_pretrained(chat["source_dir"]).eval()
    for i, code in enumerate(card_snippets(chat)):
        result = run_snippet(code, tmp_path / str(i))
        prompt = tokenizer.apply_chat_template(result["messages"], add_generation_prompt=True, return_tensors="pt")
        assert result["inputs"].tolist() == prompt.tolist(), "the repo's chat template differs from the model's"
        new_tokens = result["output"].shape[-1] - prompt.shape[-1]
        with torch.inference_mode():
            want = source.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, do_sample=False
            )
        assert result["output"].tolist() == want.tolist(), code
        assert result["reply"] == tokenizer.decode(want[0, prompt.shape[-1] :], skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["dense", "sparse", "chat"])
def test_cards_name_the_hub_and_the_build(published, kind):
    from conftest import repo_of

    repo = repo_of(published, kind)
    for code in card_snippets(repo):
        assert f'os.environ["HF_ENDPOINT"] = "{published["endpoint"]}"' in code
        assert f'revision="{repo["tag"]}"' in code
