"""Fitting a turn's prompt to the model's context: as many of the newest history turns as fit beside the reply,
measured with the chat model's own tokenizer and chat template (video tokens included), whole turns at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from elmd_sdk.chains.prompt import format_history
from elmd_sdk.data.records import Turn
from elmd_sdk.errors import InputError

if TYPE_CHECKING:
    from elmd_sdk.models.chat_model import ELMDChatModel


def fit_history(
    render: Callable[[Sequence[Turn]], list[BaseMessage]],
    history: Sequence[Turn],
    chat_model: BaseChatModel,
    *,
    window: int | None,
    reply: int,
    with_video: bool,
    language: str,
) -> tuple[list[BaseMessage], Sequence[Turn]]:
    """The prompt ``render`` makes with as much of the newest ``history`` as fits a context of ``window`` tokens
    beside ``reply`` tokens for the reply (all of it when the window is unknown), and that history; an
    :class:`InputError` when not even the prompt without history fits."""
    if window is None:
        return render(history), history
    budget = window - reply

    def newest(n: int) -> list[BaseMessage]:
        return render(history[len(history) - n :])

    bare = count_tokens(chat_model, render([]), with_video)
    if bare > budget:
        raise InputError(
            f"too long for the model: the prompt without history needs {bare} tokens, but only {budget} fit "
            f"(context {window} minus {reply} for the reply)",
            field="utterance",
        )

    def fits(n: int) -> bool:
        return count_tokens(chat_model, newest(n), with_video) <= budget

    # The exact answer: the largest number of newest turns whose whole prompt fits (its token count grows with
    # every turn kept), searched from the estimate, so only prompts about the size of the context are tokenized.
    guess, most = history_estimate(chat_model, history, budget - bare, language)
    kept = largest_fitting(fits, guess, most)
    return newest(kept), history[len(history) - kept :]


def history_estimate(chat_model: BaseChatModel, history: Sequence[Turn], room: int, language: str) -> tuple[int, int]:
    """How many of the newest history turns fit in ``room`` tokens beside the prompt without history, before the
    exact count: ``(guess, most)``. ``most`` is a bound from characters alone (a turn's line of c characters takes at
    least c / :meth:`~elmd_sdk.models.chat_model.ELMDChatModel.max_token_chars` tokens; no bound for another chat
    model); ``guess`` adds up the turns' lines tokenized one at a time, from the newest, and stops at the first that
    no longer fits, so neither ever tokenizes more than the context can hold."""
    own = own_model(chat_model)
    per_token = own.max_token_chars() if own is not None else None
    guess: int | None = None
    chars = tokens = 0
    for n, turn in enumerate(reversed(history)):
        line = format_history([turn], language) + "\n"
        chars += len(line)
        if per_token is not None and -(-chars // per_token) > room:
            return (n if guess is None else guess), n
        if guess is None:
            tokens += chat_model.get_num_tokens(line)
            if tokens > room:
                guess = n
                if per_token is None:
                    break
    return (len(history) if guess is None else guess), len(history)


def largest_fitting(fits: Callable[[int], bool], guess: int, most: int) -> int:
    """The largest n in [0, most] for which ``fits(n)`` holds, where ``fits`` holds up to some n and fails beyond it
    (``fits(0)`` is taken to hold): galloping from ``guess`` (steps 1, 2, 4, ...) until the answer is bracketed, then
    bisecting, so a close guess costs two or three calls."""
    guess = min(guess, most)
    if guess == 0 or fits(guess):
        low, high, step = guess, most, 1  # low fits; nothing above high does
        while low < high:
            probe = min(low + step, high)
            if not fits(probe):
                high = probe - 1
                break
            low, step = probe, step * 2
    else:
        high, step = guess - 1, 1
        while True:
            probe = max(high - step + 1, 0)
            if probe == 0 or fits(probe):
                low = probe
                break
            high, step = probe - 1, step * 2
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def count_tokens(chat_model: BaseChatModel, messages: Sequence[BaseMessage], with_video: bool = False) -> int:
    """Prompt length in tokens, as the chat model will see it (with ``with_video``, video tokens E_v included)."""
    if (own := own_model(chat_model)) is not None:
        return own.count_prompt_tokens(messages, with_video=with_video)
    return chat_model.get_num_tokens_from_messages(list(messages))


def context_window(chat_model: BaseChatModel, given: int | None) -> int | None:
    """The token limit of prompt plus reply: ``given``, else the chat model's LLM's (None when unknown)."""
    if given is not None:
        return given
    own = own_model(chat_model)
    return own.context_window() if own is not None else None


def reply_room(chat_model: BaseChatModel, asked: int | None) -> int:
    """Positions kept free for the reply: what the call asked for, else the chat model's limit when it states one."""
    if asked is not None:
        return asked
    value = getattr(chat_model, "max_new_tokens", None) or getattr(chat_model, "max_tokens", None)
    return int(value) if isinstance(value, int) else 0


def own_model(chat_model: BaseChatModel) -> ELMDChatModel | None:
    """The chat model as an :class:`ELMDChatModel` (which scores labels, counts video tokens and knows its context
    window), or None for another LangChain chat model."""
    from elmd_sdk.models.chat_model import ELMDChatModel

    return chat_model if isinstance(chat_model, ELMDChatModel) else None
