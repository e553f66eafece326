"""The torch backend's generator against transformers' own generate(): greedy tokens, right-padded batches, seeded
sampling, and the artifact's EOS ids."""

from __future__ import annotations

import pytest
from chat_fixtures import smollm2_dir, smollm2_generator  # noqa: F401  (pytest fixtures)

from neuronforge.chat import GenerationOptions, build_prompt


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def prompt_ids(tokenizer, question: str) -> list[int]:
    return build_prompt(tokenizer, [user(question)], 2000).input_ids


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "max_new_tokens"), [("What is the capital of France?", 12), ("Tell me a story.", 6)]
)
def test_greedy_generate_matches_transformers_generate(smollm2_generator, question, max_new_tokens):  # noqa: F811
    import torch

    tokenizer, model = smollm2_generator.tokenizer, smollm2_generator.model
    ids = prompt_ids(tokenizer, question)
    (ours,) = smollm2_generator.generate([ids], max_new_tokens=max_new_tokens)
    with torch.inference_mode():
        reference = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    assert ours.token_ids == reference[0, len(ids) :].tolist()
    assert ours.prompt_tokens == len(ids) and ours.output_tokens == len(ours.token_ids)
    assert ours.ttft_s > 0 and ours.total_s >= ours.ttft_s and ours.tokens_per_s > 0
    if ours.stopped_at_eos:
        assert ours.token_ids[-1] == tokenizer.eos_token_id
        assert "<|im_end|>" not in ours.raw_text
        assert "paris" in ours.text.lower()
    else:
        assert ours.output_tokens == max_new_tokens


@pytest.mark.slow
def test_right_padded_batch_equals_single_prompts(smollm2_generator):  # noqa: F811
    tokenizer = smollm2_generator.tokenizer
    long_ids = prompt_ids(tokenizer, "What is the capital of France?")
    short_ids = prompt_ids(tokenizer, "Hi")
    assert len(short_ids) < len(long_ids)  # really padded
    batch = smollm2_generator.generate([long_ids, short_ids], max_new_tokens=5)
    for ids, got in zip([long_ids, short_ids], batch, strict=True):
        (alone,) = smollm2_generator.generate([ids], max_new_tokens=5)
        assert got.token_ids == alone.token_ids


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(smollm2_generator):  # noqa: F811
    ids = prompt_ids(smollm2_generator.tokenizer, "What is the capital of France?")
    options = GenerationOptions(do_sample=True, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=7)
    runs = [smollm2_generator.generate([ids], max_new_tokens=4, options=options)[0] for _ in range(2)]
    assert runs[0].token_ids == runs[1].token_ids


@pytest.mark.slow
def test_warm_up_runs_prefill_and_a_decode_step_untimed(smollm2_generator):  # noqa: F811
    seconds = smollm2_generator.warm_up()
    assert seconds > 0 and smollm2_generator.warm_up_s == seconds


@pytest.mark.slow
def test_the_torch_backend_loads_a_generator_with_the_artifacts_shapes_and_eos(smollm2_dir):  # noqa: F811
    from neuronforge.backends.torch import TorchBackend

    generator = TorchBackend().load_generator(smollm2_dir, {"shapes": {"batch_size": 1, "sequence_length": 96}})
    assert (generator.batch_size, generator.sequence_length) == (1, 96)
    assert generator.eos_ids == {generator.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    ids = prompt_ids(generator.tokenizer, "What is the capital of France?")
    (reply,) = generator.generate([ids], max_new_tokens=96 - len(ids))
    assert reply.stopped_at_eos and "paris" in reply.text.lower()
