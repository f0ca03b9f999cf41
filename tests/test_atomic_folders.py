"""Rebuilding an index, an ERM or a bundle replaces the folder as a whole: a failure at any point leaves the old
complete output, and leftovers of an interrupted write are cleaned up by the next one."""

from __future__ import annotations

from pathlib import Path

import pytest
from io_fakes import record_fsyncs
from retriever_fakes import HashEncoder, tiny_corpus

import elmd_sdk.io as io_module
from elmd_sdk.io import atomic_folder
from elmd_sdk.retrievers import EmotionalRetriever, build_index
from elmd_sdk.retrievers.encoder import ERMConfig, ERMEncoder


def test_a_failed_write_keeps_the_old_folder_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_folder(target) as folder:
        (folder / "a.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "b.txt").write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    stale = tmp_path / ".out.0123.tmp"  # what a kill -9 in the middle of a write leaves
    stale.mkdir()
    with atomic_folder(target) as folder:
        (folder / "c.txt").write_text("new", encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["c.txt"]  # replaced as a whole: a.txt is gone
    target.rename(tmp_path / ".out.4567.old")  # killed between moving the old folder aside and the new one in
    with pytest.raises(RuntimeError), atomic_folder(target):
        raise RuntimeError("the next write fails too")
    assert [p.name for p in target.iterdir()] == ["c.txt"]  # the old folder was put back first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_index_rebuilt_in_place_is_all_old_or_all_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = HashEncoder(dim=64)
    index = tmp_path / "index"
    build_index(encoder, tiny_corpus(), index)
    (index / "stray.txt").write_text("from an older version", encoding="utf-8")
    calls = {"n": 0}
    real = io_module.atomic_write_json

    def dies_on_the_manifest(path: Path, obj: object) -> None:
        calls["n"] += 1
        if Path(path).name == "index.json":
            raise KeyboardInterrupt  # the run is stopped just before the manifest
        real(path, obj)

    monkeypatch.setattr("elmd_sdk.retrievers.index.atomic_write_json", dies_on_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        build_index(encoder, tiny_corpus(n_dialogues=2), index)
    monkeypatch.undo()
    assert len(EmotionalRetriever.load(index, k=50, encoder=encoder).invoke("happy")) == 24  # the old, whole
    build_index(encoder, tiny_corpus(n_dialogues=2), index)
    assert len(EmotionalRetriever.load(index, k=50, encoder=encoder).invoke("happy")) == 8
    assert not (index / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_an_erm_saved_over_an_old_one_is_replaced_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    erm = ERMEncoder.create(ERMConfig(freeze_encoder=True))
    erm.save(tmp_path / "erm", with_encoder=False)
    before = ERMEncoder.load(tmp_path / "erm").fingerprint()

    def fails(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("elmd_sdk.retrievers.encoder.save_tensors", fails)
    with pytest.raises(OSError, match="No space left"):
        erm.save(tmp_path / "erm", with_encoder=False)
    monkeypatch.undo()
    assert ERMEncoder.load(tmp_path / "erm").fingerprint() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["erm"]


def test_a_replaced_folder_is_flushed_by_an_fsync_of_its_parent_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    with atomic_folder(target) as folder:
        (folder / "a.txt").write_text("old", encoding="utf-8")
    synced = record_fsyncs(monkeypatch, lambda: sorted(p.name for p in target.iterdir()))

    def folders() -> list[tuple[int, list[str]]]:  # per fsync of a folder: its inode, what the target holds then
        return [(inode, held) for kind, inode, _, held in synced if kind == "folder"]

    with atomic_folder(target) as folder:
        (folder / "b.txt").write_text("new", encoding="utf-8")
        assert folders() == []
    assert folders() == [(tmp_path.stat().st_ino, ["b.txt"])]  # once, with the new folder in place
    synced.clear()
    io_module.replace_folder(_filled(tmp_path / "other", "c.txt"), target)
    assert folders() == [(tmp_path.stat().st_ino, ["c.txt"])]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old folder is deleted after


def test_a_folder_left_aside_is_dropped_when_the_target_is_there(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_folder(target) as folder:
        (folder / "new.txt").write_text("new", encoding="utf-8")
    _filled(tmp_path / ".out.0123.old", "older.txt")  # a kill after the new folder was in place, before the delete
    with atomic_folder(target) as folder:
        assert [p.name for p in target.iterdir()] == ["new.txt"]  # the complete folder is not replaced by the old
        (folder / "newer.txt").write_text("newer", encoding="utf-8")
    assert [p.name for p in target.iterdir()] == ["newer.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _filled(folder: Path, name: str) -> Path:
    folder.mkdir()
    (folder / name).write_text(name, encoding="utf-8")
    return folder
