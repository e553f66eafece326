"""The chat evaluator's errors: every message says what is wrong and how to fix it."""

from __future__ import annotations


class ChatError(ValueError):
    """Base class for chat-evaluation errors; messages say what is wrong and how to fix it."""


class PromptSuiteError(ChatError):
    """The prompt-suite YAML is invalid; the message names the file, the conversation and the field."""


class PromptError(ChatError):
    """The messages passed to `build_prompt` are malformed (empty, bad role, misplaced system message...)."""


class PromptTooLongError(PromptError):
    """Even the newest message alone does not fit the token budget."""
