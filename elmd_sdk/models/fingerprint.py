"""Identity of a loaded base LLM: what bundles, projectors and prefixes record to refuse weights made for another."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Config keys that change with the transformers version or runtime settings, not with the model's identity.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "dtype", "torch_dtype", "use_cache", "architectures"}


def llm_fingerprint(model: Any) -> dict[str, Any]:
    """JSON-ready identity of a loaded base LLM (bundles compare it to refuse weights made for another model).

    ``config_sha256`` hashes the model config without runtime-only keys (dtype, versions, attention backend), so
    the same checkpoint loaded in bf16 or on another transformers release keeps its fingerprint.
    """
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    identity = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    blob = json.dumps(identity, sort_keys=True, default=str).encode("utf-8")
    return {
        "name_or_path": str(getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "")),
        "model_type": str(config.model_type),
        "hidden_size": int(text_config.hidden_size),
        "num_layers": int(text_config.num_hidden_layers),
        "vocab_size": int(text_config.vocab_size),
        "config_sha256": hashlib.sha256(blob).hexdigest(),
    }
