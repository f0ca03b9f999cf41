"""p-tuning v2 prefixes (paper section 3.5): trainable key/value prefixes in every attention layer of a causal LM.

The layout is ChatGLM2's own recipe, generalised to any model with per-layer key/value heads: an ``Embedding`` of
``pre_seq_len`` rows, each row holding ``num_layers * 2 * num_kv_heads * head_dim`` values (optionally passed
through a two-layer MLP, ``prefix_projection``), read as ``(pre_seq_len, num_layers * 2, num_kv_heads, head_dim)``
where entry ``2 i`` is layer ``i``'s key and ``2 i + 1`` its value. As in ChatGLM2, the prefix keys carry no
rotary position, every token attends to the whole prefix, and token positions start at 0 after it.

The prefix enters through transformers' attention interface rather than the KV cache: a forward pre-hook on the
base model computes the prefix once per call, and a registered attention function prepends it to each layer's
keys/values and extends the mask. The cache, positions and ``generate`` therefore work unchanged, with
``input_ids`` or ``inputs_embeds``, and gradients reach the prefix even under gradient checkpointing. PEFT's prefix
tuning cannot take this place (its generation drops the prefix); a prefix is exported for it by
:mod:`elmd_sdk.models.peft_adapter`.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_write_json, check_json_fields, is_json_int, load_tensors, read_json, save_tensors
from elmd_sdk.models.fingerprint import llm_fingerprint
from elmd_sdk.models.weights import read_weight_file

PREFIX_WEIGHTS = "prefix.safetensors"
PREFIX_CONFIG = "prefix.json"
PREFIX_FORMAT = "elmd-prefix-v1"
# ChatGLM2's official p-tuning recipe saves only these keys, in one of these files.
CHATGLM2_PREFIX_KEY = "transformer.prefix_encoder."
CHATGLM2_PREFIX_FILES = ("model.safetensors", "pytorch_model.bin")
ATTN_IMPLEMENTATION = "elmd_prefix_sdpa"


@dataclass
class PrefixConfig:
    """Shape of a p-tuning v2 prefix and the base model it was made for."""

    pre_seq_len: int = 128
    num_layers: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    prefix_projection: bool = False
    projection_hidden_size: int = 0  # width of the MLP when prefix_projection (ChatGLM2: the model's hidden_size)
    dropout: float = 0.1  # ChatGLM2 applies Dropout(0.1) to the prefix while training
    base_config_sha256: str | None = None  # llm_fingerprint(model)["config_sha256"] of the base model

    def __post_init__(self) -> None:
        for name in ("pre_seq_len", "num_layers", "num_kv_heads", "head_dim"):
            if not (is_json_int(getattr(self, name)) and getattr(self, name) > 0):
                raise InputError(f"must be a positive integer, got {getattr(self, name)!r}", field=name)
        if not 0 <= self.dropout <= 1:
            raise InputError(f"must be a probability in [0, 1], got {self.dropout!r}", field="dropout")
        if self.prefix_projection and self.projection_hidden_size <= 0:
            raise InputError("must be positive when prefix_projection is set", field="projection_hidden_size")

    @property
    def kv_size(self) -> int:
        """Width of one prefix row: every layer's key and value for one prefix position."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim

    @classmethod
    def for_model(cls, model: Any, pre_seq_len: int = 128, prefix_projection: bool = False) -> PrefixConfig:
        """The prefix shape that fits ``model`` (layers, key/value heads, head size), tagged with its fingerprint."""
        config = model.config.get_text_config()
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
        return cls(
            pre_seq_len=pre_seq_len,
            num_layers=int(config.num_hidden_layers),
            num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            prefix_projection=prefix_projection,
            projection_hidden_size=int(config.hidden_size) if prefix_projection else 0,
            base_config_sha256=llm_fingerprint(model)["config_sha256"],
        )

    def check_fits(self, model: Any, source: str | Path | None = None) -> None:
        """Raise MismatchError, naming the field, when this prefix was made for a differently shaped/other model."""
        expected = PrefixConfig.for_model(model, self.pre_seq_len, self.prefix_projection)
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, name) != getattr(expected, name):
                raise MismatchError(
                    f"{source or 'prefix'}: field '{name}' is {getattr(self, name)} but the base model needs "
                    f"{getattr(expected, name)}: this prefix was made for another base model"
                )
        if self.base_config_sha256 and self.base_config_sha256 != expected.base_config_sha256:
            raise MismatchError(
                f"{source or 'prefix'}: field 'base_config_sha256' differs from the loaded base model's config "
                "hash: this prefix was trained on another base model"
            )


class PrefixEncoder(nn.Module):
    """Trainable p-tuning v2 prefix: returns each layer's (key, value), shaped (batch, kv_heads, pre_seq_len, head)."""

    def __init__(self, config: PrefixConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.pre_seq_len, config.kv_size)
        # Same parameter names as ChatGLM2's PrefixEncoder, so its official checkpoints load as they are.
        self.trans = (
            nn.Sequential(
                nn.Linear(config.kv_size, config.projection_hidden_size),
                nn.Tanh(),
                nn.Linear(config.projection_hidden_size, config.kv_size),
            )
            if config.prefix_projection
            else None
        )
        self.dropout = nn.Dropout(config.dropout)

    def rows(self) -> torch.Tensor:
        """The prefix before dropout, one row per prefix position: ``(pre_seq_len, kv_size)``."""
        rows = self.embedding.weight  # (p, layers * 2 * kv * d)
        return rows if self.trans is None else self.trans(rows)

    def forward(self, batch_size: int = 1) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per-layer prefix keys and values, each ``(batch_size, num_kv_heads, pre_seq_len, head_dim)``."""
        cfg = self.config
        rows = self.dropout(self.rows().unsqueeze(0).expand(batch_size, -1, -1))  # (b, p, layers * 2 * kv * d)
        kv = rows.view(batch_size, cfg.pre_seq_len, cfg.num_layers * 2, cfg.num_kv_heads, cfg.head_dim)
        kv = kv.permute(2, 0, 3, 1, 4)  # (layers * 2, b, kv, p, d)
        return tuple((kv[2 * i], kv[2 * i + 1]) for i in range(cfg.num_layers))

    def save(self, directory: str | Path) -> None:
        """Write ``prefix.safetensors`` then ``prefix.json`` (the JSON, written last, marks a complete save)."""
        directory = Path(directory)
        save_tensors(directory / PREFIX_WEIGHTS, dict(self.state_dict()), metadata={"format": "pt"})
        atomic_write_json(directory / PREFIX_CONFIG, {"format": PREFIX_FORMAT, **dataclasses.asdict(self.config)})

    @classmethod
    def load(
        cls,
        directory: str | Path,
        model: Any = None,
        pre_seq_len: int | None = None,
        allow_pickle_weights: bool = False,
    ) -> PrefixEncoder:
        """Load our format or ChatGLM2's official p-tuning checkpoint; check it fits ``model`` and ``pre_seq_len``.

        The official recipe may save ``pytorch_model.bin``, a pickle: read only with ``allow_pickle_weights``."""
        directory = Path(directory)
        if not directory.is_dir():
            raise InputError("prefix checkpoint folder not found", file=directory)
        if (directory / PREFIX_CONFIG).is_file():
            encoder = _load_ours(directory)
        else:
            if model is None:
                raise InputError(
                    f"no {PREFIX_CONFIG}: a ChatGLM2 p-tuning checkpoint needs the base model", file=directory
                )
            encoder = _load_chatglm2_official(directory, model, allow_pickle_weights)
        if pre_seq_len is not None and encoder.config.pre_seq_len != pre_seq_len:
            raise MismatchError(
                f"{directory}: field 'pre_seq_len' is {encoder.config.pre_seq_len}, expected {pre_seq_len}"
            )
        if model is not None:
            encoder.config.check_fits(model, directory)
        return encoder


def _load_ours(directory: Path) -> PrefixEncoder:
    """Read ``prefix.json`` + ``prefix.safetensors`` written by :meth:`PrefixEncoder.save`."""
    meta_file = directory / PREFIX_CONFIG
    meta = read_json(meta_file)
    if not isinstance(meta, dict) or meta.get("format") != PREFIX_FORMAT:
        raise InputError(f"expected {PREFIX_FORMAT!r}", file=meta_file, field="format")
    settings = check_json_fields(PrefixConfig, {k: v for k, v in meta.items() if k != "format"}, meta_file)
    try:
        config = PrefixConfig(**settings)
    except InputError as exc:
        raise InputError(exc.problem, file=meta_file, field=exc.field) from None
    encoder = PrefixEncoder(config)
    _load_state(encoder, load_tensors(directory / PREFIX_WEIGHTS), directory / PREFIX_WEIGHTS)
    return encoder


def _load_chatglm2_official(directory: Path, model: Any, allow_pickle_weights: bool) -> PrefixEncoder:
    """Read a checkpoint from ChatGLM2's ptuning recipe: only ``transformer.prefix_encoder.*`` weights."""
    weights_file = next((directory / n for n in CHATGLM2_PREFIX_FILES if (directory / n).is_file()), None)
    if weights_file is None:
        raise InputError(f"neither {PREFIX_CONFIG} nor {' / '.join(CHATGLM2_PREFIX_FILES)} found", file=directory)
    state = {
        k[len(CHATGLM2_PREFIX_KEY) :]: v
        for k, v in read_weight_file(weights_file, allow_pickle_weights).items()
        if k.startswith(CHATGLM2_PREFIX_KEY)
    }
    if "embedding.weight" not in state:
        raise InputError(f"no '{CHATGLM2_PREFIX_KEY}embedding.weight' tensor", file=weights_file)
    pre_seq_len, kv_size = state["embedding.weight"].shape
    projection = "trans.0.weight" in state
    config_file = directory / "config.json"
    if config_file.is_file():  # the recipe saves the full model config, which names pre_seq_len
        saved = read_json(config_file)
        if isinstance(saved, dict) and saved.get("pre_seq_len") not in (None, pre_seq_len):
            raise MismatchError(
                f"{config_file}: field 'pre_seq_len' is {saved['pre_seq_len']} but the prefix tensor has "
                f"{pre_seq_len} rows"
            )
    config = PrefixConfig.for_model(model, int(pre_seq_len), projection)
    if projection:
        config.projection_hidden_size = int(state["trans.0.weight"].shape[0])
    config.base_config_sha256 = None  # the recipe records no base identity; shapes are checked instead
    if kv_size != config.kv_size:
        raise MismatchError(
            f"{weights_file}: prefix rows hold {kv_size} values but the base model needs {config.kv_size} "
            f"(layers {config.num_layers} x 2 x kv heads {config.num_kv_heads} x head dim {config.head_dim})"
        )
    encoder = PrefixEncoder(config)
    _load_state(encoder, state, weights_file)
    return encoder


def _load_state(encoder: PrefixEncoder, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strictly load ``state`` into ``encoder``, naming the file and tensor on a mismatch."""
    expected = encoder.state_dict()
    for name, tensor in state.items():
        if name not in expected:
            raise MismatchError(f"{source}: unexpected prefix tensor '{name}'")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise MismatchError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
    missing = sorted(set(expected) - set(state))
    if missing:
        raise MismatchError(f"{source}: missing prefix tensor '{missing[0]}'")
    encoder.load_state_dict({k: v.float() for k, v in state.items()})


# ---------------------------------------------------------------------------------------------------------------
# Applying a prefix to a transformers model


class _PrefixState:
    """Per-model holder the attention layers read: the encoder and the prefix computed for the current call."""

    def __init__(self, encoder: PrefixEncoder) -> None:
        self.encoder = encoder
        self.kv: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None


# Attention module -> prefix state of the model it belongs to (weak, so dropped models are not kept alive).
_STATES: weakref.WeakKeyDictionary[nn.Module, _PrefixState] = weakref.WeakKeyDictionary()


def _prefix_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA attention with the layer's prefix keys/values prepended and the mask opened over them."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state = _STATES.get(module)
    if state is None or state.kv is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    batch, _, q_len, _ = query.shape  # (b, h, q, d)
    kv_len = key.shape[2]  # key, value: (b, kv, k, d)
    prefix_key, prefix_value = state.kv[cast(int, module.layer_idx)]  # (b or 1, kv, p, d)
    pre_len = prefix_key.shape[2]
    prefix_key = prefix_key.to(key.dtype).expand(batch, -1, -1, -1)
    prefix_value = prefix_value.to(value.dtype).expand(batch, -1, -1, -1)
    key = torch.cat([prefix_key, key], dim=2)  # (b, kv, p + k, d)
    value = torch.cat([prefix_value, value], dim=2)
    if attention_mask is None:  # plain causal attention over the real tokens
        q_pos = torch.arange(q_len, device=query.device) + (kv_len - q_len)
        real = torch.arange(kv_len, device=query.device)[None, :] <= q_pos[:, None]  # (q, k)
        real = real[None, None]  # (1, 1, q, k)
    elif attention_mask.dtype == torch.bool:
        real = attention_mask  # (b, 1, q, k), True = attend
    else:
        real = attention_mask == 0  # additive float mask: 0 = attend
    opened = torch.ones((*real.shape[:3], pre_len), dtype=torch.bool, device=real.device)
    mask = torch.cat([opened, real], dim=-1)  # (b, 1, q, p + k)
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, mask, is_causal=False, **kwargs)


def _register_attention() -> None:
    """Register the prefix attention (and its mask builder, SDPA's) with transformers once per process."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if ATTN_IMPLEMENTATION not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTN_IMPLEMENTATION, _prefix_sdpa_attention)
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Batch size of a base-model call, from input_ids (first positional or keyword) or inputs_embeds."""
    for tensor in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), args[0] if args else None):
        if isinstance(tensor, torch.Tensor):
            return int(tensor.shape[0])
    raise InputError("a prefixed model needs input_ids or inputs_embeds")


def attention_modules(model: Any) -> list[nn.Module]:
    """Attention modules of the model's decoder layers (those with a ``layer_idx`` and k/v projections)."""
    return [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "k_proj") and hasattr(m, "v_proj")]


def attach_prefix(model: Any, encoder: PrefixEncoder) -> None:
    """Apply ``encoder``'s prefix to every forward and generate call of ``model`` (replacing any previous prefix).

    The encoder becomes ``model.prefix_encoder`` (so ``.to()``, ``.parameters()`` and optimizers see it); the base
    weights are untouched. Raises ElmdError-derived errors for models whose attention is not pluggable.
    """
    detach_prefix(model)
    if not getattr(model, "_supports_attention_backend", False):
        raise InputError(f"{type(model).__name__} does not use transformers' attention interface; cannot add a prefix")
    encoder.config.check_fits(model)
    attention = attention_modules(model)
    if len(attention) != encoder.config.num_layers:
        raise MismatchError(f"found {len(attention)} attention layers, the prefix has {encoder.config.num_layers}")
    _register_attention()
    param = next(model.parameters())
    model.prefix_encoder = encoder.to(param.device)
    state = _PrefixState(model.prefix_encoder)
    for module in attention:
        _STATES[module] = state

    def compute_prefix(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        enc = state.encoder
        # In eval mode the prefix is identical for every row: compute it once and broadcast it in attention.
        state.kv = enc(_batch_size(args, kwargs) if enc.training else 1)

    model._elmd_prefix_hook = model.base_model.register_forward_pre_hook(compute_prefix, with_kwargs=True)
    model._elmd_prefix_attn = model.config._attn_implementation
    model.set_attn_implementation(ATTN_IMPLEMENTATION)


def detach_prefix(model: Any) -> PrefixEncoder | None:
    """Remove a prefix added by :func:`attach_prefix`; returns its encoder (None if there was none)."""
    hook = getattr(model, "_elmd_prefix_hook", None)
    if hook is None:
        return None
    hook.remove()
    for module in attention_modules(model):
        _STATES.pop(module, None)
    model.set_attn_implementation(model._elmd_prefix_attn)
    encoder: PrefixEncoder = model.prefix_encoder
    del model.prefix_encoder, model._elmd_prefix_hook, model._elmd_prefix_attn
    return encoder


def prefix_encoder_of(model: Any) -> PrefixEncoder | None:
    """The prefix currently applied to ``model`` by :func:`attach_prefix`, if any."""
    encoder = getattr(model, "prefix_encoder", None)
    return encoder if isinstance(encoder, PrefixEncoder) else None
