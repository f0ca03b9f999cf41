"""ChatGLM2-6B checkpoints in their original layout, run on transformers' native ``GlmForCausalLM``.

ChatGLM2's architecture is the GLM one transformers ships: RMSNorm pre-norm blocks, grouped (multi-query)
attention with ``multi_query_group_num`` key/value heads and a fused ``query_key_value`` projection (split here
into q, k and v), rotary embeddings on the first half of each head rotating interleaved pairs (``partial_rotary
_factor`` 0.5, base 10000), and a SwiGLU MLP whose fused ``dense_h_to_4h`` is [gate | up] (GLM's
``gate_up_proj``). Mapping the weights needs no code from the checkpoint. The tokenizer is the checkpoint's
SentencePiece model plus the special tokens [MASK], [gMASK], [sMASK], sop and eop numbered after it; every prompt
starts with [gMASK] sop, and chat turns use ChatGLM2's "[Round N]\\n\\n问：...\\n\\n答：" format.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sentencepiece
import torch
from transformers import AddedToken, PreTrainedTokenizer

from elmd_sdk.errors import InputError
from elmd_sdk.io import read_json
from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attach_prefix
from elmd_sdk.models.weights import read_weight_file

if TYPE_CHECKING:
    from transformers import GlmConfig, GlmForCausalLM

# ChatGLM2's five special tokens, numbered after the SentencePiece vocabulary in this order. Their text forms here
# follow transformers' GLM-4 tokenizer ("<sop>", not "sop") so ordinary words never turn into control tokens.
SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>")
_COMMAND_ALIASES = {"sop": "<sop>", "eop": "<eop>"}

# ChatGLM2's build_prompt as a chat template: history rounds "[Round i]\n\n问：q\n\n答：a\n\n", then the open round
# "[Round n]\n\n问：q\n\n答：". ChatGLM2 has no system role; a system message is written before the first round.
CHAT_TEMPLATE = (
    "{{- '[gMASK]<sop>' -}}"
    "{%- set ns = namespace(round=0) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- message['content'] + '\\n\\n' -}}"
    "{%- elif message['role'] == 'user' -%}{%- set ns.round = ns.round + 1 -%}"
    "{{- '[Round ' ~ ns.round ~ ']\\n\\n问：' + message['content'] + '\\n\\n答：' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- message['content'] + '\\n\\n' -}}"
    "{%- else -%}{{- raise_exception('ChatGLM2 prompts take system, user and assistant messages only') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

_LAYER = "transformer.encoder.layers."
_DIRECT_NAMES = {
    "transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "transformer.encoder.final_layernorm.weight": "model.norm.weight",
    "transformer.output_layer.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}


def glm_config_from_chatglm2(raw: dict[str, Any], source: str | Path = "config.json") -> GlmConfig:
    """Translate a ChatGLM2 ``config.json`` into the equivalent ``GlmConfig``, refusing variants GLM cannot express."""
    from transformers import GlmConfig

    def need(field: str) -> Any:
        if field not in raw:
            raise InputError(
                "missing (is this ChatGLM-6B v1? only ChatGLM2's layout is supported)", file=source, field=field
            )
        return raw[field]

    # Settings that change the computation in ways GlmForCausalLM cannot reproduce.
    unsupported = {
        "rmsnorm": True,
        "apply_residual_connection_post_layernorm": False,
        "post_layer_norm": True,
        "add_bias_linear": False,
        "fp32_residual_connection": False,
    }
    for field, supported in unsupported.items():
        if field in raw and bool(raw[field]) != supported:
            raise InputError(f"{raw[field]!r} is not supported (only {supported!r})", file=source, field=field)
    if raw.get("quantization_bit"):
        raise InputError(
            "quantized checkpoints are not supported; use the fp16/bf16 weights", file=source, field="quantization_bit"
        )
    if raw.get("hidden_dropout"):
        raise InputError("only 0.0 is supported", file=source, field="hidden_dropout")

    heads = int(need("num_attention_heads"))
    hidden = int(need("hidden_size"))
    head_dim = int(raw.get("kv_channels") or hidden // heads)
    kv_heads = int(need("multi_query_group_num")) if raw.get("multi_query_attention", False) else heads
    rope_theta = 10000.0 * float(raw.get("rope_ratio", 1.0))
    return GlmConfig(
        vocab_size=int(need("padded_vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(need("ffn_hidden_size")),
        num_hidden_layers=int(need("num_layers")),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        hidden_act="silu",
        attention_dropout=float(raw.get("attention_dropout", 0.0)),
        max_position_embeddings=int(raw.get("seq_length", 32768)),
        rms_norm_eps=float(raw.get("layernorm_epsilon", 1e-5)),
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "partial_rotary_factor": 0.5},
        pad_token_id=int(raw.get("pad_token_id", 0)),
        eos_token_id=int(raw.get("eos_token_id", 2)),
        bos_token_id=None,
        attention_bias=bool(raw.get("add_qkv_bias", False)),
    )


def map_chatglm2_state_dict(
    state: dict[str, torch.Tensor], config: GlmConfig, source: str | Path = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rename/split ChatGLM2 parameters to ``GlmForCausalLM`` names.

    Returns (model weights, ``transformer.prefix_encoder.*`` weights found in a merged p-tuning checkpoint).
    """
    heads = int(config.num_attention_heads)
    kv_heads = int(config.num_key_value_heads or heads)
    head_dim = int(config.head_dim or config.hidden_size // heads)
    mapped: dict[str, torch.Tensor] = {}
    prefix: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name in _DIRECT_NAMES:
            mapped[_DIRECT_NAMES[name]] = tensor
        elif name.startswith("transformer.prefix_encoder."):
            prefix[name] = tensor
        elif name == "transformer.rotary_pos_emb.inv_freq":
            continue  # recomputed from the config
        elif name.startswith(_LAYER):
            index, _, rest = name[len(_LAYER) :].partition(".")
            out = f"model.layers.{index}."
            if rest in _LAYER_NAMES:
                mapped[out + _LAYER_NAMES[rest]] = tensor
            elif rest.startswith("self_attention.query_key_value."):
                kind = rest.rsplit(".", 1)[1]  # weight (out, hidden) or bias (out,)
                if kv_heads == heads:  # no multi-query: rows are grouped per head as [q | k | v]
                    per_head = tensor.reshape(heads, 3, head_dim, *tensor.shape[1:])
                    q, k, v = (per_head[:, i].reshape(heads * head_dim, *tensor.shape[1:]) for i in range(3))
                else:  # multi-query: rows are [all q heads | kv groups of k | kv groups of v]
                    q, k, v = tensor.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=0)
                for proj, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                    mapped[f"{out}self_attn.{proj}.{kind}"] = part.contiguous()
            else:
                raise InputError(f"unexpected ChatGLM2 parameter '{name}'", file=source)
        else:
            raise InputError(f"unexpected ChatGLM2 parameter '{name}'", file=source)
    return mapped, prefix


def checkpoint_files(folder: Path) -> list[Path]:
    """Weight shards of a ChatGLM2 folder: safetensors if present, else PyTorch .bin files (index-aware)."""
    for index_name, pattern in (
        ("model.safetensors.index.json", "*.safetensors"),
        ("pytorch_model.bin.index.json", "*.bin"),
    ):
        index_file = folder / index_name
        if index_file.is_file():
            index = read_json(index_file)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise InputError("missing 'weight_map'", file=index_file, field="weight_map")
            return [folder / name for name in sorted(set(weight_map.values()))]
        found = sorted(folder.glob(pattern))
        if found:
            return found
    raise InputError("no model weights (*.safetensors or *.bin) found", file=folder)


def load_chatglm2(
    folder: str | Path, dtype: torch.dtype | None = None, allow_pickle_weights: bool = False, **options: Any
) -> tuple[GlmForCausalLM, ChatGLM2Tokenizer]:
    """Load a ChatGLM2 original-layout folder as ``GlmForCausalLM`` + :class:`ChatGLM2Tokenizer` (no checkpoint code).

    ``dtype`` defaults to the checkpoint's ``torch_dtype`` (float32 when absent). A ``transformer.prefix_encoder``
    found among the weights (a merged p-tuning checkpoint) is attached as the model's prefix. ``options``: more
    ``from_pretrained`` keywords (a bitsandbytes ``quantization_config`` and ``device_map``).
    """
    from transformers import GenerationConfig, GlmForCausalLM

    folder = Path(folder)
    config_file = folder / "config.json"
    raw = read_json(config_file)
    config = glm_config_from_chatglm2(raw, config_file)
    if dtype is None:
        dtype = getattr(torch, str(raw.get("torch_dtype", "float32")), torch.float32)
    state: dict[str, torch.Tensor] = {}
    prefix_state: dict[str, torch.Tensor] = {}
    for shard in checkpoint_files(folder):
        mapped, prefix = map_chatglm2_state_dict(read_weight_file(shard, allow_pickle_weights), config, shard)
        state.update({k: v.to(dtype) for k, v in mapped.items()})
        prefix_state.update(prefix)
    model = GlmForCausalLM.from_pretrained(None, config=config, state_dict=state, dtype=dtype, **options)
    model.generation_config = GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    tokenizer = ChatGLM2Tokenizer(vocab_file=str(_tokenizer_file(folder)))
    if prefix_state:
        _attach_merged_prefix(model, prefix_state, raw, folder)
    return model, tokenizer


def _tokenizer_file(folder: Path) -> Path:
    """The SentencePiece model of a ChatGLM2 folder."""
    path = folder / "tokenizer.model"
    if not path.is_file():
        raise InputError("tokenizer.model (SentencePiece) not found", file=path)
    return path


def _attach_merged_prefix(model: Any, state: dict[str, torch.Tensor], raw: dict[str, Any], folder: Path) -> None:
    """Attach a p-tuning prefix saved inside the base checkpoint itself (config ``pre_seq_len`` set)."""
    embedding = state.get("transformer.prefix_encoder.embedding.weight")
    if embedding is None:
        raise InputError("prefix_encoder weights without 'embedding.weight'", file=folder)
    projection = bool(raw.get("prefix_projection", False))
    config = PrefixConfig.for_model(model, int(embedding.shape[0]), projection)
    config.base_config_sha256 = None
    encoder = PrefixEncoder(config)
    encoder.load_state_dict({k[len("transformer.prefix_encoder.") :]: v.float() for k, v in state.items()})
    attach_prefix(model, encoder)


class ChatGLM2Tokenizer(PreTrainedTokenizer):
    """ChatGLM2's tokenizer: its SentencePiece model, [gMASK] <sop> before every prompt, left padding, chat template."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}  # noqa: RUF012  (transformers' class-attribute convention)
    model_input_names = ["input_ids", "attention_mask"]  # noqa: RUF012

    def __init__(self, vocab_file: str, **kwargs: Any) -> None:
        self.vocab_file = vocab_file
        self.sp_model = sentencepiece.SentencePieceProcessor(model_file=vocab_file)
        n = self.sp_model.get_piece_size()
        unk = self.sp_model.id_to_piece(self.sp_model.unk_id())
        controls = (self.sp_model.unk_id(), self.sp_model.bos_id(), self.sp_model.eos_id())  # -1 when disabled
        added = {i: AddedToken(self.sp_model.id_to_piece(i), special=True) for i in controls if i >= 0}
        added.update({n + i: AddedToken(tok, special=True) for i, tok in enumerate(SPECIAL_TOKENS)})
        kwargs.setdefault("added_tokens_decoder", added)
        kwargs.setdefault("unk_token", unk)
        kwargs.setdefault("pad_token", unk)  # ChatGLM2 pads with the unk id
        if self.sp_model.eos_id() >= 0:
            kwargs.setdefault("eos_token", self.sp_model.id_to_piece(self.sp_model.eos_id()))
        if self.sp_model.bos_id() >= 0:
            kwargs.setdefault("bos_token", self.sp_model.id_to_piece(self.sp_model.bos_id()))
        kwargs.setdefault("extra_special_tokens", list(SPECIAL_TOKENS))
        kwargs.setdefault("padding_side", "left")
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.setdefault("chat_template", CHAT_TEMPLATE)
        kwargs.setdefault("special_tokens_pattern", "prefix_suffix")
        super().__init__(**kwargs)
        self.prefix_tokens = [self.get_command("[gMASK]"), self.get_command("sop")]
        self.suffix_tokens: list[int] = []

    @property
    def vocab_size(self) -> int:
        """Size of the SentencePiece vocabulary (the special tokens come after it)."""
        return int(self.sp_model.get_piece_size())

    def get_vocab(self) -> dict[str, int]:
        """Every piece and special token with its id."""
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def get_command(self, name: str) -> int:
        """Id of a ChatGLM2 command token by its original name ("[gMASK]", "sop", ...)."""
        token = _COMMAND_ALIASES.get(name, name)
        if token not in self.added_tokens_encoder:
            raise KeyError(f"{name} is not a ChatGLM2 special token")
        return self.added_tokens_encoder[token]

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return list(self.sp_model.encode(text, out_type=str))

    def _convert_token_to_id(self, token: str) -> int:
        return int(self.sp_model.piece_to_id(token))

    def _convert_id_to_token(self, index: int) -> str:
        return str(self.sp_model.id_to_piece(index))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """SentencePiece decoding of pieces, with special tokens kept as their text."""
        special = set(self.added_tokens_encoder)
        out: list[str] = []
        run: list[str] = []
        for token in tokens:
            if token in special:
                out.append(self.sp_model.decode_pieces(run) if run else "")
                out.append(token)
                run = []
            else:
                run.append(token)
        out.append(self.sp_model.decode_pieces(run) if run else "")
        return "".join(out)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Copy the SentencePiece model next to the tokenizer config."""
        name = (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model"
        target = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(target):
            shutil.copyfile(self.vocab_file, target)
        return (target,)
