"""Resumable training checkpoints in safetensors + JSON (no pickle), written atomically, and the resume rules ERM,
REP and EERG share.

A run writing to ``OUT`` keeps its checkpoint in the folder ``OUT/checkpoint``: ``state-<hash>.safetensors``
(trainable weights, the optimizer's tensors, RNG states) and ``state.json`` (step counters, optimizer scalars,
config, and the name and SHA-256 of its tensor file). The tensor file gets a new name each time and is written
first; ``state.json`` is then replaced atomically, and only after that are older tensor files removed.
A run killed at any moment therefore leaves ``state.json`` naming a complete tensor file: the new
checkpoint or the previous one, never a torn mix. A run refuses to start afresh over an unfinished run's checkpoint
(:func:`check_start`), and to resume with settings that would change its result (:func:`check_resumable`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_write_json, load_tensors, read_json, save_tensors, sha256_file

CHECKPOINT_DIR = "checkpoint"
STATE_JSON = "state.json"
TRAINING_LOG = "training.json"  # beside the trained weights: the run's settings, history and whether it completed


def checkpoint_dir(out_dir: str | Path) -> Path:
    """The checkpoint folder of a run writing to ``out_dir``."""
    return Path(out_dir) / CHECKPOINT_DIR


def has_checkpoint(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds the checkpoint of an unfinished run."""
    return (checkpoint_dir(out_dir) / STATE_JSON).is_file()


def check_start(out_dir: str | Path, resume: bool) -> None:
    """Refuse to start afresh over an unfinished run's checkpoint, and to resume where there is none."""
    if has_checkpoint(out_dir) and not resume:
        problem = "holds the checkpoint of an unfinished run; resume it (--resume) or choose another folder"
        raise InputError(problem, file=out_dir)
    if resume and not has_checkpoint(out_dir):
        raise _nothing_to_resume(out_dir)


def _nothing_to_resume(out_dir: str | Path) -> InputError:
    return InputError(
        f"nothing to resume: no checkpoint in {checkpoint_dir(out_dir)}; run without --resume to start a new run",
        file=out_dir,
    )


def check_resumable(saved: Mapping[str, Any], current: Mapping[str, Any], may_change: Set[str], where: Path) -> None:
    """Raise :class:`MismatchError` naming the first setting (other than ``may_change``) that differs between the
    checkpoint's ``saved`` settings and the resumed run's ``current`` ones (both as read back from JSON)."""
    for key in sorted(saved.keys() | current.keys()):
        if key not in may_change and saved.get(key) != current.get(key):
            raise MismatchError(
                f"{where}: saved with {key}={saved.get(key)!r}, resumed with {current.get(key)!r}; "
                "resume with the same settings or choose another output directory"
            )


def flatten_optimizer_state(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and the JSON-serialisable rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    """The torch (CPU and, once used, CUDA), numpy and Python RNG states as tensors."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    py_state = random.getstate()
    state = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy.keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "rng.numpy.meta": torch.tensor([pos, has_gauss, gauss], dtype=torch.float64),
        "rng.python": torch.tensor(py_state[1], dtype=torch.int64),
    }
    if torch.cuda.is_initialized():  # dropout on a GPU draws from the CUDA generators
        state["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())  # (devices, generator state bytes)
    return state


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = tensors.get("rng.cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(cuda))
    pos, has_gauss, gauss = tensors["rng.numpy.meta"].tolist()
    keys = tensors["rng.numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), gauss))
    random.setstate((3, tuple(int(x) for x in tensors["rng.python"].tolist()), None))


def save_checkpoint(
    out_dir: str | Path,
    model_tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
) -> Path:
    """Write ``out_dir/checkpoint`` atomically: weights (prefixed ``model.``), optimizer, RNG and ``meta``."""
    ckpt = checkpoint_dir(out_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model_tensors.items()}
    tensors.update(rng_state())
    optim_meta: dict[str, Any] | None = None
    if optimizer is not None:
        optim_tensors, optim_meta = flatten_optimizer_state(optimizer)
        tensors.update(optim_tensors)
    staging = ckpt / ".state.safetensors.new"
    save_tensors(staging, tensors)
    digest = sha256_file(staging)
    tensors_file = f"state-{digest[:16]}.safetensors"
    os.replace(staging, ckpt / tensors_file)
    atomic_write_json(
        ckpt / STATE_JSON,
        {"meta": meta, "optimizer": optim_meta, "tensors_file": tensors_file, "tensors_sha256": digest},
    )
    _drop_leftovers(ckpt, tensors_file)
    return ckpt


def _drop_leftovers(ckpt: Path, keep: str) -> None:
    """Remove every file of ``ckpt`` but ``state.json`` and the tensor file ``keep`` it names: older tensor files,
    and the staging and temporary files of a save that a kill interrupted."""
    for path in ckpt.iterdir():
        if path.is_file() and path.name not in (STATE_JSON, keep):
            path.unlink()


def load_checkpoint(
    out_dir: str | Path, optimizer: torch.optim.Optimizer | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Load ``out_dir/checkpoint``: returns (model tensors without prefix, meta), or None if absent.

    Restores the optimizer (when given) and the RNG states, so training continues as if never stopped.
    """
    ckpt = checkpoint_dir(out_dir)
    if not (ckpt / STATE_JSON).is_file():
        return None
    info = read_json(ckpt / STATE_JSON)
    tensors_path = ckpt / info["tensors_file"]
    if not tensors_path.is_file() or sha256_file(tensors_path) != info["tensors_sha256"]:
        raise InputError("checkpoint tensors are missing or do not match state.json", file=tensors_path)
    _drop_leftovers(ckpt, info["tensors_file"])  # what an interrupted save left behind
    tensors = load_tensors(tensors_path)
    if optimizer is not None and info["optimizer"] is not None:
        restore_optimizer_state(optimizer, tensors, info["optimizer"])
    set_rng_state(tensors)
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return model, info["meta"]


def resume_checkpoint(
    out_dir: str | Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`load_checkpoint` for a run resumed with ``--resume``: an :class:`InputError` when there is none."""
    loaded = load_checkpoint(out_dir, optimizer)
    if loaded is None:
        raise _nothing_to_resume(out_dir)
    return loaded
