"""The Decisions API's request and answer shapes (those of the ``openai`` package's ``decision_create_params`` and
``decision`` types), and :func:`parse_request`, which checks a request as it comes over the wire (or from Python) and
normalises it: every text part joined into one text per message or question, the wire's variants folded.

Normalising the input: a string is the input text; messages keep their role (user, system, developer, assistant) and
their parts' text (``input_text``, ``output_text``, an assistant's ``refusal``; ``input_json`` rendered as compact
JSON). langchain-openai's ``OpenAIDecisions`` sends a conversation holding other than user messages as one user
message whose text is the JSON array of ``{role, content}`` messages: such a message is read as those messages. Images
and tool calls are refused (this model reads text). An :class:`~elmd_sdk.errors.InputError` names the bad field
(``questions[1].choices[0].value``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from elmd_sdk.errors import InputError
from elmd_sdk.text_checks import check_text

Role = Literal["user", "system", "developer", "assistant"]
ROLES: tuple[str, ...] = ("user", "system", "developer", "assistant")
QUESTION_TYPES: tuple[str, ...] = ("predicate", "choice", "score")


@dataclass(frozen=True)
class DecisionLimits:
    """What one decision request may hold (more is a 400 naming the field)."""

    max_questions: int = 16
    """Questions per request (OpenAI allows 400; each question here is one scoring pass on a CPU)."""
    max_options: int = 32
    """Choices of a choice question, levels of a score question (OpenAI allows 255)."""
    max_input_messages: int = 512
    """Messages of the input."""
    max_input_chars: int = 32_000
    """Characters of the input's text, all messages together."""
    max_question_chars: int = 4_000
    """Characters of one question: its instructions and its options' values (or labels) and descriptions."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputMessage(_Frozen):
    """One message of the input, its parts joined into one text."""

    role: Role
    content: str


class ChoiceOption(_Frozen):
    value: str | bool = Field(description="A string and a boolean with the same text are distinct values.")
    description: str | None = None


class ScoreLevel(_Frozen):
    label: str
    description: str | None = None


class PredicateQuestion(_Frozen):
    """How likely a statement about the input is true."""

    type: Literal["predicate"] = "predicate"
    instructions: str
    name: str | None = None


class ChoiceQuestion(_Frozen):
    """One of the options, chosen for the input."""

    type: Literal["choice"] = "choice"
    instructions: str
    choices: tuple[ChoiceOption, ...]
    name: str | None = None


class ScoreQuestion(_Frozen):
    """The input rated on ordered levels (lowest first)."""

    type: Literal["score"] = "score"
    instructions: str
    levels: tuple[ScoreLevel, ...]
    name: str | None = None


Question = PredicateQuestion | ChoiceQuestion | ScoreQuestion


class DecisionRequest(_Frozen):
    """A checked request: the input as text or messages, the questions in order."""

    input: str | tuple[InputMessage, ...]
    questions: tuple[Question, ...]
    model: str | None = None


# -- answers (the response's shapes) ----------------------------------------------------------------------------------


class PredicateAnswer(BaseModel):
    type: Literal["predicate"] = "predicate"
    name: str | None
    probability: float


class ChoiceProbability(BaseModel):
    value: str | bool
    probability: float


class ChoiceAnswer(BaseModel):
    type: Literal["choice"] = "choice"
    name: str | None
    choice: str | bool
    confidence: float
    probabilities: list[ChoiceProbability]


class ScoreProbability(BaseModel):
    label: str
    value: int
    probability: float


class ScoreAnswer(BaseModel):
    type: Literal["score"] = "score"
    name: str | None
    score: float
    confidence: float
    probabilities: list[ScoreProbability]


class RefusalAnswer(BaseModel):
    """A question that was not answered; ``reason`` (an addition to OpenAI's shape) says why."""

    type: Literal["refusal"] = "refusal"
    name: str | None
    reason: str


Answer = PredicateAnswer | ChoiceAnswer | ScoreAnswer | RefusalAnswer


class InputTokensDetails(BaseModel):
    cache_write_tokens: int = 0
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    """Tokens of the prompts the questions were scored after; nothing is generated."""

    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class Decision(BaseModel):
    """The answers in question order, the model that gave them and the tokens it read."""

    answers: list[Answer]
    model: str
    usage: Usage


# -- parsing ----------------------------------------------------------------------------------------------------------


def parse_request(value: Mapping[str, Any] | DecisionRequest, limits: DecisionLimits) -> DecisionRequest:
    """Check a request (wire shape, or an already built :class:`DecisionRequest`) against the API's rules and
    ``limits``; the normalised request, or an :class:`InputError` naming the bad field."""
    if isinstance(value, DecisionRequest):
        value = value.model_dump(exclude_none=True)
    if not isinstance(value, Mapping):
        raise InputError(f"expected an object with 'input' and 'questions', got {type(value).__name__}", field="body")
    model = value.get("model")
    if model is not None and not isinstance(model, str):
        raise InputError("must be a string", field="model")
    if "input" not in value:
        raise InputError("required", field="input")
    request = DecisionRequest(
        input=_input(value["input"], limits), questions=_questions(value.get("questions"), limits), model=model
    )
    return request


def _input(value: Any, limits: DecisionLimits) -> str | tuple[InputMessage, ...]:
    if isinstance(value, str):
        text = check_text(value, "input")
        if not text.strip():
            raise InputError("the input is empty", field="input")
        _most(len(text), limits.max_input_chars, "characters", "input")
        return text
    if not isinstance(value, Sequence) or isinstance(value, bytes):
        raise InputError("must be a string or a list of messages", field="input")
    _most(len(value), limits.max_input_messages, "messages", "input")
    messages = [_message(item, f"input[{i}]") for i, item in enumerate(value)]
    if len(messages) == 1 and messages[0].role == "user":
        messages = list(_json_conversation(messages[0].content) or messages)
    if not any(message.content.strip() for message in messages):
        raise InputError("the input is empty", field="input")
    _most(sum(len(message.content) for message in messages), limits.max_input_chars, "characters", "input")
    return tuple(messages)


def _message(item: Any, field: str) -> InputMessage:
    if isinstance(item, InputMessage):
        return item
    if not isinstance(item, Mapping):
        raise InputError("must be a message object {role, content}", field=field)
    kind = item.get("type", "message")
    if kind != "message":
        raise InputError(
            f"unsupported input item type {kind!r}: this model reads messages (text)", field=f"{field}.type"
        )
    role = item.get("role")
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {role!r}", field=f"{field}.role")
    unknown = sorted(set(item) - {"type", "role", "content", "phase"})
    if unknown:
        raise InputError("unknown message field", field=f"{field}.{unknown[0]}")
    if "content" not in item:
        raise InputError("required", field=f"{field}.content")
    return InputMessage(role=role, content=_text(item["content"], f"{field}.content"))


def _text(value: Any, field: str) -> str:
    """A text given as a string or a list of parts, as one string."""
    if isinstance(value, str):
        return check_text(value, field)
    if not isinstance(value, Sequence) or isinstance(value, bytes):
        raise InputError("must be a string or a list of parts", field=field)
    texts = []
    for i, part in enumerate(value):
        where = f"{field}[{i}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(check_text(part["text"], f"{where}.text"))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(check_text(part["refusal"], f"{where}.refusal"))
        elif kind == "input_json" and isinstance(part.get("data"), Mapping | list):
            texts.append(check_text(json.dumps(part["data"], ensure_ascii=False, separators=(",", ":")), where))
        elif kind == "input_image":
            raise InputError("this model does not read images", field=where)
        else:
            raise InputError(
                "must be an input_text / output_text part with 'text', a refusal part or an input_json part with "
                "'data'",
                field=where,
            )
    return "".join(texts)


def _json_conversation(text: str) -> tuple[InputMessage, ...] | None:
    """The messages of a JSON array of ``{role, content}`` messages (how langchain-openai sends a conversation), or
    None when ``text`` is not one."""
    if not text.lstrip().startswith("["):
        return None
    try:
        items = json.loads(text)
    except ValueError:
        return None
    if not items or not all(isinstance(item, dict) and item.get("role") in ROLES for item in items):
        return None
    try:
        return tuple(
            InputMessage(role=item["role"], content=_text(item.get("content") or "", "input")) for item in items
        )
    except InputError:
        return None


def _questions(value: Any, limits: DecisionLimits) -> tuple[Question, ...]:
    if value is None:
        raise InputError("required", field="questions")
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise InputError("must be a list of questions", field="questions")
    if not value:
        raise InputError("ask at least one question", field="questions")
    _most(len(value), limits.max_questions, "questions", "questions")
    return tuple(_question(item, f"questions[{i}]", limits) for i, item in enumerate(value))


def _question(item: Any, field: str, limits: DecisionLimits) -> Question:
    if isinstance(item, BaseModel):
        item = item.model_dump(exclude_none=True)
    if not isinstance(item, Mapping):
        raise InputError("must be a question object", field=field)
    kind = item.get("type")
    if kind not in QUESTION_TYPES:
        raise InputError(f"unknown question type {kind!r} (known: {', '.join(QUESTION_TYPES)})", field=f"{field}.type")
    options_key = {"predicate": None, "choice": "choices", "score": "levels"}[kind]
    unknown = sorted(set(item) - {"type", "name", "instructions", *([options_key] if options_key else [])})
    if unknown:
        raise InputError(f"unknown field of a {kind} question", field=f"{field}.{unknown[0]}")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise InputError("must be a string", field=f"{field}.name")
    if "instructions" not in item:
        raise InputError("required", field=f"{field}.instructions")
    instructions = _text(item["instructions"], f"{field}.instructions").strip()
    if not instructions:
        raise InputError("must not be empty", field=f"{field}.instructions")
    if options_key is None:
        _most(len(instructions), limits.max_question_chars, "characters", field)
        return PredicateQuestion(instructions=instructions, name=name)
    raw = item.get(options_key)
    where = f"{field}.{options_key}"
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        raise InputError("required: a list of at least two options", field=where)
    if len(raw) < 2:
        raise InputError(f"give at least two options, got {len(raw)}", field=where)
    _most(len(raw), limits.max_options, "options", where)
    if kind == "choice":
        choices = tuple(_choice(option, f"{where}[{i}]") for i, option in enumerate(raw))
        texts = [option_text(choice.value) for choice in choices]
        described = [choice.description or "" for choice in choices]
        question: Question = ChoiceQuestion(instructions=instructions, choices=choices, name=name)
    else:
        levels = tuple(_level(option, f"{where}[{i}]") for i, option in enumerate(raw))
        texts, described = [level.label for level in levels], [level.description or "" for level in levels]
        question = ScoreQuestion(instructions=instructions, levels=levels, name=name)
    for i, text in enumerate(texts):
        if text in texts[:i]:
            raise InputError(f"duplicate option {text!r} (options must differ as the model reads them)", field=where)
    size = len(instructions) + sum(map(len, texts)) + sum(map(len, described))
    _most(size, limits.max_question_chars, "characters", field)
    return question


def _choice(option: Any, field: str) -> ChoiceOption:
    if not isinstance(option, Mapping) or "value" not in option:
        raise InputError("must be an object with 'value'", field=field)
    unknown = sorted(set(option) - {"value", "description"})
    if unknown:
        raise InputError("unknown option field", field=f"{field}.{unknown[0]}")
    value = option["value"]
    if not isinstance(value, str | bool):
        raise InputError(f"must be a string or a boolean, got {type(value).__name__}", field=f"{field}.value")
    if isinstance(value, str):
        _option_line(value, f"{field}.value")
    return ChoiceOption(value=value, description=_description(option, field))


def _level(option: Any, field: str) -> ScoreLevel:
    if not isinstance(option, Mapping) or not isinstance(option.get("label"), str):
        raise InputError("must be an object with a string 'label'", field=field)
    unknown = sorted(set(option) - {"label", "description"})
    if unknown:
        raise InputError("unknown level field", field=f"{field}.{unknown[0]}")
    return ScoreLevel(label=_option_line(option["label"], f"{field}.label"), description=_description(option, field))


def _option_line(text: str, field: str) -> str:
    check_text(text, field)
    if not text.strip() or text != text.strip() or "\n" in text or "\r" in text:
        raise InputError("must be one non-empty line without surrounding spaces", field=field)
    return text


def _description(option: Mapping[str, Any], field: str) -> str | None:
    description = option.get("description")
    if description is not None and not isinstance(description, str):
        raise InputError("must be a string", field=f"{field}.description")
    return None if description is None else check_text(description, f"{field}.description").strip() or None


def option_text(value: str | bool) -> str:
    """How an option's value is written in the prompt and its answer line (a boolean as ``true`` / ``false``)."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def _most(count: int, limit: int, what: str, field: str) -> None:
    if count > limit:
        raise InputError(f"at most {limit} {what}, got {count}", field=field)
