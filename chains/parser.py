"""The ELMD answer format as a LangChain output parser: :class:`ELMDOutputParser` streams
:class:`~elmd_sdk.answer.result.ELMDResult` chunks read by :mod:`elmd_sdk.answer.reading`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from langchain_core.messages import BaseMessage
from langchain_core.output_parsers.transform import BaseTransformOutputParser

from elmd_sdk.answer.reading import AnswerReader, StreamingAnswerParser
from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.answer.wording import label_name, render_answer, wording
from elmd_sdk.data.labels import EMOTIONS


class ELMDOutputParser(BaseTransformOutputParser[ELMDResult]):
    """LangChain output parser for the ELMD answer format; streams :class:`ELMDResult` chunks. After an
    ``ELMDChatModel`` in closed-set mode it takes the emotion the model chose from the message metadata."""

    labels: tuple[str, ...] = EMOTIONS
    """The bundle's label set; emotions outside it (after synonym mapping) parse as None."""
    language: str = "en"
    """Prompt language, used for the format instructions."""

    def parse(self, text: str) -> ELMDResult:
        """Parse a complete generation; never raises."""
        machine = StreamingAnswerParser(self.labels)
        result = ELMDResult(None, "")
        for chunk in [*machine.feed(text), *machine.finish()]:
            result = result + chunk
        return result

    def get_format_instructions(self) -> str:
        """The answer format, as the prompt's instruction asks for it."""
        words = wording(self.language)
        shown = words.label_separator.join(label_name(label, self.language) for label in self.labels)
        return f"{render_answer('<emotion>', '<response>', self.language)}\n({words.emotion_key}: {shown})"

    def _transform(self, input: Iterator[str | BaseMessage]) -> Iterator[ELMDResult]:
        yield from AnswerReader(self.labels).read(input)

    async def _atransform(self, input: AsyncIterator[str | BaseMessage]) -> AsyncIterator[ELMDResult]:
        async for chunk in AnswerReader(self.labels).aread(input):
            yield chunk

    @property
    def _type(self) -> str:
        return "elmd_output_parser"
