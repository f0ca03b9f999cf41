"""p-tuning v2 prefixes (paper section 3.5): trainable key/value prefixes in every attention layer of a causal LM.

The layout is ChatGLM2's own recipe, generalised to any model with per-layer key/value heads: an ``Embedding`` of
``pre_seq_len`` rows, each row holding ``num_layers * 2 * num_kv_heads * head_dim`` values (optionally passed
through a two-layer MLP, ``prefix_projection``), read as ``(pre_seq_len, num_layers * 2, num_kv_heads, head_dim)``
where entry ``2 i`` is layer ``i``'s key and ``2 i + 1`` its value. As in ChatGLM2, the prefix keys carry no
rotary position, every token attends to the whole prefix, and token positions start at 0 after it.

The prefix enters each attention layer rather than the KV cache (:mod:`elmd_sdk.models.prefix_attention`: through
transformers' attention interface, or an attention-module hook where attention computes its scores itself): a
forward pre-hook on the base model computes the prefix once per call, and each layer sees its prefix keys/values
before its own with the mask opened over them. The cache, positions and ``generate`` therefore work unchanged, with
``input_ids`` or ``inputs_embeds``, and gradients reach the prefix even under gradient checkpointing. PEFT's prefix
tuning cannot take this place (its generation drops the prefix); a prefix is exported for it by
:mod:`elmd_sdk.models.peft_adapter`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
DEFAULT_PRE_SEQ_LEN = 128  # prefix length of ChatGLM2's p-tuning recipe


@dataclass
class PrefixConfig:
    """Shape of a p-tuning v2 prefix and the base model it was made for."""

    pre_seq_len: int = DEFAULT_PRE_SEQ_LEN
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
    def for_model(
        cls, model: Any, pre_seq_len: int = DEFAULT_PRE_SEQ_LEN, prefix_projection: bool = False
    ) -> PrefixConfig:
        """The prefix shape that fits ``model`` (layers, key/value heads, head size), tagged with its fingerprint.

        The shape is read from the keys and values the model caches for one token, so it is what attention sees
        (Falcon's multi-query single head, whatever the config fields are called); a model whose layers differ in
        shape, or whose keys and values differ in size, cannot take a prefix (:class:`InputError`)."""
        layers, kv_heads, head_dim = _cached_shape(model)
        return cls(
            pre_seq_len=pre_seq_len,
            num_layers=layers,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            prefix_projection=prefix_projection,
            projection_hidden_size=int(model.config.get_text_config().hidden_size) if prefix_projection else 0,
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


@torch.no_grad()
def cached_keys_values(model: Any, token_ids: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the keys and values ``model`` caches for ``token_ids`` at positions 0..n-1, each (1, kv, n, d):
    what its attention sees (keys after any q/k norm and rotary embedding), whatever its projections look like. Run
    in eval mode (gradient checkpointing turns the cache off in training mode) on a plain cache that keeps every
    position (a sliding-window layer's own would drop the oldest)."""
    from transformers import DynamicCache

    from elmd_sdk.models.decoding import prefill

    ids = torch.tensor([list(token_ids)], device=next(model.parameters()).device)  # (1, n)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        layers = getattr(prefill(model, torch.ones_like(ids), input_ids=ids, cache=DynamicCache()).cache, "layers", [])
    except Exception as error:  # a model without attention (state-space layers) fails on a key/value cache
        layers = []
        reason = f" ({type(error).__name__}: {error})"
    else:
        reason = ""
    finally:
        for module, training in modes.items():
            module.training = training
    if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
        raise InputError(
            f"{type(model).__name__} keeps no per-layer key/value cache{reason}; a p-tuning prefix needs attention "
            "layers with keys and values"
        )
    return [(layer.keys, layer.values) for layer in layers]


def _cached_shape(model: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of the keys and values ``model`` caches for one token."""
    layers = cached_keys_values(model, [1])
    shapes = {(int(keys.shape[1]), int(keys.shape[-1]), int(values.shape[-1])) for keys, values in layers}
    if len(shapes) != 1:
        raise InputError(f"{type(model).__name__}: attention layers differ in shape {sorted(shapes)}; a p-tuning "
                         "prefix holds one shape for all layers")  # fmt: skip
    ((kv_heads, key_dim, value_dim),) = shapes
    if key_dim != value_dim:
        raise InputError(f"{type(model).__name__}: keys have {key_dim} values per head but values {value_dim}; a "
                         "p-tuning prefix holds keys and values of one size")  # fmt: skip
    return len(layers), kv_heads, key_dim


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


def attach_prefix(model: Any, encoder: PrefixEncoder) -> None:
    """Apply ``encoder``'s prefix to every forward and generate call of ``model`` (replacing any previous prefix).

    The encoder becomes ``model.prefix_encoder`` (so ``.to()``, ``.parameters()`` and optimizers see it); the base
    weights are untouched. A model that cannot take this prefix raises an ElmdError-derived error saying why
    (:mod:`elmd_sdk.models.prefix_attention`) and is left exactly as it was, its previous prefix included.
    """
    encoder.config.check_fits(model)
    previous = detach_prefix(model)
    try:
        _install(model, encoder)
    except BaseException:
        if previous is not None:
            _install(model, previous)
        raise


def check_takes_prefix(model: Any) -> None:
    """Raise :class:`InputError` saying why ``model`` cannot take a p-tuning prefix (checked by attaching a
    one-position prefix and detaching it again: the model is left as it was). Trainers call it before any work."""
    if prefix_encoder_of(model) is None:
        attach_prefix(model, PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=1)))
        detach_prefix(model)


def _install(model: Any, encoder: PrefixEncoder) -> None:
    from elmd_sdk.models.prefix_attention import PrefixState, install

    encoder.to(next(model.parameters()).device)
    # In eval mode the prefix is identical for every row: compute it once and broadcast it in attention.
    state = PrefixState(lambda batch: encoder(batch if encoder.training else 1))
    model._elmd_prefix = install(model, state, encoder.config.num_layers)
    model.prefix_encoder = encoder


def detach_prefix(model: Any) -> PrefixEncoder | None:
    """Remove a prefix added by :func:`attach_prefix`; returns its encoder (None if there was none)."""
    installed = getattr(model, "_elmd_prefix", None)
    if installed is None:
        return None
    installed.remove()
    encoder: PrefixEncoder = model.prefix_encoder
    del model.prefix_encoder, model._elmd_prefix
    return encoder


def prefix_encoder_of(model: Any) -> PrefixEncoder | None:
    """The prefix currently applied to ``model`` by :func:`attach_prefix`, if any."""
    encoder = getattr(model, "prefix_encoder", None)
    return encoder if isinstance(encoder, PrefixEncoder) else None
