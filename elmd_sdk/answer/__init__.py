"""The answer format, below the chain and the chat model: the words of the prompt and of the answer
(:mod:`~elmd_sdk.answer.wording`), reading an answer back, whole or streamed (:mod:`~elmd_sdk.answer.reading`), and
the typed result (:mod:`~elmd_sdk.answer.result`)."""
