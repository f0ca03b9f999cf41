"""Atomic file writes: every checkpoint, index, bundle and dataset goes through here.

A write goes to a temporary file in the destination's folder, is flushed to disk, then renamed over
the destination, so a killed run leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:  # torch loads only when tensors are read or written: reading JSON manifests stays light
    import torch
    from torch import nn


def _umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (mkstemp's files are private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def path_inside(root: str | Path, relative: str, *, file: str | Path, field: str) -> Path:
    """``root / relative`` for a path read from a manifest in ``root``: an InputError naming ``file`` and ``field``
    unless it stays inside ``root`` once resolved, symlinks and ``..`` included."""
    from elmd_sdk.errors import InputError

    root = Path(root)
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise InputError(f"{relative!r} leads out of {root} (through '..' or a symbolic link)", file=file, field=field)
    return path


def check_writable(path: str | Path, *, folder: bool = False) -> Path:
    """Fail now, not at the end of a long run, when ``path`` (a file, or a folder with ``folder``) cannot be written.

    Creates the parent folders and a probe file beside ``path`` (removed at once); the OSError names the path:
    a directory where a file goes (or the reverse), a parent that is a file, a read-only or full file system.
    """
    import errno

    path = Path(path)
    _refuse_embedded_default(path)
    if path.is_dir() and not folder:
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    if path.exists() and folder and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(path))
    existing = next(parent for parent in path.parents if parent.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(existing))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as error:
        raise type(error)(error.errno, error.strerror, str(path.parent)) from None
    os.close(fd)
    os.unlink(probe)
    return path


def check_output_folder(path: str | Path, *marks: str, overwrite: bool = False) -> Path:
    """Fail now when a command cannot replace the folder ``path`` with the one it writes (as a whole, at the end):
    when :func:`check_writable` fails, or when ``path`` is a folder with files that holds none of ``marks`` (relative
    paths of the files that mark a folder this kind of command writes: its manifest, such as ``index.json``), unless
    ``overwrite``: replacing that folder would delete files the command did not write."""
    from elmd_sdk.errors import InputError

    path = Path(path)
    if not overwrite and path.is_dir() and any(path.iterdir()) and not any((path / m).is_file() for m in marks):
        problem = (
            f"is a folder of other files (it has no {' or '.join(marks)}), which writing here would delete; "
            "choose a new or empty folder, or pass --overwrite to replace it"
        )
        raise InputError(problem, file=path, field="--out")
    return check_writable(path, folder=True)


def _refuse_embedded_default(path: Path) -> None:
    """An :class:`InputError` when ``path`` lies in the embedded default bundle, which every command only reads."""
    from elmd_sdk.errors import InputError
    from elmd_sdk.paths import default_bundle_path

    default = default_bundle_path().resolve()
    if path.resolve().is_relative_to(default):
        raise InputError(
            f"is inside the embedded default bundle, which elmd-sdk only reads; copy it first "
            f"(cp -r {default} my_bundle) and use the copy",
            file=path,
        )


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a new sibling folder of ``target`` to fill; when the block ends without error it replaces ``target``
    as a whole (:func:`replace_folder`), else it is removed. A kill at any moment leaves the old complete folder
    (or no folder, if there was none) and at most hidden ``.NAME.*`` siblings, which the next write removes; a kill
    between the two renames of :func:`replace_folder` leaves the old folder aside, and the next write puts it back
    before it starts."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = sorted(target.parent.glob(f".{target.name}.*.old"))
    if aside and not target.exists():
        os.replace(aside.pop(), target)
    for stale in [*aside, *target.parent.glob(f".{target.name}.*.tmp")]:
        shutil.rmtree(stale, ignore_errors=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    temporary.mkdir()  # follows the umask, unlike mkdtemp's private folder
    try:
        yield temporary
        replace_folder(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def replace_folder(new: str | Path, target: str | Path) -> None:
    """Put folder ``new`` in place of ``target`` by two renames (the old one moves aside, then is deleted)."""
    new, target = Path(new), Path(target)
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    fsync_folder(Path(target).parent)
    shutil.rmtree(old, ignore_errors=True)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: the file's own fsync is all they offer
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
        fsync_folder(path.parent)  # the rename itself survives a power loss
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted UTF-8 JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a missing or damaged file into an :class:`InputError` naming it."""
    from elmd_sdk.errors import InputError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except RecursionError:
        raise InputError("JSON nested too deeply to read", file=path) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer too long to convert
        line = getattr(exc, "lineno", None)
        raise InputError(f"not valid UTF-8 JSON ({exc})", file=path, line=line) from None


def is_json_int(value: Any) -> TypeGuard[int]:
    """Whether a parsed JSON value is an integer (``true`` and ``false`` are not, although Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_json_number(value: Any) -> TypeGuard[int | float]:
    """Whether a parsed JSON value is a finite number (not a bool; Python's JSON reads ``1e400`` as infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "str": lambda value: isinstance(value, str),
    "int": is_json_int,
    "float": is_json_number,
    "bool": lambda value: isinstance(value, bool),
    "None": lambda value: value is None,
}


def check_json_fields(cls: type, data: Any, file: str | Path | None) -> dict[str, Any]:
    """``data``, parsed from the JSON ``file``, as keyword arguments of the dataclass ``cls`` whose fields are
    ``str``, ``int``, ``float``, ``bool`` or a union of them with ``None``: an :class:`InputError` naming the file and
    the field when ``data`` is not an object, holds a key ``cls`` lacks, or a value of another type (a bool is not an
    int, a float must be finite, ``"30"`` is not a number). Missing keys take the field's default."""
    import dataclasses

    from elmd_sdk.errors import InputError

    if not isinstance(data, dict):
        raise InputError("expected a JSON object", file=file)
    known = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in known:
            raise InputError(f"unknown field (known: {', '.join(known)})", file=file, field=key)
        kinds = known[key].split(" | ")
        if not any(_JSON_TYPES[kind](value) for kind in kinds):
            raise InputError(f"must be {' or '.join(kinds)}, got {value!r}", file=file, field=key)
    return data


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (contiguous CPU copies; never pickle)."""
    from safetensors.torch import save

    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(cpu, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU, with an :class:`InputError` naming a missing or bad file."""
    from safetensors.torch import load_file

    from elmd_sdk.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=path)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise InputError(f"not a readable safetensors file ({exc})", file=path) from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_sha256(modules: Sequence[nn.Module], header: Callable[[int, str, torch.Tensor], str]) -> str:
    """Hex SHA-256 over the modules' state dicts, independent of how the weights are stored: for each module (its
    position ``i``) and each tensor in name order, ``header(i, name, tensor)`` then the tensor's raw bytes. Callers
    keep their own header wording, so the digests already written into bundles and indexes stay valid."""
    import torch

    h = hashlib.sha256()
    for index, module in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu()
            h.update(header(index, name, t).encode())
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
