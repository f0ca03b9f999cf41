"""The one tiny tokenizer and tiny LLM of the tests: a ChatML byte-level BPE tokenizer and a small seeded Llama.

``tiny_tokenizer`` and ``tiny_llm`` are what every test runs on (``chain_fakes`` and ``train_fakes`` re-export them);
``bigram_llama`` is the same Llama with its next-token logits set by hand, for tests whose expectation is computed
from a known distribution (EOS, temperature, top-p, top-k).
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HIDDEN = 32
CONTEXT = 2048  # positions of the tiny LLM
TRAINING_LABELS = ("happy", "sad", "anger")  # the label set of the trainer tests
# Fixed prompt text the tiny tokenizer holds as single tokens, so the tiny model sees short sequences.
PHRASES = (
    "Reference reply: in a similar situation, someone replied",
    "Use it as a hint for the emotion and tone of your reply; do not copy it.",
    "Current utterance",
    "Dialogue history:",
    "Background:",
    "Video of",
    "'s scene:",
)
TEXTS = (
    "Emotion: happy\nResponse: That is wonderful news, congratulations!",
    "Emotion: sad\nResponse: I am so sorry to hear that.",
    "You are an empathetic partner in a conversation. Background: history utterance reply video",
    "User: I finally got the job! Assistant: When do you start? The dog passed away this morning.",
    "hello world how are you today",
    "the video shows a happy person",
)


def chatml_tokenizer(corpus: list[str], vocab_size: int, **trainer: Any) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained in memory on ``corpus`` (``trainer``: more BpeTrainer settings), with ChatML specials."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, **trainer))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def system_text(labels: Sequence[str]) -> str:
    """The rendered instruction I (the system message) of the English prompt for ``labels``."""
    from elmd_sdk.chains.prompt import build_prompt, prompt_variables
    from elmd_sdk.data.records import Turn

    variables = prompt_variables(Turn("A", "x"))
    return str(build_prompt("en", tuple(labels)).invoke(variables).to_messages()[0].content)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tests' tokenizer: byte-level BPE over every byte (any UTF-8 text encodes), the emotion labels as single
    tokens, and the English instruction of both label sets and the fixed prompt phrases as added tokens."""
    from elmd_sdk.answer.wording import ENGLISH
    from elmd_sdk.data.labels import EMOTIONS

    answers = [f"Emotion: {label}\nResponse: I see." for label in EMOTIONS] * 10  # labels become single tokens
    corpus = [string.printable, ENGLISH.instruction, ENGLISH.human, *answers, *TEXTS]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = chatml_tokenizer(corpus * 5, 700, initial_alphabet=alphabet, show_progress=False)
    tokenizer.add_tokens([system_text(EMOTIONS), system_text(TRAINING_LABELS), *PHRASES])
    return tokenizer


def tiny_llama(tokenizer: Any = None, seed: int = 0, **config: Any) -> LlamaForCausalLM:
    """A seeded random Llama in eval mode: hidden 32, 2 layers, 4 heads, 2 key/value heads unless ``config`` overrides.

    With ``tokenizer``, its vocabulary size and BOS/EOS/PAD ids; without, ``config`` gives ``vocab_size``.
    """
    settings: dict[str, Any] = {
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    if tokenizer is not None:
        settings["vocab_size"] = len(tokenizer)
        settings["bos_token_id"] = tokenizer.bos_token_id
        settings["eos_token_id"] = tokenizer.eos_token_id
        settings["pad_token_id"] = tokenizer.pad_token_id
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**settings, **config})).eval()


def tiny_llm(seed: int = 0, layers: int = 2, context: int = CONTEXT, **config: Any) -> tuple[LlamaForCausalLM, Any]:
    """The tests' LLM: a random :func:`tiny_llama` over :func:`tiny_tokenizer` (``config``: more LlamaConfig settings,
    e.g. ``initializer_range=0.2`` for the sharper logits the trainer tests learn from)."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer, seed, num_hidden_layers=layers, max_position_embeddings=context, **config)
    return model, tokenizer


def save_llm(folder: Path, model: Any, tokenizer: Any) -> Path:
    """Write ``model`` and ``tokenizer`` as a checkpoint folder that ``load_llm(folder)`` reads."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_llm(folder: Path, seed: int = 0, layers: int = 2, **config: Any) -> Path:
    """:func:`tiny_llm` saved as a checkpoint folder (safetensors + tokenizer) that ``load_llm(folder)`` reads."""
    return save_llm(folder, *tiny_llm(seed, layers, **config))


def tiny_chat(**settings: Any) -> Any:
    """An ELMDChatModel over :func:`tiny_llm`, greedy, 12 new tokens unless ``settings`` say otherwise."""
    from elmd_sdk.models.chat_model import ELMDChatModel

    model, tokenizer = tiny_llm()
    return ELMDChatModel(hf_model=model, tokenizer=tokenizer, **{"do_sample": False, "max_new_tokens": 12, **settings})


def bigram_llama(tokenizer: Any, next_logits: Mapping[int, torch.Tensor]) -> LlamaForCausalLM:
    """A 1-layer :func:`tiny_llama` whose next-token logits depend only on the current token: ``next_logits[t]``
    (vocab,) after token ``t``, for at most 32 listed tokens; after any other token every logit is 0 (uniform).

    How: attention and MLP outputs are zeroed, so the last hidden state is the current token's embedding; listed
    token k embeds as sqrt(hidden) * e_k, whose root mean square is 1, so the final RMSNorm keeps it (up to its
    epsilon, a relative 5e-7) and its logits are sqrt(hidden) times column k of the output matrix. Unlisted tokens
    embed as zeros.
    """
    if len(next_logits) > HIDDEN:
        raise ValueError(f"at most {HIDDEN} tokens can have their own logits")
    model = tiny_llama(tokenizer, num_hidden_layers=1)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (token, logits) in enumerate(next_logits.items()):
            model.model.embed_tokens.weight[token, k] = math.sqrt(HIDDEN)
            model.lm_head.weight[:, k] = logits / math.sqrt(HIDDEN)
    return model


def logits_row(size: int, values: Mapping[int, float], rest: float = -1e4) -> torch.Tensor:
    """A (size,) logits vector: ``values[token]`` for the listed tokens, ``rest`` (never drawn) elsewhere."""
    row = torch.full((size,), rest)
    for token, value in values.items():
        row[token] = value
    return row
