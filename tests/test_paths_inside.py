"""Paths read from bundle, ERM and index manifests stay inside their folder, symbolic links included."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from retriever_fakes import HashEncoder, tiny_corpus

from elmd_sdk.bundle import load_bundle
from elmd_sdk.chains.chain import default_bundle_path
from elmd_sdk.errors import InputError
from elmd_sdk.retrievers import build_index
from elmd_sdk.retrievers.encoder import ERMConfig, ERMEncoder
from elmd_sdk.retrievers.index import read_manifest, resolve_source
from elmd_sdk.retrievers.index_manifest import StoredSource


def test_a_bundle_part_linked_outside_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    outside = tmp_path / "elsewhere"
    shutil.move(bundle / "erm", outside)
    os.symlink(outside, bundle / "erm")
    with pytest.raises(InputError, match="leads out of") as error:
        load_bundle(bundle)
    assert error.value.field == "erm_dir" and error.value.file == str(bundle / "bundle.json")


def test_erm_files_listed_outside_the_folder_are_refused(tmp_path: Path) -> None:
    erm = tmp_path / "erm"
    ERMEncoder.create(ERMConfig(freeze_encoder=True)).save(erm, with_encoder=False)
    config = json.loads((erm / "erm_config.json").read_text(encoding="utf-8"))
    (tmp_path / "secret.txt").write_text("not the ERM's", encoding="utf-8")
    config["files"]["../secret.txt"] = "0" * 64
    (erm / "erm_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(InputError, match="leads out of") as error:
        ERMEncoder.load(erm)
    assert error.value.field == "files"


def test_an_index_encoder_source_stays_beside_the_index(tmp_path: Path) -> None:
    index = tmp_path / "project" / "index"
    build_index(HashEncoder(), tiny_corpus(), index)
    manifest = read_manifest(index)
    manifest.encoder_source = StoredSource("erm", "../erm", relative_to_index=True)
    assert resolve_source(manifest, index).path == str((tmp_path / "project" / "erm").resolve())
    manifest.encoder_source = StoredSource("erm", "../../outside_erm", relative_to_index=True)
    with pytest.raises(InputError, match="leads out of"):
        resolve_source(manifest, index)
    recorded = json.loads((index / "index.json").read_text(encoding="utf-8"))
    recorded["encoder_source"] = {"kind": "erm", "path": 7}
    (index / "index.json").write_text(json.dumps(recorded), encoding="utf-8")
    with pytest.raises(InputError, match="must be a string or null") as error:
        read_manifest(index)
    assert error.value.field == "encoder_source.path"
