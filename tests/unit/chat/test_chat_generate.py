"""The Generator contract every backend shares: static limits and options checked before the token loop, EOS ids,
and the options' schema. The backends' own token loops are tested in tests/unit/backends/."""

from __future__ import annotations

import pytest
from chat_fixtures import smollm2_tokenizer  # noqa: F401  (pytest fixtures)

from neuronforge.chat import GenerationOptions, Generator, StaticShapeError, build_prompt, eos_token_ids


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


class NeverRuns(Generator):
    """A generator whose token loop must not be reached: the checks come first."""

    def token_loop(self, prompts, *, max_new_tokens, options, eos_ids):
        raise AssertionError("the token loop ran although the request was invalid")


def test_static_limits_and_options_are_enforced_before_running(smollm2_tokenizer):  # noqa: F811
    ids = build_prompt(smollm2_tokenizer, [user("What is the capital of France?")], 2000).input_ids
    generator = NeverRuns(smollm2_tokenizer, batch_size=1, sequence_length=len(ids) + 19, eos_ids={2})
    with pytest.raises(StaticShapeError, match=rf"prompt_tokens \({len(ids)}\) \+ max_new_tokens \(20\)"):
        generator.generate([ids], max_new_tokens=20)
    with pytest.raises(StaticShapeError, match="do not fit batch_size=1"):
        generator.generate([ids, ids], max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generator.generate([ids], max_new_tokens=4, options=GenerationOptions(do_sample=True, temperature=0))
    with pytest.raises(ValueError, match="a list of prompts"):
        generator.generate(ids, max_new_tokens=4)  # one flat prompt instead of a list of prompts
    with pytest.raises(ValueError, match="empty prompt"):
        generator.generate([[]], max_new_tokens=4)


def test_eos_ids_come_from_the_tokenizer_and_the_artifacts_generation_config(smollm2_tokenizer):  # noqa: F811
    from transformers import GenerationConfig

    eos = smollm2_tokenizer.eos_token_id
    assert eos_token_ids(smollm2_tokenizer) == {eos}
    assert eos_token_ids(smollm2_tokenizer, GenerationConfig(eos_token_id=[eos, 7])) == {eos, 7}
    assert eos_token_ids(smollm2_tokenizer, GenerationConfig(eos_token_id=9)) == {eos, 9}

    class NoEos:
        eos_token_id = None

    with pytest.raises(ValueError, match="no EOS token"):
        eos_token_ids(NoEos())


# ------------------------------------------------------------------------------------------------ the options


def test_generation_options_are_frozen_forbid_unknown_keys_and_dump_like_the_golden_files():
    import json

    from pydantic import ValidationError

    from neuronforge.paths import REPO_ROOT

    options = GenerationOptions(do_sample=True, seed=3)
    with pytest.raises(ValidationError):
        options.seed = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="do_smaple"):
        GenerationOptions(do_smaple=True)
    # The committed golden replies were recorded with these options: the same dict keeps them comparable.
    golden = json.loads((REPO_ROOT / "evals" / "golden" / "smollm2_135m_instruct-transformers.json").read_text())
    assert GenerationOptions().model_dump() == golden["options"]


def test_generation_options_of_a_larger_settings_object():
    class Settings(GenerationOptions):
        suite: str = "x.yaml"

    options = GenerationOptions.of(Settings(top_k=5, seed=9))
    assert type(options) is GenerationOptions
    assert options == GenerationOptions(top_k=5, seed=9)
