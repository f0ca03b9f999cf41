"""Eq. 6-8 pooling values on hand-made tensors, Eq. 9 projector shapes and values, save/load and mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.video.pooling import spatio_temporal_pool
from elmd_sdk.video.projector import CONFIG_FILE, WEIGHTS_FILE, ProjectorConfig, VideoProjector

# m = 2 frames, o = 3 tokens, q = 2 features
X = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
        [[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]],
    ]
)
V_T = torch.tensor([[4.0, 5.0], [6.0, 7.0], [8.0, 9.0]])  # Eq. 6: mean over the 2 frames
V_S = torch.tensor([[3.0, 4.0], [9.0, 10.0]])  # Eq. 7: mean over the 3 tokens of each frame

ENCODER = {"backend": "test", "name": "enc", "o": 3, "q": 2, "weights_sha256": "a" * 64}
LLM = {"name": "llm", "hidden_size": 4, "weights_sha256": "b" * 64}


def test_pool_values_eq_6_to_8() -> None:
    v_c = spatio_temporal_pool(X)
    assert v_c.shape == (3 + 2, 2)  # (o + m, q)
    assert torch.equal(v_c, torch.cat([V_T, V_S]))


def test_pool_keeps_leading_batch_dimensions() -> None:
    batch = torch.stack([X, 2 * X, -X])  # (3, m, o, q)
    out = spatio_temporal_pool(batch)
    assert out.shape == (3, 5, 2)
    for i, scale in enumerate((1.0, 2.0, -1.0)):
        assert torch.allclose(out[i], scale * torch.cat([V_T, V_S]))


def test_pool_refuses_too_few_dimensions() -> None:
    with pytest.raises(InputError, match=r"\(\.\.\., m, o, q\)"):
        spatio_temporal_pool(torch.zeros(3, 2))


def make_projector(**overrides: object) -> VideoProjector:
    fields: dict[str, object] = {"q": 2, "hidden_size": 4, "encoder": ENCODER, "llm": LLM} | overrides
    return VideoProjector(ProjectorConfig(**fields))  # type: ignore[arg-type]


def test_projector_eq_9_shapes_and_values() -> None:
    projector = make_projector()
    with torch.no_grad():
        projector.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]))
        projector.linear.bias.copy_(torch.tensor([0.0, 0.0, 0.5, 1.0]))
    v_c = spatio_temporal_pool(X)
    e_v = projector(v_c)
    assert e_v.shape == (5, 4)  # (m + o, hidden_size)
    assert torch.allclose(e_v[0], torch.tensor([4.0, 5.0, 9.5, 4.0]))  # first temporal token [4, 5]
    assert projector(torch.zeros(7, 5, 2)).shape == (7, 5, 4)  # batched


def test_projector_gradient_through_the_pooled_features() -> None:
    projector = make_projector()
    with torch.no_grad():
        projector.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]))
        projector.linear.bias.copy_(torch.tensor([0.0, 0.0, 0.5, 1.0]))
    projector(spatio_temporal_pool(X)).pow(2).mean().backward()  # L = mean over the 5 x 4 entries of E_v ** 2
    # V_c rows (4, 5), (6, 7), (8, 9), (3, 4), (9, 10); E_v = [v0, v1, v0 + v1 + .5, 2 v0 - v1 + 1] row by row.
    # dL/dW[j, k] = 2/20 * sum_i E_v[i, j] V_c[i, k]; dL/db[j] = 2/20 * sum_i E_v[i, j]
    expected_w = torch.tensor([[20.6, 23.6], [23.6, 27.1], [45.7, 52.45], [20.6, 23.6]])
    torch.testing.assert_close(projector.linear.weight.grad, expected_w)
    torch.testing.assert_close(projector.linear.bias.grad, torch.tensor([3.0, 3.5, 6.75, 3.0]))


def test_save_load_round_trip(tmp_path: Path) -> None:
    projector = make_projector()
    projector.save(tmp_path / "proj")
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    meta = json.loads((tmp_path / "proj" / CONFIG_FILE).read_text())
    assert meta["q"] == 2 and meta["hidden_size"] == 4 and meta["encoder"] == ENCODER and meta["llm"] == LLM
    loaded = VideoProjector.load(tmp_path / "proj", encoder=dict(ENCODER), llm=dict(LLM))
    assert loaded.config == projector.config
    v_c = torch.randn(5, 2)
    assert torch.equal(loaded(v_c), projector(v_c))
    assert VideoProjector.load(tmp_path / "proj").config == projector.config  # no expectations: no checks


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"encoder": ENCODER | {"weights_sha256": "c" * 64}}, "encoder.weights_sha256"),
        ({"encoder": ENCODER | {"name": "other"}}, "encoder.name"),
        ({"encoder": ENCODER | {"extra": 1}}, "encoder.extra"),
        ({"llm": LLM | {"name": "other-llm"}}, "llm.name"),
        ({"llm": LLM | {"hidden_size": 8}}, "llm.hidden_size"),
    ],
)
def test_load_for_another_encoder_or_llm_is_a_mismatch(tmp_path: Path, kwargs: dict, field: str) -> None:
    make_projector().save(tmp_path)
    with pytest.raises(MismatchError, match=field):
        VideoProjector.load(tmp_path, **kwargs)


def test_q_and_hidden_size_are_checked_against_the_fingerprints(tmp_path: Path) -> None:
    make_projector(encoder={"name": "enc", "q": 5}, llm={"name": "llm", "hidden_size": 9}).save(tmp_path)
    with pytest.raises(MismatchError, match="q=2, expected q=5"):
        VideoProjector.load(tmp_path, encoder={"name": "enc", "q": 5})
    with pytest.raises(MismatchError, match="hidden_size=4, expected hidden_size=9"):
        VideoProjector.load(tmp_path, llm={"name": "llm", "hidden_size": 9})


def test_weights_from_another_save_are_detected(tmp_path: Path) -> None:
    make_projector().save(tmp_path / "a")
    make_projector().save(tmp_path / "b")
    (tmp_path / "a" / WEIGHTS_FILE).write_bytes((tmp_path / "b" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(InputError, match="weights_sha256"):
        VideoProjector.load(tmp_path / "a")


def test_missing_or_damaged_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        VideoProjector.load(tmp_path / "none")
    make_projector().save(tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta | {"hidden_size": "four"}))
    with pytest.raises(InputError, match="field 'hidden_size'"):
        VideoProjector.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"q": 2}))
    with pytest.raises(InputError, match="not an elmd-sdk video projector"):
        VideoProjector.load(tmp_path)
    make_projector().save(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(InputError, match="file not found"):
        VideoProjector.load(tmp_path)


def test_projector_matches_the_same_llm_loaded_from_another_path(tmp_path) -> None:
    llm = {"name_or_path": "/models/a", "config_sha256": "abc", "hidden_size": 4}
    make_projector(encoder={"name": "enc", "q": 5}, llm=llm).save(tmp_path)
    VideoProjector.load(tmp_path, llm={**llm, "name_or_path": "/elsewhere/a"})
    with pytest.raises(MismatchError, match="config_sha256"):
        VideoProjector.load(tmp_path, llm={**llm, "config_sha256": "def"})
