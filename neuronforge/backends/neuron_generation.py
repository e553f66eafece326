"""Generation on Neuron: optimum-neuron 0.4.5's decoder driven through its own contract.

`NxDModelForCausalLM.forward(input_ids, position_ids, seq_ids, sampling_params)` has no attention mask, no
`use_cache`, no `past_key_values` and no `**kwargs` (optimum/neuron/models/inference/backend/modules/decoder/
modeling_decoder.py:361-370): the KV cache lives on the device, a prompt longer than one token with position 0 runs
the context-encoding graph (:380), a single token the token-generation graph (:397). Llama compiles with on-device
sampling (models/inference/llama/modeling_llama.py:360), so forward returns one token id per row, sampled on the
device from `sampling_params` = (top_k, top_p, temperature) per row (backend/modules/generation/sampling.py:149,
validated against the compiled max_topk at :102).

The loop below is upstream's own `NxDGenerationMixin._sample` (generation_utils.py:99-206) with what a measured
evaluation needs and upstream's generate() lacks: per-token timestamps (its `streamer` is ignored), EOS from the
artifact's generation_config.json (upstream derives it from config.json, :70), and refusal of options the device
cannot honour (upstream drops `repetition_penalty` silently, :109). On-device sampling draws from the device's
random generator, seeded when the model is loaded: `seed` does not make a sampled Neuron run repeat itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from neuronforge.chat.errors import ChatError
from neuronforge.chat.generate import GenerationOptions, Generator, TokenRecorder, TokenTrace

TORCH_BACKEND_HINT = "or set `backend: torch` for this model in models.yaml to sample on the host"


class NeuronGenerator(Generator):
    """An optimum-neuron causal LM (NeuronModelForCausalLM.from_pretrained) on the cores of the caller's lease."""

    def __init__(self, model: Any, tokenizer: Any, *, eos_ids: set[int]) -> None:
        config = model.neuron_config
        super().__init__(
            tokenizer, batch_size=config.batch_size, sequence_length=config.sequence_length, eos_ids=eos_ids
        )
        self.model = model
        self.on_device_sampling = bool(config.on_device_sampling)
        self.max_topk = int(config.max_topk)

    def check_options(self, options: GenerationOptions) -> None:
        super().check_options(options)
        if not self.on_device_sampling:
            return  # the decoder returns logits and our host sampler honours every option
        if options.repetition_penalty != 1.0:
            raise ChatError(
                f"repetition_penalty={options.repetition_penalty} cannot be honoured: this Neuron decoder samples on "
                "the device, whose sampling_params are only (top_k, top_p, temperature) (optimum-neuron sampling.py"
                f":149). Set repetition_penalty: 1.0, {TORCH_BACKEND_HINT}."
            )
        if options.do_sample and (options.top_k is None or options.top_k > self.max_topk):
            asked = "all tokens (top_k: null)" if options.top_k is None else f"top_k={options.top_k}"
            raise ChatError(
                f"{asked} cannot be honoured: this Neuron decoder was compiled to sample among at most max_topk="
                f"{self.max_topk} tokens (optimum-neuron sampling.py:124). Set top_k between 1 and {self.max_topk}, "
                f"{TORCH_BACKEND_HINT}."
            )

    def _sampling_params(self, rows: int, options: GenerationOptions) -> Any:
        from optimum.neuron.models.inference.backend.modules.generation.sampling import prepare_sampling_params

        if not options.do_sample:
            # Greedy on a sampling graph: top_k=1 (generation_utils.py:144-146).
            return prepare_sampling_params(batch_size=rows, top_k=1, top_p=1.0, temperature=1.0)
        return prepare_sampling_params(
            batch_size=rows,
            top_k=options.top_k,
            top_p=1.0 if options.top_p is None else options.top_p,
            temperature=options.temperature,
        )

    def token_loop(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, options: GenerationOptions, eos_ids: set[int]
    ) -> TokenTrace:
        import torch
        from optimum.neuron.models.inference.backend.modules.generation.generation_utils import (
            increase_position_ids,
            position_ids_from_attention_mask,
        )

        from neuronforge.backends.torch_generation import Sampler

        rows, pad_id = len(prompts), self.pad_id
        longest = max(len(p) for p in prompts)
        if longest < 2:
            # A one-token input routes to the token-generation graph, over an empty cache (modeling_decoder.py:380).
            raise ChatError(
                "A Neuron decoder prefill needs a prompt of at least 2 tokens; build it with build_prompt()."
            )
        # Right padding only: the decoder rejects left padding (generation_utils.py:138).
        input_ids = torch.full((rows, longest), pad_id, dtype=torch.long)
        mask = torch.zeros((rows, longest), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, : len(prompt)] = 1
        position_ids = position_ids_from_attention_mask(mask)
        seq_ids = torch.arange(rows)  # one KV-cache line per row
        sampling_params = self._sampling_params(rows, options)
        host_sampler = None if self.on_device_sampling else Sampler(options)
        seen = [list(p) for p in prompts]

        def step(ids: Any, positions: Any) -> list[int]:
            out = self.model.forward(
                input_ids=ids, position_ids=positions, seq_ids=seq_ids, sampling_params=sampling_params
            )
            if host_sampler is None:
                return out.reshape(-1).tolist()  # token ids sampled on the device
            return host_sampler(out[:, -1, :], seen)

        # A new request starts with the context-encoding graph (upstream generate() resets too, :94).
        self.model.reset()
        recorder = TokenRecorder(rows, eos_ids, time.perf_counter())
        with torch.inference_mode():
            chosen = step(input_ids, position_ids)
            for index in range(max_new_tokens):
                active = [not finished for finished in recorder.finished]
                recorder.add(chosen, time.perf_counter())
                for row, token in enumerate(chosen):
                    if active[row]:
                        seen[row].append(token)
                if recorder.done or index == max_new_tokens - 1:
                    break
                # Finished rows decode a pad token (static batch); their outputs are ignored (:186-188).
                feed = torch.tensor([[pad_id if recorder.finished[r] else chosen[r]] for r in range(rows)])
                position_ids = increase_position_ids(position_ids, 1)
                chosen = step(feed, position_ids)
        return recorder.trace()
