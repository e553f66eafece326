"""Session-wide SmolLM2 fixtures for the chat tests: converted once (~45 s), then loaded from the cache.

Import the fixtures into a test module (`from chat_fixtures import smollm2_dir, ...`). The conversion itself is
memoised at module level, so modules that import these fixtures share one checkpoint and one loaded model.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest

from neuronforge.gguf_convert import cached_conversion, find_builtin_smollm2_gguf

FALLBACK_CACHE = Path("/tmp/neuronforge-test-cache")


def smollm2_cache_root() -> Path:
    """NEURONFORGE_HOME/cache/converted (tests/conftest.py pins it to a stable folder), shared with the pipeline."""
    home = os.environ.get("NEURONFORGE_HOME")
    return Path(home) / "cache" / "converted" if home else FALLBACK_CACHE


@functools.cache
def converted_smollm2() -> Path:
    return cached_conversion(find_builtin_smollm2_gguf(), smollm2_cache_root())


@functools.cache
def loaded_smollm2() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = converted_smollm2()
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return AutoTokenizer.from_pretrained(path), model


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return converted_smollm2()


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted_smollm2())


@pytest.fixture(scope="session")
def smollm2_model() -> Any:
    return loaded_smollm2()[1]


@functools.cache
def smollm2_torch_generator(sequence_length: int = 2048, batch_size: int = 2) -> Any:
    """The cached SmolLM2 behind the torch backend's generator (the class chat_smoke_eval gets from load_generator)."""
    from neuronforge.backends.base import artifact_eos_ids
    from neuronforge.backends.torch_generation import TorchGenerator

    tokenizer, model = loaded_smollm2()
    return TorchGenerator(
        model,
        tokenizer,
        batch_size=batch_size,
        sequence_length=sequence_length,
        eos_ids=artifact_eos_ids(converted_smollm2(), tokenizer),
    )


@pytest.fixture(scope="session")
def smollm2_generator() -> Any:
    return smollm2_torch_generator()
