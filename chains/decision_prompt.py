"""The prompt a question about an input is scored after, and the answer lines that are scored.

A system message says how to answer; the human message holds the input (a text, or a conversation written one
``Role: text`` line per message), then the question with its options (a predicate's are yes and no, a score's its
levels, lowest first), each with its description; the answer lines are ``Answer: <option>``. The input comes before
the question, so the questions of one request share the KV cache of the system message and the input
(:meth:`~elmd_sdk.models.chat_model.ELMDChatModel.score_answers`). English and Chinese wording, as the chain's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from elmd_sdk.answer.wording import wording
from elmd_sdk.chains.decision_types import ChoiceQuestion, InputMessage, PredicateQuestion, Question, option_text


@dataclass(frozen=True)
class DecisionWording:
    instruction: str  # the system message
    text_input: str  # heading of a text input
    conversation: str  # heading of a conversation
    roles: dict[str, str]  # how each role's lines start
    question: str  # heading of the question
    options: str  # heading of a choice's or a predicate's options
    levels: str  # heading of a score's levels
    answer_request: str  # the human message's last line
    answer_key: str  # the answer line's key
    yes: str
    no: str


ENGLISH = DecisionWording(
    instruction="You read an input and answer a question about it with exactly one of the options the question gives.",
    text_input="Input:",
    conversation="Conversation:",
    roles={"user": "User", "assistant": "Assistant", "system": "System", "developer": "Developer"},
    question="Question:",
    options="Options:",
    levels="Levels, from lowest to highest:",
    answer_request="Answer with one of the options, exactly as written.",
    answer_key="Answer",
    yes="yes",
    no="no",
)

CHINESE = DecisionWording(
    instruction="你会读到一段输入，并回答关于它的一个问题：从问题给出的选项中选择一个作答。",
    text_input="输入：",
    conversation="对话：",
    roles={"user": "用户", "assistant": "助手", "system": "系统", "developer": "开发者"},
    question="问题：",
    options="选项：",
    levels="等级（从低到高）：",
    answer_request="请用其中一个选项作答，照原样写出。",
    answer_key="答案",
    yes="是",
    no="否",
)

DECISION_WORDINGS = {"en": ENGLISH, "zh": CHINESE}


def options(question: Question, language: str) -> tuple[list[str], list[str | None]]:
    """The texts the answer lines hold, in the question's order, and their descriptions."""
    if isinstance(question, PredicateQuestion):
        words = DECISION_WORDINGS[language]
        return [words.yes, words.no], [None, None]
    if isinstance(question, ChoiceQuestion):
        return [option_text(c.value) for c in question.choices], [c.description for c in question.choices]
    return [level.label for level in question.levels], [level.description for level in question.levels]


def render_input(value: str | Sequence[InputMessage], language: str) -> str:
    """The input as the prompt writes it: the text, or the conversation one line per message."""
    words = DECISION_WORDINGS[language]
    if isinstance(value, str):
        return f"{words.text_input}\n{value.strip()}"
    colon = wording(language).colon
    lines = [f"{words.roles[m.role]}{colon}{m.content.strip()}" for m in value]
    return f"{words.conversation}\n" + "\n".join(lines)


def question_prompt(rendered_input: str, question: Question, language: str) -> tuple[list[BaseMessage], list[str]]:
    """The messages a question is scored after, for an input written by :func:`render_input`, and its answer lines
    (one per option, in the question's order)."""
    words, colon = DECISION_WORDINGS[language], wording(language).colon
    texts, descriptions = options(question, language)
    heading = words.levels if question.type == "score" else words.options
    listed = "\n".join(
        f"- {text}" + (f"{colon}{description}" if description else "")
        for text, description in zip(texts, descriptions, strict=True)
    )
    human = (
        f"{rendered_input}\n\n{words.question} {question.instructions}\n{heading}\n{listed}\n\n{words.answer_request}"
    )
    lines = [f"{words.answer_key}{colon}{text}" for text in texts]
    return [SystemMessage(content=words.instruction), HumanMessage(content=human)], lines
