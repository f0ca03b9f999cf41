"""Checkpoints: optimizer and RNG state survive a save/load round trip, so resumed training matches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.trainers.checkpoint import (
    check_resumable,
    check_start,
    checkpoint_dir,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)


def _train_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
    for _ in range(n):
        x = torch.randn(4, 3)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_resume_matches_uninterrupted(tmp_path) -> None:
    torch.manual_seed(1)
    ref = torch.nn.Linear(3, 2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.1)
    _train_steps(ref, ref_opt, 6)

    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    _train_steps(model, opt, 3)
    save_checkpoint(tmp_path, model.state_dict(), opt, {"step": 3})

    resumed = torch.nn.Linear(3, 2)
    resumed_opt = torch.optim.AdamW(resumed.parameters(), lr=0.1)
    torch.manual_seed(999)  # a different process would start with another RNG state
    loaded = load_checkpoint(tmp_path, resumed_opt)
    assert loaded is not None
    weights, meta = loaded
    resumed.load_state_dict(weights)
    assert meta == {"step": 3}
    _train_steps(resumed, resumed_opt, 3)
    for a, b in zip(ref.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_missing_checkpoint_is_none(tmp_path) -> None:
    assert load_checkpoint(tmp_path) is None


def test_tampered_checkpoint_is_refused(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    ckpt = save_checkpoint(tmp_path, model.state_dict(), None, {})
    info = json.loads((ckpt / "state.json").read_text())
    info["tensors_sha256"] = "0" * 64
    (ckpt / "state.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match=r"do not match state\.json"):
        load_checkpoint(tmp_path)


def test_kill_before_json_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    """A run killed after writing the new tensor file but before state.json still resumes (previous step)."""
    from elmd_sdk.trainers import checkpoint as ckpt_mod

    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, model.state_dict(), None, {"step": 1})
    with torch.no_grad():
        model.weight.add_(1.0)

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model.state_dict(), None, {"step": 2})
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    weights, meta = loaded
    assert meta == {"step": 1}
    torch.testing.assert_close(weights["weight"] + 1.0, model.weight.detach())


def test_atomic_files_follow_the_umask(tmp_path) -> None:
    """Atomic writes go through mkstemp (mode 0600); the final file must get the usual umask-based mode."""
    import os

    from elmd_sdk.io import atomic_write_text, save_tensors

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        save_tensors(tmp_path / "w.safetensors", {"x": torch.zeros(1)})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644


def test_leftovers_of_an_interrupted_save_are_removed_at_the_next_start(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path, {"w": torch.ones(2)}, None, {"step": 1})
    kept = sorted(p.name for p in ckpt.iterdir())
    (ckpt / ".state.safetensors.new").write_bytes(b"half a tensor file")  # killed while staging
    (ckpt / "state-0123456789abcdef.safetensors").write_bytes(b"orphan")  # killed before state.json named it
    (ckpt / ".state.json.x.tmp").write_text("{", encoding="utf-8")
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None and loaded[1] == {"step": 1}
    assert sorted(p.name for p in ckpt.iterdir()) == kept


def test_every_trainer_keeps_its_checkpoint_in_out_checkpoint(tmp_path: Path) -> None:
    assert (
        save_checkpoint(tmp_path, {"w": torch.ones(1)}, None, {}) == checkpoint_dir(tmp_path) == tmp_path / "checkpoint"
    )
    assert (tmp_path / "checkpoint" / "state.json").is_file()


def test_start_and_resume_rules(tmp_path: Path) -> None:
    check_start(tmp_path, resume=False)  # nothing there: a fresh start
    with pytest.raises(InputError, match=r"nothing to resume: no checkpoint in .*checkpoint; run without --resume"):
        check_start(tmp_path, resume=True)
    with pytest.raises(InputError, match="nothing to resume"):
        resume_checkpoint(tmp_path, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    save_checkpoint(tmp_path, {"w": torch.ones(1)}, None, {"step": 1})
    check_start(tmp_path, resume=True)
    with pytest.raises(InputError, match="holds the checkpoint of an unfinished run") as error:
        check_start(tmp_path, resume=False)
    assert error.value.file == str(tmp_path)


def test_resumable_settings_name_the_first_difference(tmp_path: Path) -> None:
    saved = {"lr": 0.1, "max_steps": 2, "seed": 0}
    check_resumable(saved, {"lr": 0.1, "max_steps": 9, "seed": 0}, {"max_steps"}, tmp_path)  # may change
    with pytest.raises(MismatchError, match=r"saved with lr=0\.1, resumed with 0\.2; resume with the same settings"):
        check_resumable(saved, {"lr": 0.2, "max_steps": 2, "seed": 1}, {"max_steps"}, tmp_path)
    with pytest.raises(MismatchError, match="saved with epochs=None, resumed with 3"):  # a setting the checkpoint lacks
        check_resumable(saved, {**saved, "epochs": 3}, set(), tmp_path)
