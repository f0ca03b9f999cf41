"""Test helpers for the ERM trainer tests: a tiny random sentence-transformers model and utterances whose words name
their emotion."""

from __future__ import annotations

import string
from pathlib import Path

import torch

from elmd_sdk.data.records import Sample, Turn
from elmd_sdk.retrievers.encoder import ERMEncoder

WORDS = {
    "happy": ["joy", "glad", "great", "fun", "smile", "yay", "love", "nice"],
    "sad": ["cry", "tears", "alone", "lost", "sorry", "gloom", "miss", "pain"],
    "anger": ["rage", "hate", "mad", "shut", "stop", "angry", "damn", "furious"],
}


def save_tiny_sentence_model(root: Path, dropout: float = 0.1) -> str:
    """A random 1-layer BERT (hidden 32) with a character vocabulary, saved as a sentence-transformers folder
    ``root/st``; ``dropout`` is BERT's hidden and attention dropout."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel, BertTokenizerFast

    hf_dir, st_dir = root / "hf", root / "st"
    hf_dir.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase]
    vocab += [f"##{c}" for c in string.ascii_lowercase] + list(".,!?'")
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(hf_dir)
    BertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt")).save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=48)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(st_dir), create_model_card=False)
    return str(st_dir)


def emotion_samples(n_per_emotion: int, offset: int = 0) -> list[Sample]:
    """``n_per_emotion`` samples per emotion of WORDS; the utterance's three words name its emotion."""
    samples = []
    for emotion, words in WORDS.items():
        for i in range(n_per_emotion):
            k = i + offset
            text = f"{words[k % 8]} {words[(3 * k + 1) % 8]} {words[(5 * k + 2) % 8]}"
            samples.append(
                Sample(
                    dialogue_id=f"{emotion}{k}",
                    utterance=Turn("A", text, emotion),
                    response=Turn("B", "ok", "neutral"),
                )
            )
    return samples


def fixed_batch_loss(encoder: ERMEncoder, samples: list[Sample]) -> float:
    """Eq. 4 (no gradients, eval mode) on one fixed batch: every other utterance of ``samples`` (4 per emotion, as
    :func:`emotion_samples` makes 8 per emotion), paired (0, 1), (2, 3), ... within each emotion."""
    from elmd_sdk.trainers.erm import ERMNet, batch_loss

    texts = [s.utterance.text for s in samples[::2]]
    labels = torch.tensor([i // 4 for i in range(len(texts))])  # (B,)
    for module in encoder.modules():
        module.eval()
    with torch.no_grad():
        return float(batch_loss(encoder.config, *ERMNet(encoder)(encoder.tokenize(texts)), labels))
