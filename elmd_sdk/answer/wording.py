"""The answer format's words: the prompt's language-dependent strings (instruction, human template, reference
lines, answer keys) and :func:`render_answer`, the answer the model is asked for ("Emotion: <label>" then
"Response: <text>"), which is also the REP/EERG training target. English for SmolLM2 and other instruct models,
Chinese for ChatGLM2 (as in the paper)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Language = Literal["en", "zh"]
LANGUAGES: tuple[str, ...] = ("en", "zh")

# Chinese names of the seven paper labels, shown in the zh prompt and accepted by the parser.
ZH_LABEL_NAMES: dict[str, str] = {
    "happy": "开心",
    "surprise": "惊讶",
    "sad": "伤心",
    "disgust": "厌恶",
    "anger": "生气",
    "fear": "害怕",
    "neutral": "中性",
}


@dataclass(frozen=True)
class Wording:
    """Every language-dependent string of the prompt: the I part, the template of B/H/u/E_v/R, answer keys."""

    instruction: str  # system message (part I); mustache, variable {{{labels}}}
    human: str  # parts B, H, u, E_v, then a one-line reminder of the answer format; mustache, variables below
    reference: str  # the human side of R as an exchange: the retrieved utterance u' with the special instruction
    reference_reply: str  # R in the paper's form: the retrieved response r' with the special instruction
    emotion_key: str  # answer line keys, e.g. "Emotion" / "情感"
    response_key: str
    colon: str  # ": " or the full-width "："
    label_separator: str
    user_name: str  # default speaker names when the caller gives none
    assistant_name: str


ENGLISH = Wording(
    instruction=(
        "You are an empathetic partner in a conversation. You are given the background of the dialogue, "
        "the dialogue history, the other person's current utterance and possibly a video of their scene. "
        "A reference exchange from a similar situation may come first: use it as a hint for the emotion and "
        "tone of your answer, but do not copy it.\n"
        "First decide which emotion your reply should express, choosing exactly one of: {{{labels}}}.\n"
        "Then write one short, natural reply that fits the context and expresses that emotion.\n"
        "Answer in exactly this format:\n"
        "Emotion: <one of the emotions>\n"
        "Response: <your reply>"
    ),
    human=(
        "{{#background}}Background: {{{background}}}\n\n{{/background}}"
        "{{#history}}Dialogue history:\n{{{history}}}\n\n{{/history}}"
        "Current utterance ({{{speaker}}}): {{{utterance}}}"
        "{{#video}}\n\nVideo of {{{speaker}}}'s scene: {{{video}}}{{/video}}"
        "\n\nAnswer with the emotion, then the response."
    ),
    reference="(Reference from a similar situation, not to be copied)\nCurrent utterance: {{{utterance}}}",
    reference_reply="(A reply from a similar situation, for reference only, not to be copied)\n{{{response}}}",
    emotion_key="Emotion",
    response_key="Response",
    colon=": ",
    label_separator=", ",
    user_name="User",
    assistant_name="Assistant",
)

CHINESE = Wording(
    instruction=(
        "你正在参与一段对话，请做一个善解人意的对话者。你会看到对话背景、历史对话、对方当前说的话，"
        "可能还有对方所在场景的视频。对话前可能先给出一段相似情境下的参考对话：请参考其中的情感和语气，"
        "但不要照抄。\n"
        "请先判断你的回复应当表达的情感，从以下情感中选择一个：{{{labels}}}。\n"
        "然后写出一句简短、自然、贴合上下文并表达该情感的回复。\n"
        "请严格按照以下格式回答：\n"
        "情感：<情感>\n"
        "回复：<回复内容>"
    ),
    human=(
        "{{#background}}背景：{{{background}}}\n\n{{/background}}"
        "{{#history}}历史对话：\n{{{history}}}\n\n{{/history}}"
        "当前话语（{{{speaker}}}）：{{{utterance}}}"
        "{{#video}}\n\n{{{speaker}}}所在场景的视频：{{{video}}}{{/video}}"
        "\n\n请先给出情感，再给出回复。"
    ),
    reference="（相似情境下的参考对话，请勿照抄）\n当前话语：{{{utterance}}}",
    reference_reply="（相似情境下的参考回复，仅供参考，请勿照抄）\n{{{response}}}",
    emotion_key="情感",
    response_key="回复",
    colon="：",
    label_separator="、",
    user_name="用户",
    assistant_name="助手",
)

WORDINGS: dict[str, Wording] = {"en": ENGLISH, "zh": CHINESE}


def wording(language: str) -> Wording:
    """The wording for ``language`` ("en" or "zh"); ValueError names the supported ones otherwise."""
    try:
        return WORDINGS[language]
    except KeyError:
        raise ValueError(f"unknown prompt language {language!r} (supported: {', '.join(LANGUAGES)})") from None


def label_name(label: str, language: str) -> str:
    """How ``label`` is written in prompts and answers of ``language`` (Chinese names for the seven labels)."""
    return ZH_LABEL_NAMES.get(label, label) if language == "zh" else label


def render_answer(emotion: str, response: str | None = None, language: str = "en") -> str:
    """The answer format the model is asked for: the emotion line, then (if given) the response line.

    ``render_answer(e)`` is the REP target (Eq. 10), ``render_answer(e, r)`` the EERG target (Eq. 11).
    """
    words = wording(language)
    line = f"{words.emotion_key}{words.colon}{label_name(emotion, language)}"
    if response is None:
        return line
    return f"{line}\n{words.response_key}{words.colon}{response}"
