"""Test helper for durable writes: every ``os.fsync`` recorded with what was synced and the state at that moment."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

import pytest


def record_fsyncs(monkeypatch: pytest.MonkeyPatch, look: Callable[[], Any]) -> list[tuple[str, int, int, Any]]:
    """Record every fsync: ("file" or "folder", its inode, its size, ``look()`` at that moment)."""
    synced: list[tuple[str, int, int, Any]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append(("folder" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino, info.st_size, look()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced
