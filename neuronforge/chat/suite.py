"""The prompt suite: the YAML schema, its defaults cascade, and what a generated reply must satisfy.

A suite (`evals/chat_prompts.yaml`) is a list of conversations; the evaluator generates every assistant reply in turn
and feeds it back as history, so multi-turn memory is tested the way a chat UI would use the model.

The `*Spec` pydantic models describe the file as written (unknown keys rejected); `load_prompt_suite` resolves them
(defaults → conversation → turn, fixed replies) into the frozen `Conversation`s the evaluator plays, and turns
pydantic's errors into messages that name the file, the conversation and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from neuronforge.chat.errors import PromptSuiteError
from neuronforge.paths import REPO_ROOT

DEFAULT_SUITE = REPO_ROOT / "evals" / "chat_prompts.yaml"
DEFAULT_MAX_NEW_TOKENS = 48

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")  # usable as a metadata key and a file name


# ------------------------------------------------------------------------------------ what the evaluator plays


@dataclass(frozen=True)
class Expectation:
    """What a generated reply must satisfy.

    `must_contain` is all-of over groups, any-of inside a group: `[["paris"], ["france", "french"]]` needs "paris" and
    one of "france"/"french". `must_not_contain` fails on any listed string. Matching is case-insensitive substring.
    `stop_at_eos` demands the reply end with the end-of-turn token within `max_new_tokens` (not cut off).
    """

    must_contain: tuple[tuple[str, ...], ...] = ()
    must_not_contain: tuple[str, ...] = ()
    stop_at_eos: bool = False


@dataclass(frozen=True)
class Turn:
    """One user message and the assistant's answer: fixed (`assistant` given) or generated (then checked)."""

    user: str
    assistant: str | None = None
    expect: Expectation | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    @property
    def generated(self) -> bool:
        return self.assistant is None


@dataclass(frozen=True)
class Conversation:
    id: str
    turns: tuple[Turn, ...]
    system: str | None = None
    description: str = ""

    @property
    def generated_turns(self) -> int:
        return sum(t.generated for t in self.turns)


def check_expectations(text: str, expectation: Expectation, *, stopped_at_eos: bool | None = None) -> list[str]:
    """Failures of `text` against `expectation` (empty when it passes). Pass `stopped_at_eos` to check stop_at_eos."""
    failures = []
    lowered = text.lower()
    for group in expectation.must_contain:
        if not any(option.lower() in lowered for option in group):
            wanted = f"'{group[0]}'" if len(group) == 1 else "one of " + ", ".join(f"'{o}'" for o in group)
            failures.append(f"missing {wanted}")
    for banned in expectation.must_not_contain:
        if banned.lower() in lowered:
            failures.append(f"contains forbidden '{banned}'")
    if expectation.stop_at_eos and stopped_at_eos is False:
        failures.append("did not stop at EOS within max_new_tokens (cut off)")
    return failures


# --------------------------------------------------------------------------------------- the file, as written
# The validators below only signal; `_explain` words every problem by the field it is in (see _FIELD_MESSAGES).


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("blank")
    return value


def _not_null(value: Any) -> Any:
    # Only a missing key means "inherit / none": an explicit `key: null` is a mistake worth naming.
    if value is None:
        raise ValueError("null")
    return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value  # a plain string is a list of one


def _conversation_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise ValueError("bad id")
    return value


T = TypeVar("T")
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Flag = Annotated[bool, Field(strict=True)]
Text = Annotated[str, Field(strict=True), AfterValidator(_not_blank)]
Texts = Annotated[list[Text], Field(min_length=1), BeforeValidator(_one_or_many)]
AnyOfGroups = Annotated[list[Texts], Field(min_length=1), BeforeValidator(_one_or_many)]
OrAbsent = Annotated[T | None, BeforeValidator(_not_null)]  # None: the key is absent (inherit, or nothing to check)


_DUPLICATE_ID = "duplicate id; every conversation needs its own id (it keys golden outputs)"
_FIXED_REPLY_ALONE = (
    "a fixed assistant reply is not generated, so it cannot carry 'expect'/'max_new_tokens' "
    "(nor can the user turn before it); move them to a turn whose reply is generated"
)


def _suite_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("suite", "{message}", {"message": message})


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectSpec(_Spec):
    """A turn's `expect:` mapping; unset keys inherit (stop_at_eos from the conversation) or check nothing."""

    must_contain: OrAbsent[AnyOfGroups] = None
    must_not_contain: OrAbsent[Texts] = None
    stop_at_eos: OrAbsent[Flag] = None
    max_new_tokens: OrAbsent[PositiveInt] = None


class TurnSpec(_Spec):
    """One item of `turns:`: a user message (its reply generated) or a fixed assistant reply."""

    # Declared in the order the problems of a turn are reported (as in ConversationSpec).
    max_new_tokens: OrAbsent[PositiveInt] = None
    expect: OrAbsent[ExpectSpec] = None
    user: OrAbsent[Text] = None
    assistant: OrAbsent[Text] = None

    @model_validator(mode="before")
    @classmethod
    def _one_message(cls, data: Any) -> Any:
        # Judged on the keys as written, before their values: a misplaced key is the clearer message.
        if not isinstance(data, dict) or set(data) - set(cls.model_fields):
            return data  # not a mapping, or unknown keys: pydantic's own errors say so
        if ("user" in data) == ("assistant" in data):
            raise _suite_error("needs exactly one of 'user' or 'assistant' (one message per item)")
        if "assistant" in data and set(data) - {"assistant"}:
            raise _suite_error(_FIXED_REPLY_ALONE)
        return data


class ConversationSpec(_Spec):
    """One item of `conversations:`; unset max_new_tokens / stop_at_eos / system come from `defaults:`."""

    # Declared in the order a conversation's problems are reported: the first one found is the one named.
    id: Annotated[str, Field(strict=True), AfterValidator(_conversation_id)]
    max_new_tokens: OrAbsent[PositiveInt] = None
    stop_at_eos: OrAbsent[Flag] = None
    system: Text | None = None  # null: the suite's default system prompt
    description: Annotated[str, Field(strict=True)] = ""
    turns: Annotated[list[TurnSpec], Field(min_length=1)]


class DefaultsSpec(_Spec):
    """The suite's `defaults:`; these values apply where nothing closer sets them."""

    max_new_tokens: PositiveInt = DEFAULT_MAX_NEW_TOKENS
    stop_at_eos: Flag = False
    system: Text | None = None  # null: the template's default (SmolLM2 inserts its own)


class SuiteSpec(_Spec):
    """The whole file (schema version 1)."""

    version: Literal[1] = 1
    defaults: Annotated[DefaultsSpec, BeforeValidator(lambda value: value or {})] = DefaultsSpec()  # `defaults:` empty
    conversations: Annotated[list[ConversationSpec], Field(min_length=1)]


# ------------------------------------------------------------------------------------------------- loading


def load_prompt_suite(path: Path | str = DEFAULT_SUITE) -> list[Conversation]:
    """Read and validate a prompt-suite YAML file (schema in evals/chat_prompts.yaml's header)."""
    path = Path(path)
    if not path.is_file():
        raise PromptSuiteError(f"{path}: prompt suite not found; pass the path of a chat_prompts.yaml file.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PromptSuiteError(f"{path}: not valid YAML: {exc}") from exc
    try:
        suite = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise _explain(path, data, exc) from exc
    return _resolve(path, suite)


def _fail(path: Path, where: str, message: str) -> PromptSuiteError:
    return PromptSuiteError(f"{path}: {where}: {message}")


def _resolve(path: Path, suite: SuiteSpec) -> list[Conversation]:
    """Apply the defaults cascade and pair each fixed assistant reply with the user turn before it."""
    defaults = suite.defaults
    conversations: list[Conversation] = []
    seen: set[str] = set()
    for spec in suite.conversations:
        where = f"conversation '{spec.id}'"
        if spec.id in seen:
            raise _fail(path, where, _DUPLICATE_ID)
        seen.add(spec.id)
        conv_max = _inherit(spec.max_new_tokens, defaults.max_new_tokens)
        conv_stop = _inherit(spec.stop_at_eos, defaults.stop_at_eos)
        system = _inherit(spec.system, defaults.system)
        turns = _resolve_turns(path, where, spec.turns, conv_max, conv_stop)
        conversations.append(Conversation(spec.id, turns, system, spec.description))
    return conversations


def _inherit(value: T | None, inherited: T) -> T:
    return inherited if value is None else value


def _resolve_turns(path: Path, where: str, items: list[TurnSpec], conv_max: int, conv_stop: bool) -> tuple[Turn, ...]:
    turns: list[Turn] = []
    pending: Turn | None = None  # the user turn waiting to learn whether its reply is fixed
    for index, item in enumerate(items):
        at = f"{where} turns[{index}]"
        if item.assistant is not None:
            if pending is None:
                raise _fail(path, at, "a fixed 'assistant' reply must follow a 'user' turn (two in a row, or first)")
            if pending.expect is not None:
                raise _fail(path, at, _FIXED_REPLY_ALONE)
            turns.append(replace(pending, assistant=item.assistant))
            pending = None
            continue
        if pending is not None:
            turns.append(pending)
        max_new = _inherit(item.max_new_tokens, conv_max)
        expect = None
        if item.expect is not None:
            spec = item.expect
            expect = Expectation(
                tuple(tuple(group) for group in spec.must_contain or ()),
                tuple(spec.must_not_contain or ()),
                _inherit(spec.stop_at_eos, conv_stop),
            )
            max_new = _inherit(spec.max_new_tokens, max_new)
        pending = Turn(item.user or "", None, expect, max_new)  # TurnSpec holds exactly one of user / assistant
    if pending is None:
        raise _fail(path, where, "ends with a fixed assistant reply: nothing to generate; end with a 'user' turn")
    turns.append(pending)
    return tuple(turns)


# ----------------------------------------------------------------------------- pydantic errors, in our words

_POSITIVE = "field '{name}' must be a positive integer, got {value!r}"
_FLAG = "field '{name}' must be true or false, got {value!r}"
_TEXT = "field '{name}' must be a non-empty string, got {value!r}"
_TEXTS = "field '{name}' must be a string or a non-empty list of strings, got {value!r}"

# By field name: the message for an error in the field itself, then in its items, then in their items.
_FIELD_MESSAGES: dict[str, tuple[str, ...]] = {
    "version": ("unsupported version {value!r}; this code reads version 1",),
    "conversations": ("field 'conversations' must be a non-empty list",),
    "id": ("field 'id' must match {pattern} (lowercase, digits, _), got {value!r}",),
    "max_new_tokens": (_POSITIVE,),
    "stop_at_eos": (_FLAG,),
    "system": (_TEXT,),
    "description": ("field 'description' must be a string",),
    "turns": ("field 'turns' must be a non-empty list of {{user: ...}} / {{assistant: ...}} items",),
    "user": (_TEXT,),
    "assistant": (_TEXT,),
    "expect": ("field 'expect' must be a mapping, got {kind}",),
    "must_contain": ("field '{name}' must be a non-empty list (of strings or lists), got {value!r}", _TEXTS, _TEXT),
    "must_not_contain": (_TEXTS, _TEXT),
}

_NOT_A_MAPPING: dict[type[_Spec], str] = {
    SuiteSpec: "expected a mapping with a 'conversations' list",
    DefaultsSpec: "must be a mapping",
    ConversationSpec: "must be a mapping with 'id' and 'turns'",
    TurnSpec: "must be a mapping with 'user' or 'assistant'",
}


def _explain(path: Path, data: Any, exc: ValidationError) -> PromptSuiteError:
    """The first problem in the file, worded for its author: where, which field, what it got.

    pydantic validates the structure first; the file is read top to bottom, so a repeated conversation id is the
    problem when pydantic's first error lies in that conversation or after it.
    """
    errors = exc.errors()
    error = _first(errors)
    ids = _valid_ids(data)
    duplicate = next((i for i, conv_id in enumerate(ids) if conv_id is not None and conv_id in ids[:i]), None)
    loc = error["loc"]
    if duplicate is not None and loc[:1] == ("conversations",) and len(loc) > 1 and int(loc[1]) >= duplicate:
        return _fail(path, f"conversation '{ids[duplicate]}'", _DUPLICATE_ID)

    model, where, prefix, rest = _locate(ids, loc)
    if error["type"] == "extra_forbidden":
        unknown = sorted(
            str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == loc[:-1]
        )
        if model is ExpectSpec:
            where += " expect"
        return _fail(path, where, f"unknown field(s) {unknown}; allowed: {sorted(model.model_fields)}")
    if not rest:  # the object itself: not a mapping, or one of its own rules
        return _fail(path, where, error["msg"] if error["type"] == "suite" else _NOT_A_MAPPING[model])
    field, depth = str(rest[0]), sum(isinstance(part, int) for part in rest[1:])
    messages = _FIELD_MESSAGES[field]
    value = None if error["type"] == "missing" else error["input"]
    details = {"name": prefix + field, "value": value, "kind": type(value).__name__, "pattern": ID_PATTERN.pattern}
    return _fail(path, where, messages[min(depth, len(messages) - 1)].format(**details))


def _first(errors: list[Any]) -> Any:
    """pydantic lists an object's unknown keys after its fields; report them first, outermost object first (but a
    conversation's id, which names it, before its keys)."""
    first = errors[0]
    loc = first["loc"]
    enclosing = [
        e
        for e in errors
        if e["type"] == "extra_forbidden"
        and loc[: len(e["loc"]) - 1] == e["loc"][:-1]
        and not (loc[-1:] == ("id",) and e["loc"][:-1] == loc[:-1])
    ]
    return min(enclosing, key=lambda e: len(e["loc"])) if enclosing else first


def _valid_ids(data: Any) -> list[str | None]:
    """Each conversation's id as written, None where it is not a valid id (or the conversation not a mapping)."""
    raw = data.get("conversations") if isinstance(data, dict) else None
    items = raw if isinstance(raw, list) else []
    ids = [item.get("id") if isinstance(item, dict) else None for item in items]
    return [i if isinstance(i, str) and ID_PATTERN.match(i) else None for i in ids]


def _locate(ids: list[str | None], loc: tuple[int | str, ...]) -> tuple[type[_Spec], str, str, list[int | str]]:
    """(model, where, field-name prefix, rest of loc) for an error at `loc` (`rest` starts at a field name)."""
    rest = list(loc)
    if rest[:1] == ["defaults"]:
        return DefaultsSpec, "defaults", "", rest[1:]
    if rest[:1] != ["conversations"] or len(rest) < 2:
        return SuiteSpec, "top level", "", rest
    index, rest = int(rest[1]), rest[2:]
    # Until its id is known to be valid, a conversation is named by its position.
    where = f"conversation '{ids[index]}'" if ids[index] is not None else f"conversation #{index}"
    if rest[:1] != ["turns"] or len(rest) < 2:
        return ConversationSpec, where, "", rest
    where, rest = f"{where} turns[{rest[1]}]", rest[2:]
    if rest[:1] == ["expect"] and len(rest) > 1:
        return ExpectSpec, where, "expect.", rest[1:]
    return TurnSpec, where, "", rest
