"""Evaluation metrics: BLEU, METEOR and ROUGE with per-language tokenization; emotion accuracy and F1.

Importing the package stays cheap (nltk and jieba load on first use), so the command line can read the
defaults of :class:`~elmd_sdk.metrics.options.TextMetricOptions` when it starts.
"""

from elmd_sdk.metrics.bleu import bleu
from elmd_sdk.metrics.emotion import emotion_scores
from elmd_sdk.metrics.meteor import WORDNET_ENV, WordNetSource, load_wordnet, meteor
from elmd_sdk.metrics.options import TextMetricOptions
from elmd_sdk.metrics.rouge import rouge
from elmd_sdk.metrics.score import score_generations
from elmd_sdk.metrics.tokenize import LANGUAGES, TOKENIZATION, characters, tokenize

__all__ = [
    "LANGUAGES",
    "TOKENIZATION",
    "WORDNET_ENV",
    "TextMetricOptions",
    "WordNetSource",
    "bleu",
    "characters",
    "emotion_scores",
    "load_wordnet",
    "meteor",
    "rouge",
    "score_generations",
    "tokenize",
]
