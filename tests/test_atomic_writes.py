"""Atomic file writes: the new content is flushed and fsync'ed in a temporary sibling before it replaces the old
file, and a write that fails leaves the old file and nothing else."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from io_fakes import record_fsyncs

from elmd_sdk.io import atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text, save_tensors

WRITERS: dict[str, Callable[[Path], None]] = {
    "text": lambda path: atomic_write_text(path, "new text"),
    "bytes": lambda path: atomic_write_bytes(path, b"new bytes"),
    "json": lambda path: atomic_write_json(path, {"new": True}),
    "tensors": lambda path: save_tensors(path, {"x": torch.ones(3)}),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_the_new_content_is_on_disk_before_it_replaces_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    synced = record_fsyncs(monkeypatch, lambda: (target.read_bytes(), sorted(p.name for p in tmp_path.iterdir())))
    WRITERS[writer](target)
    new = target.read_bytes()
    assert new != b"old"
    [(inode, size, (target_then, listing))] = [s[1:] for s in synced if s[0] == "file"]  # one file, synced once
    assert inode == target.stat().st_ino  # the synced file is the one renamed onto the target
    assert size == len(new)  # everything written was flushed to it before the sync
    assert target_then == b"old"  # ... and the sync came before the rename
    assert len(listing) == 2 and listing[0].startswith(".out.") and listing[0].endswith(".tmp")  # a hidden sibling
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), atomic_open(target) as fh:
        fh.write("half of the new content")
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_the_rename_is_flushed_by_one_fsync_of_the_folder_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    synced = record_fsyncs(monkeypatch, target.read_bytes)
    WRITERS[writer](target)
    assert [(kind, inode) for kind, inode, _, _ in synced] == [
        ("file", target.stat().st_ino), ("folder", tmp_path.stat().st_ino)]  # fmt: skip
    assert synced[0][3] == b"old" and synced[1][3] == target.read_bytes() != b"old"  # file, rename, then the folder


def test_a_written_file_has_the_mode_a_plain_open_gives(tmp_path: Path) -> None:
    umask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w", encoding="utf-8") as plain:
            plain.write("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
