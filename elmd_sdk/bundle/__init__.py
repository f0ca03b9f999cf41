"""Bundles: one folder holding everything an ELMD chain needs, described by a JSON manifest ``bundle.json``.

Layout (every path in the manifest is relative to the bundle folder and stays inside it)::

    bundle.json     the manifest (:class:`BundleManifest`)
    erm/            the Emotional Retrieval Module (elmd_sdk.retrievers.encoder format)
    index/          the FAISS index of demonstration pairs (elmd_sdk.retrievers.index format)
    projector/      trained video projector, Eq. 9 (safetensors + JSON), when REP/EERG trained one
    prefix/         trained p-tuning v2 prefix, section 3.5 (safetensors + JSON), when EERG trained one

:mod:`~elmd_sdk.bundle.manifest` defines the manifest, its checks and the folder names; :mod:`~elmd_sdk.bundle.write`
writes a trained stage's parts (trainers use it); :mod:`~elmd_sdk.bundle.load` loads and cross-checks them (the chain
uses it). Only JSON and safetensors are read: never pickle.
"""

from elmd_sdk.bundle.manifest import (
    ERM_DIR,
    INDEX_DIR,
    MANIFEST_FILE,
    PREFIX_DIR,
    PROJECTOR_DIR,
    BundleManifest,
    BundlePaths,
    data_sha256,
    load_bundle,
    save_manifest,
    verify_components,
)

__all__ = [
    "ERM_DIR",
    "INDEX_DIR",
    "MANIFEST_FILE",
    "PREFIX_DIR",
    "PROJECTOR_DIR",
    "BundleManifest",
    "BundlePaths",
    "data_sha256",
    "load_bundle",
    "save_manifest",
    "verify_components",
]
