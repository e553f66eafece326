"""The generation loop against transformers' generate(), right-padded batches, seeded sampling, static limits."""

from __future__ import annotations

import pytest
from chat_fixtures import smollm2_model, smollm2_tokenizer  # noqa: F401  (pytest fixtures)

from neuronforge.chat import GenerationOptions, StaticShapeError, build_prompt, generate, generate_batch

SEQUENCE_LENGTH = 2048


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


# -------------------------------------------------------------------------------------------- generation (real model)


def france_ids(tokenizer) -> list[int]:
    return build_prompt(tokenizer, [user("What is the capital of France?")], 2000).input_ids


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "max_new_tokens"), [("What is the capital of France?", 12), ("Tell me a story.", 6)]
)
def test_greedy_generate_matches_transformers_generate(smollm2_model, smollm2_tokenizer, question, max_new_tokens):  # noqa: F811
    import torch

    ids = build_prompt(smollm2_tokenizer, [user(question)], 2000).input_ids
    ours = generate(
        smollm2_model, smollm2_tokenizer, ids, max_new_tokens=max_new_tokens, sequence_length=SEQUENCE_LENGTH
    )
    with torch.inference_mode():
        reference = smollm2_model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    assert ours.token_ids == reference[0, len(ids) :].tolist()
    assert ours.prompt_tokens == len(ids) and ours.output_tokens == len(ours.token_ids)
    assert ours.ttft_s > 0 and ours.total_s >= ours.ttft_s and ours.tokens_per_s > 0
    if ours.stopped_at_eos:
        assert ours.token_ids[-1] == smollm2_tokenizer.eos_token_id
        assert "<|im_end|>" not in ours.raw_text
        assert "paris" in ours.text.lower()
    else:
        assert ours.output_tokens == max_new_tokens


@pytest.mark.slow
def test_right_padded_batch_equals_single_prompts(smollm2_model, smollm2_tokenizer):  # noqa: F811
    tok = smollm2_tokenizer
    long_ids = france_ids(tok)
    short_ids = build_prompt(tok, [user("Hi")], 2000).input_ids
    assert len(short_ids) < len(long_ids)  # really padded
    batch = generate_batch(
        smollm2_model,
        tok,
        [long_ids, short_ids],
        max_new_tokens=5,
        sequence_length=SEQUENCE_LENGTH,
        options=GenerationOptions(batch_size=2),
    )
    for ids, got in zip([long_ids, short_ids], batch, strict=True):
        alone = generate(smollm2_model, tok, ids, max_new_tokens=5, sequence_length=SEQUENCE_LENGTH)
        assert got.token_ids == alone.token_ids


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(smollm2_model, smollm2_tokenizer):  # noqa: F811
    ids = france_ids(smollm2_tokenizer)
    options = GenerationOptions(do_sample=True, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=7)
    runs = [
        generate(
            smollm2_model, smollm2_tokenizer, ids, max_new_tokens=4, sequence_length=SEQUENCE_LENGTH, options=options
        )
        for _ in range(2)
    ]
    assert runs[0].token_ids == runs[1].token_ids


def test_static_limits_are_enforced_before_running(smollm2_tokenizer):  # noqa: F811
    ids = france_ids(smollm2_tokenizer)
    model = object()  # never called: the limits are checked first
    with pytest.raises(StaticShapeError, match=rf"prompt_tokens \({len(ids)}\) \+ max_new_tokens \(20\)"):
        generate(model, smollm2_tokenizer, ids, max_new_tokens=20, sequence_length=len(ids) + 19)
    with pytest.raises(StaticShapeError, match="do not fit batch_size=1"):
        generate_batch(model, smollm2_tokenizer, [ids, ids], max_new_tokens=4, sequence_length=SEQUENCE_LENGTH)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(
            model,
            smollm2_tokenizer,
            ids,
            max_new_tokens=4,
            sequence_length=SEQUENCE_LENGTH,
            options=GenerationOptions(do_sample=True, temperature=0),
        )


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
