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
with the response emotion, then the response, in the format :func:`~elmd_sdk.answer.wording.render_answer`
writes (also the REP/EERG training target).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from elmd_sdk.answer.wording import label_name, render_answer, wording
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Turn, VideoRef
from elmd_sdk.models.rendering import VIDEO_PLACEHOLDER

DemonstrationForm = Literal["exchange", "paper"]
"""How R enters the prompt: an example exchange (u', e', r'; the default) or the paper's r' with its instruction."""


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
