"""Evaluation metrics: BLEU, METEOR and ROUGE with per-language tokenization; emotion accuracy and F1."""
