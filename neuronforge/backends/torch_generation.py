"""Generation on the torch backend: a transformers causal LM, a host-side KV cache and a host-side sampler.

The reference implementation (CPU, or CUDA where a GPU exists). It keeps the limits of a Neuron export — static
shapes, right padding — so a suite that passes here is the same request a Neuron decoder receives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from neuronforge.chat.generate import GenerationOptions, Generator, TokenRecorder, TokenTrace, validate_options


class Sampler:
    """Picks every row's next token from its last logits: greedy, or seeded sampling with temperature / top-k /
    top-p; the repetition penalty applies to both."""

    def __init__(self, options: GenerationOptions) -> None:
        import torch

        validate_options(options)
        self.options = options
        self.generator = torch.Generator(device="cpu").manual_seed(options.seed) if options.do_sample else None

    def __call__(self, logits: Any, seen: list[list[int]]) -> list[int]:
        """logits: [rows, vocab]; seen: each row's prompt + generated tokens so far."""
        import torch

        options = self.options
        scores = logits.float()
        if options.repetition_penalty != 1.0:
            # Same rule as transformers' RepetitionPenaltyLogitsProcessor, over prompt + generated tokens.
            for row, tokens in enumerate(seen):
                index = torch.tensor(sorted(set(tokens)), dtype=torch.long, device=scores.device)
                picked = scores[row, index]
                penalty = options.repetition_penalty
                scores[row, index] = torch.where(picked < 0, picked * penalty, picked / penalty)
        if not options.do_sample:
            return scores.argmax(dim=-1).tolist()
        scores = scores / options.temperature
        if options.top_k is not None and options.top_k < scores.shape[-1]:
            kth = torch.topk(scores, options.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if options.top_p is not None and options.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            # drop a token when the tokens before it already cover top_p; the most likely one always stays
            drop_sorted = (cumulative - sorted_scores.softmax(dim=-1)) >= options.top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, -math.inf)
        probs = scores.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1).tolist()


class TorchGenerator(Generator):
    """A transformers causal LM: prefill, then one KV-cached decode step per token, sampled on the host."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int, sequence_length: int, eos_ids: set[int]):
        super().__init__(tokenizer, batch_size=batch_size, sequence_length=sequence_length, eos_ids=eos_ids)
        self.model = model

    def token_loop(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, options: GenerationOptions, eos_ids: set[int]
    ) -> TokenTrace:
        """Prompts of different lengths are right-padded (Neuron rejects left padding): each row reads its first
        logits at its own last real position, and position ids + attention mask make the pad slots invisible."""
        import torch

        model, pad_id = self.model, self.pad_id
        next_tokens = Sampler(options)
        device = getattr(model, "device", torch.device("cpu"))
        rows = len(prompts)
        lengths = [len(p) for p in prompts]
        longest = max(lengths)
        padded = any(n != longest for n in lengths)
        input_ids = torch.full((rows, longest), pad_id, dtype=torch.long)
        mask = torch.zeros((rows, longest), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, : len(prompt)] = 1
        # Only the logits at each row's last real token are needed: skip a [rows, longest, vocab] tensor.
        last = torch.tensor(lengths) - 1
        keep = torch.unique(last)
        pick = torch.searchsorted(keep, last)
        seen = [list(p) for p in prompts]

        recorder = TokenRecorder(rows, eos_ids, time.perf_counter())
        with torch.inference_mode():
            if padded:
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                out = model(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    use_cache=True,
                    logits_to_keep=keep.to(device),
                )
            else:
                # Same call as transformers' generate() without padding, so greedy output matches it token for token.
                out = model(input_ids=input_ids.to(device), use_cache=True, logits_to_keep=1)
                pick = torch.zeros(rows, dtype=torch.long)
            past = out.past_key_values
            logits = out.logits[torch.arange(rows), pick.to(out.logits.device)]
            for step in range(max_new_tokens):
                chosen = next_tokens(logits, seen)
                active = [not finished for finished in recorder.finished]
                recorder.add(chosen, time.perf_counter())
                for row, token in enumerate(chosen):
                    if active[row]:
                        seen[row].append(token)
                if recorder.done or step == max_new_tokens - 1:
                    break
                # Finished rows keep decoding a pad token (static batch shape); their outputs are ignored.
                feed = torch.tensor(
                    [[pad_id if recorder.finished[r] else chosen[r]] for r in range(rows)], dtype=torch.long
                )
                if padded:
                    mask = torch.cat([mask, torch.ones((rows, 1), dtype=torch.long)], dim=1)
                    positions = (torch.tensor(lengths) + step).unsqueeze(1)
                    out = model(
                        input_ids=feed.to(device),
                        attention_mask=mask.to(device),
                        position_ids=positions.to(device),
                        past_key_values=past,
                        use_cache=True,
                    )
                else:
                    out = model(input_ids=feed.to(device), past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[:, -1]
        return recorder.trace()
