"""One entry point for every language model elmd-sdk runs: the embedded default, ChatGLM2, any HF causal LM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from elmd_sdk.errors import InputError
from elmd_sdk.io import read_json
from elmd_sdk.models.fingerprint import llm_fingerprint
from elmd_sdk.models.precision import Precision, check_precision

__all__ = ["llm_fingerprint", "load_llm"]  # llm_fingerprint lives in the leaf module fingerprint.py

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_llm(
    path_or_name: str | Path | None = None,
    prefix: str | Path | None = None,
    *,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype | None = None,
    quantize: str = "none",
    device: str | None = None,
    allow_pickle_weights: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, with an optional p-tuning v2 prefix applied to every forward/generate.

    ``path_or_name``: ``None`` for the embedded SmolLM2-135M-Instruct (converted once from its GGUF into a local
    safetensors cache); a ``.gguf`` file (same caching); a folder in ChatGLM2's original layout (``model_type``
    ``chatglm``: mapped onto transformers' ``GlmForCausalLM`` without running the checkpoint's Python, unless
    ``trust_remote_code``); or any other transformers causal LM folder or hub name. ``device`` defaults to where
    transformers loads (CPU). The model is returned in eval mode. Weights are read from safetensors only; a
    checkpoint (or official ChatGLM2 prefix) that has only pickle-format ``.bin`` files needs
    ``allow_pickle_weights=True`` (then read with ``weights_only=True``).

    ``dtype``: ``auto`` (or ``None``: the checkpoint's own), ``float32``, ``bfloat16``, ``float16`` or the
    ``torch.dtype``; ``quantize``: ``none``, or ``int8`` / ``int4`` weight-only (on the CPU with torch's kernels, in
    bfloat16; on CUDA with bitsandbytes): :mod:`elmd_sdk.models.quantize`. A prefix stays in ``dtype``.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    precision = check_precision("auto" if dtype is None else dtype, quantize)
    with _quiet_transformers():
        model, tokenizer = _load_base(path_or_name, trust_remote_code, precision, device, allow_pickle_weights)
    if prefix is not None:
        from elmd_sdk.models.prefix import PrefixEncoder, attach_prefix

        attach_prefix(model, PrefixEncoder.load(prefix, model=model, allow_pickle_weights=allow_pickle_weights))
    if device is not None:
        cast(Any, model).to(device)  # transformers re-types .to() through functools.wraps; bitsandbytes: no-op
    model.eval()
    return model, tokenizer


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-tensor tqdm bars while loading (elmd-sdk shows its own rich progress where useful)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_base(
    path_or_name: str | Path | None,
    trust_remote_code: bool,
    precision: Precision,
    device: str | None,
    allow_pickle_weights: bool,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model in ``precision``: bitsandbytes quantizes while loading on CUDA, torch's kernels after loading
    on the CPU."""
    from elmd_sdk.models.quantize import bitsandbytes_config, load_dtype, on_cuda, quantize_linears

    dtype = load_dtype(precision, device)
    options: dict[str, Any] = {}
    if precision.quantize != "none" and on_cuda(device):
        assert dtype is not None  # load_dtype picks one whenever it quantizes
        options = {"quantization_config": bitsandbytes_config(precision, dtype), "device_map": {"": device}}
    model, tokenizer = _load_source(path_or_name, trust_remote_code, dtype, allow_pickle_weights, options)
    if precision.quantize != "none" and not on_cuda(device):
        quantize_linears(model, precision.quantize)
    return model, tokenizer


def _load_source(
    path_or_name: str | Path | None,
    trust_remote_code: bool,
    dtype: torch.dtype | None,
    allow_pickle_weights: bool,
    options: dict[str, Any],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dispatch on what ``path_or_name`` is: default, .gguf file, ChatGLM2 folder, or anything transformers loads
    (``options``: more ``from_pretrained`` keywords)."""
    from elmd_sdk.hub import EMBEDDED_LLM_NAMES, is_embedded, require_hub
    from elmd_sdk.paths import DEFAULT_LLM_GGUF, default_llm_gguf

    if path_or_name is None or is_embedded(path_or_name, EMBEDDED_LLM_NAMES):
        from elmd_sdk.models.gguf_cache import ensure_gguf_cache

        model, tokenizer = _load_auto(ensure_gguf_cache(default_llm_gguf()), False, dtype, False, options)
        model.name_or_path = DEFAULT_LLM_GGUF
    else:
        local = Path(path_or_name).expanduser()
        if local.is_file() and local.suffix == ".gguf":
            from elmd_sdk.models.gguf_cache import ensure_gguf_cache

            model, tokenizer = _load_auto(ensure_gguf_cache(local), False, dtype, False, options)
        elif local.is_dir() and _model_type(local) == "chatglm" and not trust_remote_code:
            from elmd_sdk.models.chatglm2 import load_chatglm2

            model, tokenizer = load_chatglm2(local, dtype, allow_pickle_weights, **options)
        elif local.exists() and not local.is_dir():
            raise InputError("expected a model folder, a .gguf file or a hub name", file=local)
        else:
            require_hub(str(path_or_name), "language model")
            model, tokenizer = _load_auto(str(path_or_name), trust_remote_code, dtype, allow_pickle_weights, options)
        model.name_or_path = str(path_or_name)
    return model, tokenizer


def _model_type(folder: Path) -> str | None:
    """``model_type`` from a folder's config.json (None when there is none)."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise InputError("config.json must hold a JSON object", file=config_file)
    value = config.get("model_type")
    return value if isinstance(value, str) else None


def _load_auto(
    source: str | Path,
    trust_remote_code: bool,
    dtype: torch.dtype | None,
    allow_pickle_weights: bool,
    options: dict[str, Any],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """AutoModelForCausalLM + AutoTokenizer, with a missing or unreadable model turned into an InputError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    safetensors_only = {} if allow_pickle_weights else {"use_safetensors": True}
    folder = Path(source)
    pickled = sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []
    if pickled and not allow_pickle_weights and not any(folder.glob("*.safetensors")):
        raise InputError(
            f"holds pickle-format weights only ({', '.join(pickled)}); convert them to safetensors, or opt in "
            "with allow_pickle_weights=True (read with weights_only=True)",
            file=folder,
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype if dtype is not None else "auto", **safetensors_only, **kwargs, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot load a causal language model from here ({exc})", file=source) from None
    return model, tokenizer
