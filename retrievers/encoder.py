"""The Emotional Retrieval Module's encoder (paper 3.3): e_u from a sentence-transformers model, then SSC.

Design choices the paper leaves open (see also :mod:`elmd_sdk.retrievers.ssc`):

* **Fine-tuned base encoder** (default, ``freeze_encoder=False``): Eq. 2 is written on e_u itself, so
  the paper trains the text encoder. With ``freeze_encoder=True`` only the SSC MLP learns, and ERT
  (Eq. 2) is then applied to the set vector of E_s (see :func:`~elmd_sdk.retrievers.ssc.set_vector`)
  instead of the unchanging e_u.
* **Comparing two sets E_s**: each h_i is L2-normalised, the s vectors are concatenated and scaled by
  1/sqrt(s); the inner product of two such vectors is the mean over positions of cos(h_i, h'_i), so an
  exact FAISS inner-product search retrieves the u' with the highest set similarity.
* **LoRA** (``lora_rank > 0``): the base encoder is fine-tuned through PEFT's LoRA adapters on its attention
  projections (PEFT's default targets for the model type) instead of all its weights; the ERM then keeps only the
  adapter (``lora.safetensors``, under a MB at rank 8 for MiniLM) and loads the base model by name.
* **What is embedded**: the utterance text u alone; its label for training is u's emotion.

An ERM directory written by :meth:`ERMEncoder.save` holds ``erm_config.json`` (config, dimensions and
the SHA-256 of every other file), ``encoder/`` (the base model as sentence-transformers saves it:
safetensors weights, JSON configs and the tokenizer's text files; left out for a frozen or LoRA-adapted base),
``lora.safetensors`` (with ``lora_rank``) and ``ssc.safetensors``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from elmd_sdk.errors import ElmdError, InputError, MismatchError
from elmd_sdk.io import (
    atomic_folder,
    atomic_write_json,
    check_json_fields,
    is_json_int,
    load_tensors,
    path_inside,
    read_json,
    save_tensors,
    sha256_file,
    weights_sha256,
)
from elmd_sdk.progress import make_progress
from elmd_sdk.retrievers.ssc import SelfSeparation, set_vector

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ERM_FORMAT = "elmd-erm"
ERM_VERSION = 1
CONFIG_FILE = "erm_config.json"
ENCODER_DIR = "encoder"
SSC_FILE = "ssc.safetensors"
LORA_FILE = "lora.safetensors"
_UNSAFE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")


@dataclass
class ERMConfig:
    """Model-side settings of the Emotional Retrieval Module, saved as JSON in the ERM directory."""

    base_model: str = "default"  # sentence-transformers name or local path; "default" = bundled all-MiniLM-L6-v2
    s: int = 4  # self-separation coefficient: number of vectors h_i in E_s (paper 4.3)
    use_ssc: bool = True  # False = Table 3 "w/o SSC": retrieve with e_u, train without Eq. 3
    use_ert: bool = True  # False = Table 3 "w/o ERT": train without Eq. 2 (training only)
    freeze_encoder: bool = False  # True keeps the base encoder fixed (the paper fine-tunes it: Eq. 2 acts on e_u)
    tau: float = 0.5  # temperature of the contrastive losses Eq. 2 and Eq. 3 (paper 4.3)
    lambda_: float = 1.0  # weight lambda of the emotion loss in the joint loss Eq. 4
    lora_rank: int = 0  # > 0: fine-tune the base encoder through LoRA adapters of this rank (PEFT), not all weights

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first field with an impossible value."""
        if not self.base_model:
            raise InputError("must not be empty", field="base_model")
        if self.s < 1:
            raise InputError(f"must be at least 1, got {self.s}", field="s")
        if not self.tau > 0:
            raise InputError(f"must be positive, got {self.tau}", field="tau")
        if self.lambda_ < 0:
            raise InputError(f"must not be negative, got {self.lambda_}", field="lambda_")
        if self.lora_rank < 0:
            raise InputError(f"must not be negative, got {self.lora_rank}", field="lora_rank")
        if self.lora_rank and self.freeze_encoder:
            raise InputError("a frozen base encoder has no LoRA adapter to train", field="lora_rank")

    @property
    def keeps_base(self) -> bool:
        """Whether the trained ERM's base encoder is the one named by ``base_model`` (frozen or LoRA-adapted), so an
        ERM folder may leave it out."""
        return self.freeze_encoder or self.lora_rank > 0

    @classmethod
    def from_dict(cls, data: Any, file: str | Path | None = None) -> ERMConfig:
        """Build from a JSON object, with an :class:`InputError` naming an unknown or mistyped field."""
        if not isinstance(data, dict):
            raise InputError("expected a JSON object", file=file, field="config")
        config = cls(**check_json_fields(cls, data, file))
        try:
            config.validate()
        except InputError as exc:
            raise InputError(exc.problem, file=file, field=exc.field) from None
        return config


def resolve_base_model(name_or_path: str) -> str:
    """Map ``"default"`` and all-MiniLM-L6-v2's names to the bundled copy; a hub name must be reachable (fast
    InputError otherwise); a local path is passed on unchanged."""
    from elmd_sdk.hub import EMBEDDED_ENCODER_NAMES, is_embedded, require_hub

    if is_embedded(name_or_path, EMBEDDED_ENCODER_NAMES):
        from elmd_sdk.paths import default_encoder_path

        return str(default_encoder_path())
    require_hub(name_or_path, "sentence encoder")
    return name_or_path


def load_sentence_transformer(
    name_or_path: str, device: str | None = None, allow_pickle_weights: bool = False
) -> SentenceTransformer:
    """Load a sentence-transformers model offline-safe, turning load failures into an :class:`InputError`; its
    weights are read from safetensors only unless ``allow_pickle_weights``."""
    from sentence_transformers import SentenceTransformer

    model_kwargs = None if allow_pickle_weights else {"use_safetensors": True}
    try:
        return SentenceTransformer(
            resolve_base_model(name_or_path), device=device, trust_remote_code=False, model_kwargs=model_kwargs
        )
    except (OSError, ValueError, KeyError) as exc:
        problem = f"cannot load sentence-transformers model '{name_or_path}' ({exc})"
        raise InputError(problem, field="base_model") from None


def add_lora(model: SentenceTransformer, rank: int) -> None:
    """Inject LoRA adapters of ``rank`` (alpha 2 * rank, dropout 0.1) into the base model's attention projections
    (PEFT's default targets for its type); only their weights train from then on."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1), _transformer(model))


def lora_state(model: SentenceTransformer) -> dict[str, torch.Tensor]:
    """The LoRA adapters' weights of a model :func:`add_lora` adapted (PEFT's adapter state dict)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(_transformer(model))


def _transformer(model: SentenceTransformer) -> torch.nn.Module:
    """The Hugging Face model inside a sentence-transformers model's first module (what LoRA adapts)."""
    module = model[0].auto_model
    if not isinstance(module, torch.nn.Module):
        raise ElmdError("the sentence-transformers model's first module holds no Hugging Face model to adapt")
    return module


def encode_in_chunks(
    encode: Callable[[list[str]], np.ndarray],
    texts: Sequence[str],
    dim: int,
    chunk: int,
    *,
    longest_first: bool = False,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` ``chunk`` at a time with ``encode`` (texts -> (c, dim)): (n, dim) float32 in input order.

    ``longest_first`` encodes the longest texts first, so each batch holds texts of similar length and little
    padding (sentence-transformers sorts only within one call, i.e. within one chunk); ``show_progress`` shows a bar.
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i])) if longest_first else range(len(texts))
    out = np.empty((len(texts), dim), dtype=np.float32)  # (n, dim)
    progress = make_progress() if show_progress else None
    with progress if progress is not None else contextlib.nullcontext():
        task = progress.add_task("encoding", total=len(texts), info=f"dim {dim}") if progress is not None else None
        for start in range(0, len(texts), chunk):
            rows = list(order[start : start + chunk])
            out[rows] = encode([texts[i] for i in rows])  # (c, dim)
            if progress is not None:
                progress.advance(task, len(rows))
    return out


def weights_digest(modules: Sequence[torch.nn.Module]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the modules' state dicts (file-format independent)."""
    return weights_sha256(modules, lambda i, name, t: f"{i}.{name}:{t.dtype}:{tuple(t.shape)}\n")


class ERMEncoder:
    """Text -> retrieval vector: e_u = base encoder(u) (Eq. 1), then E_s = SSC(e_u) (Algorithm 1) if enabled.

    ``encode`` returns L2-normalised float32 rows, so inner product is the retrieval similarity. The
    trainer uses :meth:`embed_tokens` and :meth:`represent` to get the same vectors with gradients.
    """

    def __init__(self, model: SentenceTransformer, config: ERMConfig, ssc: SelfSeparation | None = None) -> None:
        config.validate()
        self.model = model
        self.config = config
        base_dim = model.get_embedding_dimension()
        if base_dim is None:
            raise InputError("the sentence-transformers model does not report its embedding size", field="base_model")
        self.base_dim: int = base_dim
        if config.use_ssc and ssc is None:
            ssc = SelfSeparation(base_dim, config.s).to(model.device)
        if not config.use_ssc:
            ssc = None
        if ssc is not None and (ssc.dim, ssc.s) != (base_dim, config.s):
            raise MismatchError(f"SSC built for d={ssc.dim}, s={ssc.s}; the config needs d={base_dim}, s={config.s}")
        self.ssc = ssc
        self._digest: str | None = None

    @classmethod
    def create(cls, config: ERMConfig, device: str | None = None) -> ERMEncoder:
        """A fresh, untrained ERM: the base model from ``config.base_model`` and a newly initialised SSC."""
        config.validate()
        model = load_sentence_transformer(config.base_model, device)
        if config.lora_rank:
            add_lora(model, config.lora_rank)
        return cls(model, config)

    @classmethod
    def plain(cls, name_or_path: str | None = None, device: str | None = None) -> ERMEncoder:
        """The base sentence-transformers model without SSC: Table 3's "plain encoder" baseline."""
        config = ERMConfig(base_model=name_or_path or "default", use_ssc=False, use_ert=False)
        return cls(load_sentence_transformer(config.base_model, device), config)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> ERMEncoder:
        """Load an ERM directory written by :meth:`save`, checking every file against its recorded SHA-256."""
        path = Path(path)
        if not path.is_dir():
            raise InputError("not an ERM directory (missing)", file=path)
        info = read_json(path / CONFIG_FILE)
        cfg_file = path / CONFIG_FILE
        if not isinstance(info, dict) or info.get("format") != ERM_FORMAT:
            raise MismatchError(f"{cfg_file}: not an elmd-sdk ERM directory (format is not '{ERM_FORMAT}')")
        if not is_json_int(info.get("version")) or info.get("version") != ERM_VERSION:
            version = info.get("version")
            raise MismatchError(f"{cfg_file}: ERM format version {version!r}; this elmd-sdk reads {ERM_VERSION}")
        for key in ("config", "files", "base_dim"):
            if key not in info:
                raise InputError("missing", file=cfg_file, field=key)
        config = ERMConfig.from_dict(info["config"], file=cfg_file)
        if not (is_json_int(info["base_dim"]) and info["base_dim"] > 0):
            raise InputError(f"must be a positive integer, got {info['base_dim']!r}", file=cfg_file, field="base_dim")
        files = info["files"]
        if not isinstance(files, dict):
            raise InputError("expected an object of file -> sha256", file=cfg_file, field="files")
        for rel, digest in files.items():
            target = path_inside(path, rel, file=cfg_file, field="files")
            if not target.is_file():
                raise InputError("file listed in erm_config.json is missing", file=target)
            if sha256_file(target) != digest:
                raise InputError("file does not match erm_config.json (damaged or interrupted write?)", file=target)
        if (path / ENCODER_DIR).is_dir():
            encoder_dir = path_inside(path, ENCODER_DIR, file=cfg_file, field="files")
            model = load_sentence_transformer(str(encoder_dir), device)
        elif config.keeps_base:  # saved without its unchanged base encoder: load that by name
            model = load_sentence_transformer(config.base_model, device)
        else:
            problem = f"missing {ENCODER_DIR}/ (only an ERM with a frozen or LoRA-adapted base encoder may omit it)"
            raise InputError(problem, file=path)
        if config.lora_rank:
            _load_lora(model, config.lora_rank, path / LORA_FILE)
        ssc = None
        if config.use_ssc:
            ssc = SelfSeparation(info["base_dim"], config.s)
            tensors = load_tensors(path / SSC_FILE)
            try:
                ssc.load_state_dict(tensors)
            except RuntimeError as exc:
                raise MismatchError(f"{path / SSC_FILE}: weights do not fit the config ({exc})") from None
            ssc.to(model.device)
        encoder = cls(model, config, ssc)
        if encoder.base_dim != info["base_dim"]:
            raise MismatchError(f"{cfg_file}: base_dim {info['base_dim']} but the encoder gives {encoder.base_dim}")
        return encoder

    @property
    def dim(self) -> int:
        """Size of the vectors :meth:`encode` returns: s * d with SSC, d without."""
        return self.base_dim * self.config.s if self.ssc is not None else self.base_dim

    @property
    def device(self) -> torch.device:
        """The device the base model runs on."""
        return self.model.device

    def modules(self) -> list[torch.nn.Module]:
        """The torch modules holding this encoder's weights (base model, then SSC if enabled)."""
        return [self.model] if self.ssc is None else [self.model, self.ssc]

    def trained_base_state(self) -> dict[str, torch.Tensor]:
        """The base model's weights that training changes: none when frozen, the adapters' with LoRA, else all."""
        if self.config.freeze_encoder:
            return {}
        from peft.tuners.lora import LoraModel

        state = self.model.state_dict()
        return {k: v for k, v in state.items() if LoraModel.prefix in k} if self.config.lora_rank else state

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        """Model inputs for a batch of texts, on the encoder's device."""
        features = self.model.preprocess(list(texts))
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def embed_tokens(self, features: dict[str, Any]) -> torch.Tensor:
        """e_u (Eq. 1) for tokenized texts, with gradients: (n, d)."""
        return self.model(features)["sentence_embedding"]

    def separate(self, e_u: torch.Tensor) -> torch.Tensor:
        """E_s (Algorithm 1) for embeddings e_u: (n, d) -> (n, s, d); requires SSC."""
        if self.ssc is None:
            raise ElmdError("this ERM has no self-separated component (use_ssc=False)")
        return self.ssc(e_u)

    def represent(self, e_u: torch.Tensor) -> torch.Tensor:
        """Retrieval vectors from e_u, with gradients: (n, d) -> (n, dim), unit L2 norm."""
        if self.ssc is None:
            return torch.nn.functional.normalize(e_u, dim=-1)  # (n, d)
        return set_vector(self.ssc(e_u))  # (n, s*d)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Retrieval vectors for texts: (n, dim) float32, L2-normalised, so inner product = similarity."""
        for module in self.modules():
            module.eval()
        chunk = batch_size * 16
        return encode_in_chunks(
            lambda part: self._encode_chunk(part, batch_size), list(texts), self.dim, chunk, show_progress=show_progress
        )

    @torch.inference_mode()
    def embed_sentences(self, texts: Sequence[str]) -> np.ndarray:
        """The sentence encoder's own embeddings e_u (Eq. 1, before SSC), L2-normalised: (n, d) float32. Their cosine
        says how close two utterances are in topic, which retrieval vectors trained on emotion no longer tell."""
        self.model.eval()
        e_u = self.model.encode(list(texts), convert_to_tensor=True, show_progress_bar=False)  # (n, d)
        return torch.nn.functional.normalize(e_u.float(), dim=-1).cpu().numpy()

    def _encode_chunk(self, texts: list[str], batch_size: int) -> np.ndarray:
        e_u = self.model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        return self.represent(e_u.float()).cpu().numpy().astype(np.float32, copy=False)  # (n, dim)

    def fingerprint(self) -> dict[str, Any]:
        """JSON-ready identity (base model, config, dimension, weight digest) an index stores and compares."""
        if self._digest is None:
            self._digest = weights_digest(self.modules())
        config = asdict(self.config)
        if not self.config.lora_rank:  # as before LoRA existed, so the indexes built then still match
            del config["lora_rank"]
        return {
            "format": ERM_FORMAT,
            "base_model": self.config.base_model,
            "config": config,
            "dim": self.dim,
            "weights_sha256": self._digest,
        }

    def invalidate_fingerprint(self) -> None:
        """Forget the cached weight digest (the trainer calls this after changing weights)."""
        self._digest = None

    def save(self, path: str | Path, with_encoder: bool = True) -> None:
        """Write the ERM directory ``path`` through a new sibling folder that then replaces it as a whole, so a kill
        leaves the old complete ERM or the new one (:func:`elmd_sdk.io.atomic_folder`); see :meth:`write`."""
        with atomic_folder(path) as folder:
            self.write(folder, with_encoder)

    def write(self, path: str | Path, with_encoder: bool = True) -> None:
        """Write an ERM into the new, empty folder ``path``: encoder/ and ssc.safetensors, then erm_config.json with
        their SHA-256 (a damaged file is reported by :meth:`load`, never silently used).

        ``with_encoder=False`` (frozen base encoder only) leaves out encoder/: :meth:`load` then loads the base
        model by its name, which keeps such an ERM a few MB (the index's fingerprint check still applies). A
        LoRA-adapted ERM is always written so, with its adapters in ``lora.safetensors``.
        """
        path = Path(path)
        if self.config.lora_rank:
            save_tensors(path / LORA_FILE, lora_state(self.model))
        elif with_encoder:
            self._save_encoder(path)
        elif not self.config.freeze_encoder:
            raise ElmdError("only an ERM with a frozen or LoRA-adapted base encoder can be saved without encoder/")
        if self.ssc is not None:
            save_tensors(path / SSC_FILE, self.ssc.state_dict())
        files = {
            p.relative_to(path).as_posix(): sha256_file(p)
            for p in sorted((path / ENCODER_DIR).rglob("*"))
            if p.is_file()
        }
        for name in (SSC_FILE, LORA_FILE):
            if (path / name).is_file():
                files[name] = sha256_file(path / name)
        atomic_write_json(
            path / CONFIG_FILE,
            {
                "format": ERM_FORMAT,
                "version": ERM_VERSION,
                "config": asdict(self.config),
                "base_dim": self.base_dim,
                "dim": self.dim,
                "files": files,
                "weights_sha256": self.fingerprint()["weights_sha256"],
            },
        )

    def _save_encoder(self, path: Path) -> None:
        """Write the base model as ``path/encoder`` (safetensors, JSON, tokenizer files), never a pickle."""
        self.model.save(str(path / ENCODER_DIR), create_model_card=False, safe_serialization=True)
        unsafe = [p.name for p in (path / ENCODER_DIR).rglob("*") if p.suffix in _UNSAFE_SUFFIXES]
        if unsafe:
            raise ElmdError(f"the base model saved pickle-format files {unsafe}; refusing to keep them")


def _load_lora(model: SentenceTransformer, rank: int, file: Path) -> None:
    """Adapt ``model`` with LoRA adapters of ``rank`` and load their weights from ``file``."""
    from peft import set_peft_model_state_dict

    add_lora(model, rank)
    tensors = load_tensors(file)
    misfit = MismatchError(f"{file}: the adapter weights do not fit a rank-{rank} LoRA of the base model")
    try:
        result: Any = set_peft_model_state_dict(_transformer(model), tensors)  # torch's load_state_dict result
    except RuntimeError:  # a tensor of another shape
        raise misfit from None
    if result.unexpected_keys or set(tensors) != set(lora_state(model)):
        raise misfit
    model.to(model.device)
