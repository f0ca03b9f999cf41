"""Evaluation metrics: BLEU, METEOR and ROUGE with per-language tokenization; emotion accuracy and F1."""

from elmd_sdk.metrics.bleu import bleu
from elmd_sdk.metrics.emotion import emotion_scores
from elmd_sdk.metrics.meteor import WORDNET_ENV, WordNetSource, load_wordnet, meteor
from elmd_sdk.metrics.rouge import rouge
from elmd_sdk.metrics.score import score_generations
from elmd_sdk.metrics.tokenize import LANGUAGES, TOKENIZATION, tokenize

__all__ = [
    "LANGUAGES",
    "TOKENIZATION",
    "WORDNET_ENV",
    "WordNetSource",
    "bleu",
    "emotion_scores",
    "load_wordnet",
    "meteor",
    "rouge",
    "score_generations",
    "tokenize",
]
