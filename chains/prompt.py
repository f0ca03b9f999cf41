"""The six-part ELMD prompt (paper Figure 4, section 3.4) as LangChain chat prompt templates.

The parts are the instruction I (system message, with the label set and the answer format), the
retrieved demonstration R, the background B, the dialogue history H, the current utterance u and the
video tokens E_v (the chat model's video placeholder, replaced by the projected video features).
R is laid out as an example exchange before the conversation: the retrieved utterance u' marked as a
reference (its special instruction; I says to use it as a hint and not to copy it), answered in the
answer format with its response emotion e' and response r'. Small instruct models follow the answer
format from such an example and not from the instruction alone (SmolLM2-135M, greedy: 6 of 6 test turns
with it, 0 of 6 with R as an inline quote); a one-line reminder of the format closes the human message
(with a dialogue history: 8 of 9 sampled turns with it, 4 of 9 without). Parts R, B, H and E_v are
optional, so the "without retrieval"
and "without video" ablations simply leave them out. Wording exists in English (the default, for
SmolLM2 and other instruct models) and in Chinese (for ChatGLM2, as in the paper). The model answers
with the response emotion, then the response, in the format :func:`render_answer` writes (also the
REP/EERG training target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Turn, VideoRef
from elmd_sdk.models.rendering import VIDEO_PLACEHOLDER

if TYPE_CHECKING:  # the chat model's module loads torch: imported only when a closed set is built
    from elmd_sdk.models.closed_set import EmotionChoice

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


DemonstrationForm = Literal["exchange", "paper"]
"""How R enters the prompt: an example exchange (u', e', r'; the default) or the paper's r' with its instruction."""


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


def build_prompt(language: str = "en", labels: Sequence[str] = EMOTIONS) -> ChatPromptTemplate:
    """The six-part prompt: system message (I), the demonstration exchange (R), human message (B, H, u, E_v).

    Input variables: ``background``, ``history`` (rendered by :func:`format_history`), ``speaker``,
    ``utterance``, ``video`` (the placeholder or ""; an empty string drops an optional part) and
    ``demonstration`` (the messages of :func:`demonstration_messages`, or an empty list).
    """
    words = wording(language)
    shown = words.label_separator.join(label_name(label, language) for label in labels)
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", words.instruction),
            MessagesPlaceholder("demonstration", optional=True),
            ("human", words.human),
        ],
        template_format="mustache",
    )
    return prompt.partial(labels=shown)


def demonstration_messages(
    demonstration: Document, language: str = "en", form: DemonstrationForm = "exchange"
) -> list[BaseMessage]:
    """R from a retrieved entry (``page_content`` r'; metadata ``utterance`` u', ``response_emotion`` e', as
    ``EmotionalRetriever`` returns them).

    ``form="paper"``: r' with its special instruction, one human message (paper 3.3). ``form="exchange"``: an
    example exchange, u' with the special instruction answered in the answer format with e' and r' (without e' the
    answer holds r' alone).
    """
    words = wording(language)
    if form == "paper":
        reply = ChatPromptTemplate.from_messages([("human", words.reference_reply)], template_format="mustache")
        return reply.format_messages(response=demonstration.page_content.strip())
    reference = ChatPromptTemplate.from_messages([("human", words.reference)], template_format="mustache")
    utterance = str(demonstration.metadata.get("utterance") or "")
    emotion = demonstration.metadata.get("response_emotion")
    response = demonstration.page_content.strip()
    if isinstance(emotion, str) and emotion:
        answer = render_answer(emotion, response, language)
    else:
        answer = f"{words.response_key}{words.colon}{response}"
    return [*reference.format_messages(utterance=utterance), AIMessage(content=answer)]


def format_history(turns: Sequence[Turn], language: str = "en") -> str:
    """History H as one ``speaker: text`` line per turn (with the language's colon)."""
    colon = wording(language).colon
    return "\n".join(f"{turn.speaker}{colon}{turn.text}" for turn in turns)


def prompt_variables(
    utterance: Turn,
    history: Sequence[Turn] = (),
    background: str | None = None,
    *,
    video: bool = False,
    demonstration: Document | None = None,
    language: str = "en",
    demonstration_form: DemonstrationForm = "exchange",
) -> dict[str, object]:
    """The template's input variables for one turn (``video`` says whether E_v's placeholder is included)."""
    return {
        "background": (background or "").strip(),
        "history": format_history(history, language),
        "speaker": utterance.speaker,
        "utterance": utterance.text,
        "video": VIDEO_PLACEHOLDER if video else "",
        "demonstration": (
            demonstration_messages(demonstration, language, demonstration_form) if demonstration is not None else []
        ),
    }


def attach_video(messages: Sequence[BaseMessage], video: VideoRef) -> list[BaseMessage]:
    """Add ``video`` as a content block to the last human message (whose text holds the placeholder)."""
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        message = out[i]
        if isinstance(message, HumanMessage):
            block: dict[str, object] = {"type": "video", "path": video.path, "start": video.start, "end": video.end}
            out[i] = HumanMessage(content=[{"type": "text", "text": message.text}, block])
            return out
    raise ValueError("the prompt has no human message to attach the video to")


def emotion_choice(labels: Sequence[str], language: str = "en") -> EmotionChoice:
    """The answer format as a closed set for :class:`~elmd_sdk.models.chat_model.ELMDChatModel`: every label's answer
    line (:func:`render_answer`), and the response key forced after the chosen one."""
    from elmd_sdk.models.closed_set import EmotionChoice

    words = wording(language)
    return EmotionChoice(
        labels=tuple(labels),
        lines=tuple(render_answer(label, None, language) for label in labels),
        response_key=f"\n{words.response_key}{words.colon.rstrip()}",
    )


def render_answer(emotion: str, response: str | None = None, language: str = "en") -> str:
    """The answer format the model is asked for: the emotion line, then (if given) the response line.

    ``render_answer(e)`` is the REP target (Eq. 10), ``render_answer(e, r)`` the EERG target (Eq. 11).
    """
    words = wording(language)
    line = f"{words.emotion_key}{words.colon}{label_name(emotion, language)}"
    if response is None:
        return line
    return f"{line}\n{words.response_key}{words.colon}{response}"
