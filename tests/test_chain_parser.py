"""The ELMD answer parser: well-formed and malformed generations, streaming equals parsing, never raises."""

from __future__ import annotations

import random

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessageChunk

from elmd_sdk.answer.reading import StreamingAnswerParser, match_label
from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.answer.wording import render_answer
from elmd_sdk.chains.parser import ELMDOutputParser

# (generation, expected emotion, expected response)
CASES: list[tuple[str, str | None, str]] = [
    ("Emotion: happy\nResponse: Great news!", "happy", "Great news!"),
    ('emotion : JOY.\nresponse: "Wow, congrats!"\nUser: thanks', "happy", "Wow, congrats!"),
    ("**Emotion:** Sad\n**Response:** I am sorry.", "sad", "I am sorry."),
    ("Response: only this", None, "only this"),
    ("Just text here.", None, "Just text here."),
    ("", None, ""),
    ("   \n\n  ", None, ""),
    ("情感：开心\n回复：太好了！", "happy", "太好了！"),
    ("情感: 生气。回复: 你太过分了", "anger", "你太过分了"),
    ("[angry] Get out!", "anger", "Get out!"),
    ("(Surprised) No way!", "surprise", "No way!"),
    ("(laughs) That's funny.", None, "(laughs) That's funny."),
    ("Happy: yes!", "happy", "yes!"),
    ("happy\nThat is great", "happy", "That is great"),
    ("Emotion: happy Response: hi there", "happy", "hi there"),
    ("Emotion: happy, Response: hi there", "happy", "hi there"),
    ("Emotion: fear", "fear", ""),
    ("Emotion: happy. That is great!", "happy", "That is great!"),
    ("Emotion: bored\nResponse: meh", None, "meh"),
    ("Emotion: happy\nResponse: Hi<|im_end|>junk", "happy", "Hi"),
    ("Happy birthday to you!", None, "Happy birthday to you!"),
    ("Response: Sure.\n\nEmotion: happy", None, "Sure."),
    ("   \n Emotion - surprise\n Wow!", "surprise", "Wow!"),
    ("EMOTION: NEUTRAL\nRESPONSE: Okay.", "neutral", "Okay."),
    ("Response emotion: scared\nReply: I don't like this.", "fear", "I don't like this."),
    ("Emotion: disgusted\n\nResponse:\nEw, gross.", "disgust", "Ew, gross."),
    ("Emotion: sad\nResponse: I miss her.\nAssistant: Emotion: sad", "sad", "I miss her."),
    ("Emotion: happy\nResponse: Line one.\nLine two.", "happy", "Line one.\nLine two."),
    ("Emotion: happy\nResponse: “That’s wonderful!”", "happy", "That’s wonderful!"),
    ("Emotion: happy\nResponse: Wait for it ### the end", "happy", "Wait for it ### the end"),
    ("Emotion: happy\nResponse: Good.\n### Next", "happy", "Good."),
    ("Emotion: anger\nResponse: Stop it.\n\nCurrent utterance (User): hi", "anger", "Stop it."),
    ("Emotion:\nResponse: no label given", None, "no label given"),
    ("Emotion: happy (joy)\nResponse: Yay", "happy", "Yay"),
    ("Emotion: <surprise>\nResponse: Really?", "surprise", "Really?"),
    ("I feel happy for you. Emotion: happy", None, "I feel happy for you. Emotion: happy"),
    ("Emotion: 惊讶\n回复：真的吗？", "surprise", "真的吗？"),
    ("情绪：害怕\n回复：我有点怕。\n用户：别怕", "fear", "我有点怕。"),
    ("Emotion: happy\nResponse: a < b and c > d", "happy", "a < b and c > d"),
    ("Emotion: happy\nResponse: see <b>this</b>", "happy", "see <b>this</b>"),
    ("Emotion: happy\nResponse: ok </s> more", "happy", "ok"),
    ("Emotional support matters.", None, "Emotional support matters."),
    ("Response: Emotion is hard.", None, "Emotion is hard."),
]


@pytest.mark.parametrize(("text", "emotion", "response"), CASES)
def test_parse_cases(text: str, emotion: str | None, response: str) -> None:
    result = ELMDOutputParser().parse(text)
    assert result == ELMDResult(emotion, response)


def _random_cuts(rng: random.Random, text: str, most: int) -> list[int]:
    """Sorted distinct split points strictly inside ``text`` (none for texts shorter than 2)."""
    inside = range(1, len(text))
    return sorted(rng.sample(inside, k=min(len(inside), rng.randint(0, most))))


def _stream(text: str, cuts: list[int]) -> ELMDResult:
    machine = StreamingAnswerParser()
    chunks: list[ELMDResult] = []
    last = 0
    for cut in [*cuts, len(text)]:
        chunks += machine.feed(text[last:cut])
        last = cut
    chunks += machine.finish()
    assert chunks, "a stream always yields at least one chunk"
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


@pytest.mark.parametrize(("text", "emotion", "response"), CASES)
def test_streaming_equals_parse_for_any_chunking(text: str, emotion: str | None, response: str) -> None:
    rng = random.Random(text)
    splits = [list(range(1, len(text)))]  # one character at a time
    for _ in range(5):
        splits.append(_random_cuts(rng, text, 6))
    for cuts in splits:
        assert _stream(text, cuts) == ELMDResult(emotion, response), cuts


def test_emotion_is_known_before_response_text() -> None:
    machine = StreamingAnswerParser()
    assert machine.feed("Emotion: sad\nRes") == []
    first = machine.feed("ponse: I'm")
    assert first[0] == ELMDResult("sad", "")
    assert "".join(c.response for c in first) == "I'm"
    assert all(c.emotion == "sad" for c in first)


def test_stream_stops_at_invented_turn() -> None:
    machine = StreamingAnswerParser()
    machine.feed("Emotion: happy\nResponse: Sure thing.\nUser: and then")
    assert machine.done
    assert machine.feed("more text") == []


def test_parser_transform_streams_message_chunks() -> None:
    parser = ELMDOutputParser()
    pieces = ["Emo", "tion: ", "joy\nRes", "ponse: Hel", "lo!", "\nUser: x"]
    chunks = list(parser.transform(iter(AIMessageChunk(content=p) for p in pieces)))
    assert chunks[0].emotion == "happy"
    assert "".join(c.response for c in chunks) == "Hello!"
    assert parser.invoke(AIMessageChunk(content="".join(pieces))) == ELMDResult("happy", "Hello!")


def test_labels_restrict_and_synonyms_map_to_bundle_labels() -> None:
    meld = ("joy", "sadness", "neutral")
    assert match_label("happy", meld) == "joy"
    assert match_label("Sad.", meld) == "sadness"
    assert match_label("fear", meld) is None
    assert ELMDOutputParser(labels=meld).parse("Emotion: happiness\nResponse: hi").emotion == "joy"
    assert match_label("高兴", ("happy",)) == "happy"


def test_render_answer_round_trips_in_both_languages() -> None:
    for language in ("en", "zh"):
        for emotion in ("happy", "surprise", "sad", "disgust", "anger", "fear", "neutral"):
            text = render_answer(emotion, "Fine, thanks: really.", language)
            assert ELMDOutputParser(language=language).parse(text) == ELMDResult(emotion, "Fine, thanks: really.")


def test_result_addition_keeps_first_emotion_and_demonstration() -> None:
    doc = Document(page_content="r'")
    total = ELMDResult(None, "", doc) + ELMDResult("sad", "a") + ELMDResult("happy", "b")
    assert total == ELMDResult("sad", "ab", doc)


def test_never_raises_on_random_garbage() -> None:
    rng = random.Random(0)
    alphabet = 'Emotion:Response：情感回复 \n"[]()<|>*#-happyjoy'
    parser = ELMDOutputParser()
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        result = parser.parse(text)
        assert isinstance(result.response, str)
        assert result.emotion is None or result.emotion in parser.labels
        assert _stream(text, _random_cuts(rng, text, 4)) == result


# -- the reader stops pulling where the reply ends -----------------------------------------------------------------


class _Pieces:
    """An iterator of message chunks that counts how many were pulled."""

    def __init__(self, pieces: list[AIMessageChunk]) -> None:
        self.pieces, self.pulled = pieces, 0

    def __iter__(self) -> _Pieces:
        return self

    def __next__(self) -> AIMessageChunk:
        if self.pulled == len(self.pieces):
            raise StopIteration
        self.pulled += 1
        return self.pieces[self.pulled - 1]

    def __aiter__(self) -> _Pieces:
        return self

    async def __anext__(self) -> AIMessageChunk:
        try:
            return next(self)
        except StopIteration:
            raise StopAsyncIteration from None


def _chunks(texts: list[str], last_reason: str = "length") -> list[AIMessageChunk]:
    """Chunks of a closed-set reply: the first carries the chosen emotion, each one token of usage."""
    first = AIMessageChunk(content="", response_metadata={"emotion": "sad", "emotion_scores": {"sad": 1.0}},
                           usage_metadata={"input_tokens": 10, "output_tokens": 0, "total_tokens": 10})  # fmt: skip
    rest = [AIMessageChunk(content=text, usage_metadata={"input_tokens": 0, "output_tokens": 1, "total_tokens": 1})
            for text in texts]  # fmt: skip
    rest[-1].response_metadata["finish_reason"] = last_reason
    return [first, *rest]


def test_the_reader_pulls_no_piece_after_the_reply_has_ended() -> None:
    import asyncio

    from elmd_sdk.answer.reading import AnswerReader

    texts = ["I am", " so sorry.", "\nUser:", " more", " and more", " text"]
    pieces = _Pieces(_chunks(texts))
    result = ELMDResult(None, "")
    for chunk in AnswerReader(closed=True).read(pieces):
        result = result + chunk
    assert pieces.pulled == 4  # the emotion chunk and three text pieces: the third ends the reply
    assert result.emotion == "sad" and result.response == "I am so sorry."
    assert result.finish_reason == "stop"  # the reply ended before generation did: not the model's "length"
    assert result.usage == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}  # what was pulled

    async def aread() -> tuple[ELMDResult, int]:
        pieces = _Pieces(_chunks(texts))
        total = ELMDResult(None, "")
        async for chunk in AnswerReader(closed=True).aread(pieces):
            total = total + chunk
        return total, pieces.pulled

    assert asyncio.run(aread()) == (result, 4)


def test_the_reader_keeps_the_models_finish_reason_and_every_count_when_generation_ends_first() -> None:
    from elmd_sdk.answer.reading import AnswerReader

    pieces = _Pieces(_chunks(["I am", " so sorry", " for you"]))
    chunks = list(AnswerReader(closed=True).read(pieces))
    assert pieces.pulled == 4
    assert [c.finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert chunks[0].usage == {"input_tokens": 10, "output_tokens": 0, "total_tokens": 10}  # on the first chunk
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.response == "I am so sorry for you" and total.emotion_scores == {"sad": 1.0}
    assert total.usage == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}


def test_a_closed_reader_needs_the_chosen_emotion_and_an_open_one_ignores_it() -> None:
    from elmd_sdk.answer.reading import AnswerReader
    from elmd_sdk.errors import ElmdError

    with pytest.raises(ElmdError, match="no closed-set emotion"):
        list(AnswerReader(closed=True).read(iter([AIMessageChunk(content="Emotion: happy\nResponse: hi")])))
    free = list(AnswerReader(closed=False).read(iter(_chunks(["Emotion: happy\nResponse: hi"]))))
    assert free[0].emotion == "happy" and free[0].emotion_scores is None
    auto = list(AnswerReader().read(iter(_chunks(["hi"]))))  # undecided: the chosen emotion when there is one
    assert auto[0].emotion == "sad" and auto[0].emotion_scores == {"sad": 1.0}
    parsed = list(AnswerReader().read(iter([AIMessageChunk(content="Emotion: fear\nResponse: oh")])))
    assert parsed[0].emotion == "fear"
    with pytest.raises(ElmdError, match="returned nothing"):
        list(AnswerReader().read(iter([])))
