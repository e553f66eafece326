"""Chat evaluation: prompt suites, history truncation, a measured generation loop, checks and regression diffs.

Everything here is plain Python + a transformers tokenizer; the model runs behind a `Generator` its backend loads
(`Backend.load_generator`), within the limits of a Neuron export: a static `sequence_length` (prompt + new tokens
must fit), a static `batch_size`, and right padding only (optimum-neuron raises on left padding).

    suite        the prompt-suite YAML (schema, defaults cascade) and what a reply must satisfy
    prompt       the chat template, history truncation to the token budget, template checks
    generate     decoding options, the Generator interface, EOS ids, timings per reply
    results      playing conversations and suites; per-turn checks; the reported results
    regressions  golden replies and latency against the previous run

Callers use the package: `from neuronforge import chat; chat.load_prompt_suite(...)`.
"""

from neuronforge.chat.errors import ChatError, PromptError, PromptSuiteError, PromptTooLongError
from neuronforge.chat.generate import (
    Generation,
    GenerationOptions,
    Generator,
    TokenTrace,
    check_request,
    eos_token_ids,
    validate_options,
)
from neuronforge.chat.prompt import (
    TEMPLATE_TOKENS,
    PromptBuild,
    budget_for,
    build_prompt,
    leaked_template_tokens,
    strip_template_tokens,
    template_applied,
)
from neuronforge.chat.regressions import (
    GOLDEN_VERSION,
    compare_to_golden,
    golden_from,
    latency_regressions,
    load_golden,
    save_golden,
)
from neuronforge.chat.results import ConversationResult, SuiteResult, TurnResult, run_conversation, run_suite
from neuronforge.chat.suite import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SUITE,
    ID_PATTERN,
    Conversation,
    Expectation,
    Turn,
    check_expectations,
    load_prompt_suite,
)
from neuronforge.shapes import StaticShapeError

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_SUITE",
    "GOLDEN_VERSION",
    "ID_PATTERN",
    "TEMPLATE_TOKENS",
    "ChatError",
    "Conversation",
    "ConversationResult",
    "Expectation",
    "Generation",
    "GenerationOptions",
    "Generator",
    "PromptBuild",
    "PromptError",
    "PromptSuiteError",
    "PromptTooLongError",
    "StaticShapeError",
    "SuiteResult",
    "TokenTrace",
    "Turn",
    "TurnResult",
    "budget_for",
    "build_prompt",
    "check_expectations",
    "check_request",
    "compare_to_golden",
    "eos_token_ids",
    "golden_from",
    "latency_regressions",
    "leaked_template_tokens",
    "load_golden",
    "load_prompt_suite",
    "run_conversation",
    "run_suite",
    "save_golden",
    "strip_template_tokens",
    "template_applied",
    "validate_options",
]
