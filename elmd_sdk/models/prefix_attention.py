"""How a p-tuning prefix's keys and values reach every attention layer of a transformers model.

The prefix never enters the KV cache, the positions or the weights: per call, a forward pre-hook on the base model
computes the prefix once, and each attention layer sees its layer's prefix keys/values before its own, with the
mask opened over them. Two routes, both through mechanisms transformers and torch provide:

- The attention interface (every model whose attention calls ``ALL_ATTENTION_FUNCTIONS``, StableLM included): the
  registered implementation ``elmd_prefix_sdpa`` or ``elmd_prefix_eager`` prepends the prefix, then calls what the
  model ran before: SDPA, or the model's own module-level ``eager_attention_forward``, so model-specific attention
  math stays (Gemma-2's soft-capping, which SDPA refuses). Its masks are transformers' own ``sdpa_mask`` /
  ``eager_mask``, registered under the same names.
- An attention-module hook, for attention that computes scores itself (Falcon calls
  ``scaled_dot_product_attention`` directly, so its implementation cannot be set): a forward pre-hook on each
  attention module passes a view of the layer's cache whose ``update`` returns the prefix before the layer's
  keys/values, and a mask opened over the prefix. Falcon with ALiBi is refused: its biases are added to the mask per
  key position, and the prefix keys have none.

The prefix is computed by the first layer a call reaches, for that call's batch; a forward pre-hook on the decoder
stack (the module holding the layer list: Llama's ``model``, OPT's ``model.decoder``) starts each call afresh, so
the stack may be called directly (as training does) or through the model.

Installing is checked by one forward pass of a few tokens: every layer must take the prefix without error, else the
model is restored and the reason raised.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from elmd_sdk.errors import InputError

PREFIX_ATTENTION = {"sdpa": "elmd_prefix_sdpa", "eager": "elmd_prefix_eager"}  # base implementation -> ours
_HOOK = frozenset({"layer_past", "attention_mask"})  # parameters of attention modules that take the cache and the mask
_OWN_ATTENTION = (
    "computes attention itself, neither through transformers' attention interface nor with the cache passed as "
    "`layer_past`; cannot add a prefix"
)

KeyValues = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (key, value): (b or 1, kv, p, d)


@dataclass(eq=False)
class PrefixState:
    """What the attention layers of one model read: the prefix of the current call and which layers took it."""

    compute: Callable[[int], KeyValues]  # batch size -> per-layer prefix keys/values
    base: str = "sdpa"  # the implementation the interface route calls after prepending the prefix
    kv: KeyValues | None = None
    seen: set[int] | None = None  # layer indices that took the prefix (recorded while checking)

    def layer(self, module: nn.Module, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's prefix (key, value) in a call of ``batch`` rows, each (b or 1, kv, p, d) (the first layer of
        a call computes every layer's); records that the layer took it."""
        if self.kv is None:
            self.kv = self.compute(batch)
        index = cast(int, module.layer_idx)
        if self.seen is not None:
            self.seen.add(index)
        return self.kv[index]


# Attention module -> the prefix state of the model it belongs to (weak: dropped models are not kept alive).
_STATES: weakref.WeakKeyDictionary[nn.Module, PrefixState] = weakref.WeakKeyDictionary()


def _state(module: nn.Module) -> PrefixState:
    state = _STATES.get(module)
    if state is None:  # the model was set to our implementation but this module was never given the prefix
        raise InputError(
            f"{type(module).__name__} runs elmd-sdk's prefix attention without a prefix; attach it with attach_prefix"
        )
    return state


def open_prefix(
    mask: torch.Tensor | None, query: torch.Tensor, kv_len: int, pre_len: int, additive: bool
) -> torch.Tensor:
    """The attention mask over ``pre_len`` prefix positions then ``kv_len`` real ones: ``(b or 1, 1, q, p + k)``.

    ``mask`` is the model's own over the real positions: None (plain causal, aligned to the last key), boolean
    (True: attend) or additive float (0: attend); the prefix columns are open in the same encoding. ``additive``
    asks for a float mask when ``mask`` is None (for eager attention, which adds the mask to the scores)."""
    q_len = query.shape[2]  # query: (b, h, q, d)
    if mask is None:
        q_pos = torch.arange(q_len, device=query.device) + (kv_len - q_len)
        real = (torch.arange(kv_len, device=query.device)[None, :] <= q_pos[:, None])[None, None]  # (1, 1, q, k)
        if additive:
            zero = torch.zeros((), dtype=query.dtype, device=query.device)
            real = torch.where(real, zero, torch.finfo(query.dtype).min)
    else:
        real = mask[..., :kv_len]  # a static cache's mask can be wider than the keys
    opened = (torch.ones if real.dtype == torch.bool else torch.zeros)(
        (*real.shape[:3], pre_len), dtype=real.dtype, device=real.device
    )  # (b or 1, 1, q, p)
    return torch.cat([opened, real], dim=-1)


def _with_prefix(
    state: PrefixState, module: nn.Module, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``key``/``value`` (b, kv, k, d) with the layer's prefix before them: (b, kv, p + k, d)."""
    batch = key.shape[0]
    prefix_key, prefix_value = state.layer(module, batch)  # (b or 1, kv, p, d)
    prefix_key = prefix_key.to(key.dtype).expand(batch, -1, -1, -1)
    prefix_value = prefix_value.to(value.dtype).expand(batch, -1, -1, -1)
    return torch.cat([prefix_key, key], dim=2), torch.cat([prefix_value, value], dim=2)


def _base_attention(module: nn.Module, base: str) -> Callable[..., tuple[torch.Tensor, Any]]:
    """SDPA as transformers registers it, or the module's own eager attention (its model's math, e.g. soft-capping)."""
    if base == "sdpa":
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        return cast(Callable[..., tuple[torch.Tensor, Any]], ALL_ATTENTION_FUNCTIONS["sdpa"])
    return cast(Callable[..., tuple[torch.Tensor, Any]], sys.modules[type(module).__module__].eager_attention_forward)


def _prefix_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """The registered attention: the layer's prefix keys/values prepended, the mask opened over them, then the base."""
    state = _state(module)
    kv_len = key.shape[2]  # key, value: (b, kv, k, d)
    key, value = _with_prefix(state, module, key, value)
    mask = open_prefix(attention_mask, query, kv_len, key.shape[2] - kv_len, additive=state.base == "eager")
    if state.base == "sdpa":
        kwargs["is_causal"] = False  # the mask says it all: SDPA's own causal flag aligns to the first key
    return _base_attention(module, state.base)(module, query, key, value, mask, **kwargs)


def _register() -> None:
    """Register the prefix attention and its masks (transformers' own) with transformers, once per process."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask, sdpa_mask

    masks: dict[str, Callable[..., Any]] = {"sdpa": sdpa_mask, "eager": eager_mask}
    for base, name in PREFIX_ATTENTION.items():
        if name not in ALL_MASK_ATTENTION_FUNCTIONS:
            AttentionInterface.register(name, _prefix_attention)
            AttentionMaskInterface.register(name, masks[base])


class _PrefixedCache:
    """One call's view of a layer cache (or of none) whose ``update`` returns the prefix before the keys/values."""

    def __init__(self, cache: Any, state: PrefixState, module: nn.Module) -> None:
        self.cache, self.state, self.module = cache, state, module

    def update(self, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if self.cache is not None:
            key, value = self.cache.update(key, value, *args, **kwargs)  # (b, kv, k, d): the cached and the new
        return _with_prefix(self.state, self.module, key, value)


def _hook_attention(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Forward pre-hook of an attention module that computes scores itself: a cache view adding the prefix and a
    mask opened over it (its scores are ``q @ k^T`` plus the mask, or SDPA with it)."""
    state = _state(module)
    hidden = args[0] if args else kwargs["hidden_states"]  # (b, q, hidden)
    cache = kwargs.get("layer_past")
    kv_len = hidden.shape[1] + (cache.get_seq_length(module.layer_idx) if cache is not None else 0)
    pre_len = state.layer(module, hidden.shape[0])[0].shape[2]
    query_like = hidden[:, None]  # (b, 1, q, hidden): the batch, query length, dtype and device of the scores
    # additive where the model passed none: its scores add the mask (eager), or SDPA takes either encoding
    kwargs["attention_mask"] = open_prefix(kwargs.get("attention_mask"), query_like, kv_len, pre_len, additive=True)
    kwargs["layer_past"] = _PrefixedCache(cache, state, module)
    return args, kwargs


@dataclass(eq=False)
class Installed:
    """A prefix installed on a model: :meth:`remove` restores the model as it was."""

    model: Any
    modules: list[nn.Module]
    handles: list[Any]
    attention: str | None  # the implementation before (interface route), None on the hook route

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        for module in self.modules:
            _STATES.pop(module, None)
        if self.attention is not None:
            self.model.set_attn_implementation(self.attention)


def install(model: Any, state: PrefixState, num_layers: int) -> Installed:
    """Route ``state``'s prefix into every attention layer of ``model`` and check it with one forward pass.

    Raises :class:`InputError` saying why a model cannot take a prefix; the model is then left as it was."""
    name = type(model).__name__
    modules = [m for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)]
    if not modules:
        raise InputError(f"{name}: no attention layers with a layer index; cannot add a prefix")
    # transformers' own test of whether the attention implementation can be switched (its source calls the interface)
    switchable = getattr(type(model), "_can_set_attn_implementation", lambda: True)()
    hooked = [] if switchable else [m for m in modules if set(inspect.signature(m.forward).parameters) >= _HOOK]
    if not switchable and not hooked:
        raise InputError(f"{name} {_OWN_ATTENTION}")
    takes_alibi = any("alibi" in inspect.signature(m.forward).parameters for m in modules)
    if getattr(model.config.get_text_config(), "alibi", takes_alibi):  # Bloom's attention always takes ALiBi
        raise InputError(
            f"{name} uses ALiBi position biases, added to the scores per key position; the prefix keys have no "
            "position, so this model cannot take a p-tuning prefix"
        )
    installed = Installed(model, modules, [], None)

    def new_call(_module: nn.Module, _args: tuple[Any, ...]) -> None:
        state.kv = None

    installed.handles.append(_decoder_stack(model, modules).register_forward_pre_hook(new_call))
    for module in modules:
        _STATES[module] = state
    try:
        if hooked:
            for module in hooked:
                installed.handles.append(module.register_forward_pre_hook(_hook_attention, with_kwargs=True))
        else:
            _set_prefix_attention(model, state, installed)
        _check_every_layer(model, state, num_layers)
    except BaseException:
        installed.remove()
        raise
    return installed


def _decoder_stack(model: Any, modules: list[nn.Module]) -> nn.Module:
    """The module whose forward runs the decoder layers: the parent of the layer list that holds ``modules``."""
    names = {module: name for name, module in model.named_modules()}
    common: list[str] = []
    for parts in zip(*(names[m].split(".") for m in modules), strict=False):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    cut = next((i for i, part in enumerate(common) if part.isdigit()), len(common))  # the layer list ends here
    return cast(nn.Module, model.get_submodule(".".join(common[: max(cut - 1, 0)])))


def _set_prefix_attention(model: Any, state: PrefixState, installed: Installed) -> None:
    """Switch ``model`` to the prefix attention over the implementation it runs now (SDPA where it ran another)."""
    _register()
    name = type(model).__name__
    before = model.config._attn_implementation
    state.base = before if before in PREFIX_ATTENTION else ("sdpa" if model._supports_sdpa else "eager")
    model.set_attn_implementation(PREFIX_ATTENTION[state.base])
    installed.attention = before
    if model.config._attn_implementation != PREFIX_ATTENTION[state.base]:
        raise InputError(f"{name} {_OWN_ATTENTION}")
    if state.base == "eager":
        files = {type(m).__module__ for m in installed.modules}
        missing = sorted(f for f in files if not hasattr(sys.modules[f], "eager_attention_forward"))
        if missing:
            raise InputError(
                f"{name} runs eager attention, and {missing[0]} has no eager_attention_forward for the prefix "
                "attention to call; cannot add a prefix"
            )


@torch.no_grad()
def _check_every_layer(model: Any, state: PrefixState, num_layers: int) -> None:
    """One forward pass of three tokens: it must run, and every layer index must have taken the prefix."""
    name = type(model).__name__
    state.seen = set()
    try:
        device = next(model.parameters()).device
        model(input_ids=torch.ones((1, 3), dtype=torch.long, device=device), use_cache=False)
        seen = set(state.seen)
    except Exception as error:  # whatever the model's own code raises on the longer keys: the reason to refuse
        raise InputError(f"{name} fails with a prefix in its attention ({type(error).__name__}: {error})") from None
    finally:
        state.seen, state.kv = None, None
    if seen != set(range(num_layers)):
        missing = sorted(set(range(num_layers)) - seen)
        raise InputError(
            f"{name}: attention layer(s) {missing} of {num_layers} did not take the prefix (their attention neither "
            "calls transformers' attention interface nor takes the cache as `layer_past`); cannot add a prefix"
        )
