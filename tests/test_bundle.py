"""Bundles: manifest round trip, every validation error names its field, mismatched components are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chain_fakes import save_tiny_llm, tiny_bundle

from elmd_sdk.bundle import MANIFEST_FILE, BundleManifest, load_bundle, save_manifest, verify_components
from elmd_sdk.data import EMOTIONS
from elmd_sdk.errors import InputError, MismatchError


def _manifest(**fields: Any) -> BundleManifest:
    return BundleManifest(**{"name": "t", "base_llm_config_sha256": "a" * 64, "labels": list(EMOTIONS), **fields})


def _write_raw(bundle: Path, data: dict[str, Any]) -> None:
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")


def test_manifest_round_trip(tmp_path: Path) -> None:
    for name in ("erm", "index"):
        (tmp_path / name).mkdir()
    manifest = _manifest(
        erm_dir="erm",
        index_dir="index",
        training_data_sha256="f" * 64,
        generation={"max_new_tokens": 32, "do_sample": False, "temperature": 0.7},
    )
    save_manifest(tmp_path, manifest)
    loaded, paths = load_bundle(tmp_path)
    assert loaded == manifest
    assert (paths.erm, paths.index, paths.projector, paths.prefix) == (tmp_path / "erm", tmp_path / "index", None, None)
    assert paths.base_llm is None
    raw = json.loads((tmp_path / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert raw["format"] == "elmd-bundle" and raw["format_version"] == 1 and raw["language"] == "en"


def test_relative_base_llm_resolves_inside_the_bundle(tmp_path: Path) -> None:
    (tmp_path / "llm").mkdir()
    save_manifest(tmp_path, _manifest(base_llm="llm"))
    assert load_bundle(tmp_path)[1].base_llm == str(tmp_path / "llm")
    save_manifest(tmp_path, _manifest(base_llm="org/some-hub-model"))
    assert load_bundle(tmp_path)[1].base_llm == "org/some-hub-model"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"language": "fr"}, "language"),
        ({"labels": []}, "labels"),
        ({"labels": ["happy", "happy"]}, "labels"),
        ({"labels": ["happy", ""]}, "labels"),
        ({"erm_dir": "/abs/erm", "index_dir": "index"}, "erm_dir"),
        ({"erm_dir": "../erm", "index_dir": "index"}, "erm_dir"),
        ({"erm_dir": "erm"}, "index_dir"),
        ({"prefix_dir": "prefix"}, "pre_seq_len"),
        ({"prefix_dir": "prefix", "pre_seq_len": 0}, "pre_seq_len"),
        ({"pre_seq_len": 128}, "pre_seq_len"),
        ({"projector_dir": "projector"}, "visual_encoder_fingerprint"),
        ({"frames": 0}, "frames"),
        ({"frames": "eight"}, "frames"),
        ({"generation": {"beams": 3}}, "generation"),
        ({"generation": {"max_new_tokens": "many"}}, "generation"),
        ({"base_llm_config_sha256": ""}, "base_llm_config_sha256"),
        ({"format_version": 2}, "format_version"),
        ({"format": "something-else"}, "format"),
        ({"surprise_field": 1}, "surprise_field"),
        ({"emotion_log_prior": {"happy": -1.0}}, "emotion_log_prior"),  # not one value per label
        ({"emotion_log_prior": dict.fromkeys(EMOTIONS, 0.5)}, "emotion_log_prior"),  # not a log-probability
        ({"emotion_log_prior": dict.fromkeys(EMOTIONS, "low")}, "emotion_log_prior"),
    ],
)
def test_bad_manifest_names_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    _write_raw(tmp_path, {**_manifest().to_dict(), **change})
    with pytest.raises(InputError) as caught:
        load_bundle(tmp_path)
    assert caught.value.field == field
    assert caught.value.file == str(tmp_path / MANIFEST_FILE)


# The parts each path field needs beside it, so that only the path itself is wrong.
_COMPANIONS = {
    "erm_dir": {"index_dir": "part"},
    "index_dir": {},
    "projector_dir": {"visual_encoder_fingerprint": {"backend": "fer"}},
    "prefix_dir": {"pre_seq_len": 4},
}


@pytest.mark.parametrize("name", list(_COMPANIONS))
@pytest.mark.parametrize("path", ["../part", "part/../../part", "a/../..", "/abs/part", "C:part", "C:\\part", ""])
def test_a_path_that_leaves_the_bundle_is_refused_before_anything_is_written(
    tmp_path: Path, name: str, path: str
) -> None:
    (tmp_path / "part").mkdir()  # "part" itself would be a valid target
    manifest = _manifest(**{name: path, **_COMPANIONS[name]})
    with pytest.raises(InputError, match="must be a relative path inside the bundle") as caught:
        save_manifest(tmp_path / "bundle", manifest)
    assert caught.value.field == name
    assert not (tmp_path / "bundle").exists()
    save_manifest(tmp_path, _manifest(**{name: "part", **_COMPANIONS[name]}))  # the same field, inside: accepted
    assert getattr(load_bundle(tmp_path)[1], name.removesuffix("_dir")) == tmp_path / "part"


def test_missing_field_and_missing_part_are_named(tmp_path: Path) -> None:
    data = _manifest().to_dict()
    del data["labels"]
    _write_raw(tmp_path, data)
    with pytest.raises(InputError) as caught:
        load_bundle(tmp_path)
    assert caught.value.field == "labels"
    save_manifest(tmp_path, _manifest(index_dir="index"))
    with pytest.raises(InputError, match="index_dir") as caught:
        load_bundle(tmp_path)
    assert "missing" in str(caught.value)


def test_missing_folder_or_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="bundle folder not found"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(InputError, match="file not found"):
        load_bundle(tmp_path)


def test_verify_components_names_the_disagreeing_field() -> None:
    manifest = _manifest(
        visual_encoder_fingerprint={"backend": "fer", "o": 1, "q": 64},
        prefix_dir="prefix",
        pre_seq_len=128,
    )
    verify_components(
        manifest,
        llm_fingerprint={"config_sha256": "a" * 64},
        visual_encoder_fingerprint={"backend": "fer", "o": 1, "q": 64},
        pre_seq_len=128,
    )
    with pytest.raises(MismatchError, match="'base_llm_config_sha256'"):
        verify_components(manifest, llm_fingerprint={"config_sha256": "b" * 64, "name_or_path": "other"})
    with pytest.raises(MismatchError, match=r"'visual_encoder_fingerprint'.*q"):
        verify_components(manifest, visual_encoder_fingerprint={"backend": "fer", "o": 1, "q": 32})
    with pytest.raises(MismatchError, match=r"'pre_seq_len'.*128.*64"):
        verify_components(manifest, pre_seq_len=64)


@pytest.mark.parametrize(
    ("loaded", "differing"),
    [
        ({"backend": "fer", "o": 1, "q": 64, "weights_sha256": "f" * 64}, "weights_sha256"),  # a key the bundle lacks
        ({"backend": "fer", "o": 1}, "q"),  # a key the encoder lacks
        ({"backend": "fer", "o": 1, "q": 64.5}, "q"),
    ],
)
def test_visual_fingerprints_are_compared_on_the_keys_of_both(loaded: dict[str, Any], differing: str) -> None:
    manifest = _manifest(visual_encoder_fingerprint={"backend": "fer", "o": 1, "q": 64})
    with pytest.raises(MismatchError, match=rf"'visual_encoder_fingerprint'.*\(differs in {differing}\)"):
        verify_components(manifest, visual_encoder_fingerprint=loaded)


def test_from_bundle_loads_llm_and_prefix(tmp_path: Path) -> None:
    from elmd_sdk.chains import ELMDChain, ELMDResult
    from elmd_sdk.models.prefix import prefix_encoder_of

    chain = ELMDChain.from_bundle(tiny_bundle(tmp_path / "b"), max_new_tokens=4)
    assert chain.manifest is not None and chain.manifest.pre_seq_len == 4
    assert prefix_encoder_of(chain.chat_model.hf_model).config.pre_seq_len == 4  # type: ignore[attr-defined,union-attr]
    assert chain.chat_model.do_sample is False and chain.chat_model.max_new_tokens == 4  # type: ignore[attr-defined]
    assert chain.retriever is None and not chain.video_enabled
    assert isinstance(chain.invoke("hello"), ELMDResult)


def test_a_bundles_validation_prior_is_the_trained_chains_and_not_the_untuned_ones(tmp_path: Path) -> None:
    import dataclasses
    import math

    from elmd_sdk.chains import ELMDChain

    bundle = tiny_bundle(tmp_path / "b")
    manifest, _ = load_bundle(bundle)
    prior = {label: math.log((i + 1) / 28) for i, label in enumerate(EMOTIONS)}  # 1/28 + ... + 7/28 = 1
    save_manifest(bundle, dataclasses.replace(manifest, emotion_log_prior=prior))
    assert load_bundle(bundle)[0].label_log_prior() == tuple(prior[label] for label in EMOTIONS)
    trained = ELMDChain.from_bundle(bundle, max_new_tokens=2)
    assert trained.emotion_log_prior == tuple(prior[label] for label in EMOTIONS)
    assert trained._emotion_log_prior() == trained.emotion_log_prior  # used instead of the content-free prior
    assert ELMDChain.from_bundle(bundle, use_trained=False, max_new_tokens=2).emotion_log_prior is None


def test_bundle_for_another_base_model_is_refused(tmp_path: Path) -> None:
    from elmd_sdk.chains import ELMDChain

    bundle = tiny_bundle(tmp_path / "b")
    save_tiny_llm(bundle / "other", layers=3)  # same tokenizer, another architecture
    manifest, _ = load_bundle(bundle)
    manifest.base_llm = "other"
    save_manifest(bundle, manifest)
    with pytest.raises(MismatchError, match="'base_llm_config_sha256'"):
        ELMDChain.from_bundle(bundle)


def test_bundle_with_another_pre_seq_len_is_refused(tmp_path: Path) -> None:
    from elmd_sdk.chains import ELMDChain

    bundle = tiny_bundle(tmp_path / "b", pre_seq_len=4, recorded_pre_seq_len=8)
    with pytest.raises(MismatchError, match="'pre_seq_len'"):
        ELMDChain.from_bundle(bundle)


def test_unknown_generation_override_is_refused(tmp_path: Path) -> None:
    from elmd_sdk.chains import ELMDChain

    with pytest.raises(InputError) as caught:
        ELMDChain.from_bundle(tiny_bundle(tmp_path / "b"), beams=4)
    assert caught.value.field == "beams"
