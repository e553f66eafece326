"""Playing a suite: each conversation turn by turn with its history, the per-turn checks, and the results the asset
reports (a markdown table, a JSON-serialisable dict, suite-level latency)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from neuronforge.chat.errors import ChatError
from neuronforge.chat.generate import Generation, GenerationOptions, Generator
from neuronforge.chat.prompt import budget_for, build_prompt, leaked_template_tokens, template_applied
from neuronforge.chat.suite import Conversation, check_expectations
from neuronforge.progress import Progress
from neuronforge.shapes import StaticShapeError


@dataclass
class TurnResult:
    index: int
    user: str
    generation: Generation | None  # None for fixed assistant turns and turns that could not run
    prompt_tokens: int = 0
    dropped_turns: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def reply(self) -> str | None:
        return self.generation.text if self.generation else None

    def to_dict(self) -> dict[str, Any]:
        g = self.generation
        return {
            "index": self.index,
            "user": self.user,
            "reply": self.reply,
            "prompt_tokens": self.prompt_tokens,
            "dropped_turns": self.dropped_turns,
            "output_tokens": g.output_tokens if g else 0,
            "stopped_at_eos": g.stopped_at_eos if g else None,
            "ttft_ms": round(g.ttft_s * 1000, 2) if g else None,
            "itl_ms": round(g.inter_token_latency_s * 1000, 2) if g else None,
            "tokens_per_s": round(g.tokens_per_s, 2) if g else None,
            "failures": list(self.failures),
        }


@dataclass
class ConversationResult:
    id: str
    turns: list[TurnResult]

    @property
    def generations(self) -> list[Generation]:
        return [t.generation for t in self.turns if t.generation is not None]

    @property
    def failures(self) -> list[str]:
        return [f"turn {t.index}: {f}" for t in self.turns for f in t.failures]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def prompt_tokens(self) -> int:
        """Summed over generated turns: each turn re-reads the whole kept history (no cache across turns)."""
        return sum(g.prompt_tokens for g in self.generations)

    @property
    def output_tokens(self) -> int:
        return sum(g.output_tokens for g in self.generations)

    @property
    def total_s(self) -> float:
        return sum(g.total_s for g in self.generations)

    def latency(self) -> dict[str, float]:
        return _latency(self.generations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "passed": self.passed,
            "failures": self.failures,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            **self.latency(),
            "turns": [t.to_dict() for t in self.turns],
        }


def _latency(generations: Sequence[Generation]) -> dict[str, float]:
    """Suite-level rates: tokens/s over all generation time, TTFT mean per reply, ITL mean per decoded token gap."""
    if not generations:
        return {"tokens_per_s": 0.0, "ttft_ms": 0.0, "itl_ms": 0.0}
    total_s = sum(g.total_s for g in generations)
    tokens = sum(g.output_tokens for g in generations)
    gaps = sum(max(g.output_tokens - 1, 0) for g in generations)
    decode_s = sum(g.inter_token_latency_s * max(g.output_tokens - 1, 0) for g in generations)
    return {
        "tokens_per_s": round(tokens / total_s, 3) if total_s > 0 else 0.0,
        "ttft_ms": round(1000 * sum(g.ttft_s for g in generations) / len(generations), 3),
        "itl_ms": round(1000 * decode_s / gaps, 3) if gaps else 0.0,
    }


def run_conversation(
    generator: Generator, conversation: Conversation, *, options: GenerationOptions | None = None
) -> ConversationResult:
    """Play `conversation` through `generator`: generate each non-fixed assistant reply, feed it back as history,
    check it.

    Every generated reply is also checked for a rendered chat template and for leaked template tokens. A turn whose
    prompt cannot fit the budget is recorded as a failure and ends the conversation (later turns depend on it).
    """
    options = options or GenerationOptions()
    tokenizer, sequence_length = generator.tokenizer, generator.sequence_length
    history: list[dict[str, str]] = []
    results: list[TurnResult] = []
    for index, turn in enumerate(conversation.turns):
        history.append({"role": "user", "content": turn.user})
        if not turn.generated:
            history.append({"role": "assistant", "content": turn.assistant or ""})
            results.append(TurnResult(index, turn.user, None))
            continue
        try:
            budget = budget_for(sequence_length, turn.max_new_tokens)
            prompt = build_prompt(tokenizer, history, budget, system=conversation.system)
        except (ChatError, StaticShapeError) as exc:
            results.append(TurnResult(index, turn.user, None, failures=[str(exc)]))
            break
        (generation,) = generator.generate([prompt.input_ids], max_new_tokens=turn.max_new_tokens, options=options)
        failures = []
        if not template_applied(prompt.text, tokenizer):
            failures.append("prompt was not rendered with the chat template")
        leaked = leaked_template_tokens(generation.raw_text)
        if leaked:
            failures.append(f"template tokens leaked into the reply: {leaked}")
        if turn.expect is not None:
            failures += check_expectations(generation.text, turn.expect, stopped_at_eos=generation.stopped_at_eos)
        results.append(TurnResult(index, turn.user, generation, prompt.prompt_tokens, prompt.dropped_turns, failures))
        history.append({"role": "assistant", "content": generation.text})
    return ConversationResult(conversation.id, results)


@dataclass
class SuiteResult:
    conversations: list[ConversationResult]
    sequence_length: int
    options: GenerationOptions = field(default_factory=GenerationOptions)
    warm_up_s: float | None = None  # the untimed call before the suite (a Neuron model's first call loads its graphs)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.conversations)

    @property
    def n_passed(self) -> int:
        return sum(c.passed for c in self.conversations)

    def latency(self) -> dict[str, float]:
        return _latency([g for c in self.conversations for g in c.generations])

    def summary_markdown(self) -> str:
        lines = [
            "| conversation | turns | prompt tokens | output tokens | TTFT ms | ITL ms | tok/s | passed | failures |",
            "|---|---:|---:|---:|---:|---:|---:|:---:|---|",
        ]
        for c in self.conversations:
            lat = c.latency()
            failures = "; ".join(c.failures).replace("|", "\\|").replace("\n", " ") or "—"
            lines.append(
                f"| {c.id} | {len(c.turns)} | {c.prompt_tokens} | {c.output_tokens} | {lat['ttft_ms']:.0f} | "
                f"{lat['itl_ms']:.0f} | {lat['tokens_per_s']:.1f} | {'✅' if c.passed else '❌'} | {failures} |"
            )
        lat = self.latency()
        lines.append(
            f"\n**{self.n_passed}/{len(self.conversations)} passed** · {lat['tokens_per_s']:.1f} tok/s · "
            f"TTFT {lat['ttft_ms']:.0f} ms · ITL {lat['itl_ms']:.0f} ms · sequence_length {self.sequence_length}"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (metadata, the stored last run for latency_regressions)."""
        return {
            "passed": self.passed,
            "n_conversations": len(self.conversations),
            "n_passed": self.n_passed,
            "sequence_length": self.sequence_length,
            "options": self.options.model_dump(),
            "warm_up_s": self.warm_up_s,
            "latency": self.latency(),
            "conversations": [c.to_dict() for c in self.conversations],
        }


def run_suite(
    generator: Generator,
    conversations: Sequence[Conversation],
    *,
    options: GenerationOptions | None = None,
    progress: Progress | None = None,
) -> SuiteResult:
    """Every conversation through `generator`, after one untimed warm-up call (so no TTFT includes graph loading);
    `progress` (if given) advances by conversation and names the one running.

    Options the generator cannot honour are refused before anything runs.
    """
    options = options or GenerationOptions()
    generator.check_options(options)
    if progress is not None:
        progress.set_note("warm-up call (untimed)")
    warm_up_s = generator.warm_up()
    results = []
    for conversation in conversations:
        if progress is not None:
            progress.set_note(f"{conversation.id} ({len(conversation.turns)} turns)")
        results.append(run_conversation(generator, conversation, options=options))
        if progress is not None:
            progress.advance(1)
    return SuiteResult(results, generator.sequence_length, options, warm_up_s)
