"""One-time conversion of a GGUF causal LM into a local safetensors folder that later loads start from quickly.

transformers can read a GGUF file, but it de-quantizes every tensor on every load (tens of seconds) and refuses
``save_pretrained`` on the result. The first load therefore writes the de-quantized state dict (safetensors),
config, generation config and tokenizer into ``cache_dir()/llm/<sha256 of the GGUF>``, built in a temporary folder
and renamed into place, so a killed conversion never leaves a half-written cache.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_write_json, read_json, save_tensors, sha256_file
from elmd_sdk.paths import cache_dir
from elmd_sdk.progress import make_progress

WEIGHTS_NAME = "model.safetensors"
SOURCE_NAME = "elmd_source.json"


def _llm_cache_root() -> Path:
    """Folder holding every converted GGUF (one sub-folder per GGUF file content)."""
    return cache_dir() / "llm"


def _gguf_sha256(gguf: Path) -> str:
    """SHA-256 of the GGUF, memoised by (path, size, mtime) so a warm start does not re-hash ~100 MB."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    index_file = _llm_cache_root() / "gguf_hashes.json"
    index: dict[str, str] = {}
    if index_file.is_file():
        with contextlib.suppress(InputError):
            loaded = read_json(index_file)
            if isinstance(loaded, dict):
                index = loaded
    if key in index:
        return index[key]
    digest = sha256_file(gguf)
    index[key] = digest
    atomic_write_json(index_file, index)
    return digest


def gguf_cache_path(gguf: str | Path) -> Path:
    """Folder where the converted copy of ``gguf`` lives (whether or not it exists yet)."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise InputError("GGUF file not found", file=gguf)
    return _llm_cache_root() / _gguf_sha256(gguf)


def ensure_gguf_cache(gguf: str | Path) -> Path:
    """Return the converted folder of ``gguf``, converting it first if this machine has not done so yet."""
    gguf = Path(gguf)
    target = gguf_cache_path(gguf)
    if (target / WEIGHTS_NAME).is_file() and (target / SOURCE_NAME).is_file():
        return target
    _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    """De-quantize ``gguf`` with transformers and write it as a plain HF folder at ``target`` (atomic rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with make_progress(transient=True) as progress:
        task = progress.add_task(f"converting {gguf.name} (first use only)", total=2, info="de-quantizing")
        try:
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot read this GGUF with transformers ({exc})", file=gguf) from None
        progress.update(task, advance=1, info=f"writing {target}")
        _write_folder(model, tokenizer, gguf, target)
        progress.update(task, advance=1, info="done")


def _write_folder(model: Any, tokenizer: Any, gguf: Path, target: Path) -> None:
    """Write weights, config, generation config and tokenizer into a temp folder, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        state = model.state_dict()
        if model.config.tie_word_embeddings:
            # Tied output weights share storage with the input embedding; safetensors stores each tensor once.
            for tied in getattr(model, "_tied_weights_keys", None) or {}:
                state.pop(tied, None)
        save_tensors(tmp / WEIGHTS_NAME, state, metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / SOURCE_NAME, {"gguf_file": gguf.name, "sha256": target.name})
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first (or a stale partial folder exists).
            if not (target / SOURCE_NAME).is_file():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
