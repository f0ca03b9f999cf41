"""``ELMDChatModel.with_structured_output``: an ``{emotion, response}`` answer as a pydantic model or JSON schema.

The emotion comes from closed-set decoding over the labels the schema allows (a ``Literal``, an ``Enum`` or a JSON
``enum``; the seven paper labels when it names none), the response is decoded after it, in the answer format of the
prompt's language, and read back by the answer format's parser. Other schemas are refused: the model does not write
free-form JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import BaseModel

from elmd_sdk.answer.reading import StreamingAnswerParser
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.errors import ElmdError
from elmd_sdk.models.closed_set import emotion_choice

if TYPE_CHECKING:
    from elmd_sdk.models.chat_model import ELMDChatModel


def structured_output(
    chat: ELMDChatModel, schema: dict[str, Any] | type, *, include_raw: bool = False, language: str = "en"
) -> Runnable[LanguageModelInput, Any]:
    """A Runnable answering as ``schema`` with ``chat`` (``include_raw``: ``{"raw", "parsed", "parsing_error"}``)."""
    labels = schema_labels(schema)
    choice = emotion_choice(labels, language)

    def answer(value: LanguageModelInput) -> Any:
        message = chat.invoke(value, emotion_choice=choice)
        emotion = message.response_metadata["emotion"]
        parser = StreamingAnswerParser(labels, emotion=emotion)
        response = "".join(chunk.response for chunk in [*parser.feed(str(message.text)), *parser.finish()])
        data = {"emotion": emotion, "response": response}
        parsed = cast(type[BaseModel], schema).model_validate(data) if isinstance(schema, type) else data
        return {"raw": message, "parsed": parsed, "parsing_error": None} if include_raw else parsed

    return RunnableLambda(answer, name="elmd_structured_output")


def schema_labels(schema: dict[str, Any] | type) -> tuple[str, ...]:
    """The emotion labels an {emotion, response} schema allows; ElmdError for any other schema."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        properties = schema.model_json_schema().get("properties", {})
    elif isinstance(schema, dict):
        properties = schema.get("properties", {})
    else:
        raise ElmdError(f"with_structured_output takes a pydantic model or a JSON schema, got {schema!r}")
    if set(properties) != {"emotion", "response"}:
        raise ElmdError(
            f"ELMDChatModel answers only the {{emotion, response}} schema, got fields {sorted(properties)}; "
            "it does not write free-form JSON"
        )
    emotion = properties["emotion"]
    enum = emotion.get("enum") or ([emotion["const"]] if "const" in emotion else None)
    if enum is None and "$ref" not in emotion:
        return EMOTIONS
    if enum is None:  # an Enum class: its definition holds the values
        definitions = schema.model_json_schema().get("$defs", {}) if isinstance(schema, type) else {}
        enum = definitions.get(emotion["$ref"].rsplit("/", 1)[-1], {}).get("enum")
    if not enum or not all(isinstance(label, str) for label in enum):
        raise ElmdError("the schema's emotion field must be a string, or an enumeration of label strings")
    return tuple(enum)
