"""Chat: tokens/s of the eval path (the torch backend's generator, an explicit KV-cache loop that times every token) vs
transformers' own `model.generate`, same artifact, prompt, greedy decoding and max_new_tokens.

The artifact is the torch-backend export the chat_smoke_eval asset loads (`load_generator`), made from the cached
GGUF conversion. Both sides are timed from the call to the last token, so tokens/s includes the prefill.
"""

from __future__ import annotations

import time
from typing import Any

from bench.context import CHAT_MODEL, BenchContext
from bench.harness import Row, alternate, paired_ratio

PROMPT = "Explain in a few sentences why a search engine builds an inverted index instead of scanning every document."


class FirstTokenClock:
    """A transformers streamer that notes when the first generated token arrives (its first `put` is the prompt)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


def chat_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    import torch

    from neuronforge import chat
    from neuronforge.artifacts import read_manifest
    from neuronforge.backends import get_backend

    artifact_dir = ctx.artifact(CHAT_MODEL)
    manifest = read_manifest(artifact_dir)
    with ctx.setup("load chat model"):
        generator = get_backend(manifest["backend"]).load_generator(artifact_dir, manifest)
        generator.warm_up()
    model, tokenizer = generator.model, generator.tokenizer
    sequence_length = manifest["shapes"]["sequence_length"]
    new_tokens = ctx.sizes.chat_new_tokens
    prompt = chat.build_prompt(
        tokenizer, [{"role": "user", "content": PROMPT}], chat.budget_for(sequence_length, new_tokens)
    )
    eos = sorted(generator.eos_ids)
    input_ids = torch.tensor([prompt.input_ids])

    def eval_path(_: int) -> dict[str, Any]:
        started = time.perf_counter()
        (gen,) = generator.generate([prompt.input_ids], max_new_tokens=new_tokens)
        return {"tokens": gen.token_ids, "wall": time.perf_counter() - started, "ttft": gen.ttft_s}

    def raw_generate(_: int) -> dict[str, Any]:
        clock = FirstTokenClock()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
                streamer=clock,
            )
        wall = time.perf_counter() - started
        return {"tokens": out[0, input_ids.shape[1] :].tolist(), "wall": wall, "ttft": clock.first_token_at - started}

    seconds, outputs = alternate({"generate": raw_generate, "eval": eval_path}, ctx.sizes.chat_rounds)
    # tokens/s per round = tokens / wall; the ratio of rates is the inverse ratio of times when token counts match.
    rates = {name: [len(o["tokens"]) / o["wall"] for o in outs] for name, outs in outputs.items()}
    stats = paired_ratio([1 / r for r in rates["generate"]], [1 / r for r in rates["eval"]])
    same = all(a["tokens"] == b["tokens"] for a, b in zip(outputs["eval"], outputs["generate"], strict=True))
    ttft = {name: sorted(o["ttft"] for o in outs)[len(outs) // 2] for name, outs in outputs.items()}
    info = {
        "prompt_tokens": prompt.prompt_tokens,
        "new_tokens": [len(o["tokens"]) for o in outputs["eval"]],
        "tokens_per_s": {name: sorted(r)[len(r) // 2] for name, r in rates.items()},
        "ttft_s": ttft,
        "seconds": seconds,
        "identical_tokens": same,
    }
    row = Row(
        "chat",
        "SmolLM2 eval-path tokens/s",
        "model.generate (greedy, same prompt and max_new_tokens)",
        stats["median"],
        0.95,
        quality=f"identical greedy tokens: {same}",
        quality_ok=same,
        note=f"{info['tokens_per_s']['eval']:.1f} vs {info['tokens_per_s']['generate']:.1f} tok/s; TTFT "
        f"{ttft['eval'] * 1e3:.0f} ms vs {ttft['generate'] * 1e3:.0f} ms ({prompt.prompt_tokens} prompt tokens)",
        details={"paired_ratio": stats, **info},
    )
    return [row], info
