"""transformers vision towers as frozen visual encoders: BLIP-2 (ViT + Q-Former, the paper's design), CLIP, SigLIP, ViT.

Loaded by local path or hub name with ``trust_remote_code=False`` unless the caller opts in; frames go through the
checkpoint's own image processor. X (Eq. 5) is the tower's last hidden state, or the Q-Former's query outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    Blip2Config,
    Blip2PreTrainedModel,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    Blip2VisionModel,
    CLIPVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionModel,
    ViTModel,
)

from elmd_sdk.errors import InputError
from elmd_sdk.hub import require_hub
from elmd_sdk.video.encoders_base import VisualEncoder, freeze, module_sha256
from elmd_sdk.video.frames import first_line


class Blip2VisualTower(Blip2PreTrainedModel):
    """BLIP-2's image side alone: ViT, then the Q-Former's learned queries cross-attending to it -> (b, queries, q).

    It reads the ``vision_model.*``, ``query_tokens`` and ``qformer.*`` weights of any BLIP-2 checkpoint and leaves
    the language model on disk.
    """

    main_input_name = "pixel_values"
    _keep_in_fp32_modules = ["query_tokens", "qformer"]  # noqa: RUF012 (as in transformers' BLIP-2 models)
    _keys_to_ignore_on_load_unexpected = [r"^language_model\.", r"^language_projection\."]  # noqa: RUF012

    def __init__(self, config: Blip2Config) -> None:
        super().__init__(config)
        self.vision_model = Blip2VisionModel._from_config(config.vision_config)
        qformer_config = cast(Blip2QFormerConfig, config.qformer_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, qformer_config.hidden_size))
        self.qformer = Blip2QFormerModel._from_config(qformer_config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (b, 3, S, S) -> (b, num_query_tokens, q)
        image_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state  # (b, patches + 1, vision)
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)  # (b, num_query_tokens, q)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask)
        return out.last_hidden_state


@dataclass(frozen=True)
class Tower:
    """How to load one family of vision models and what shape its tokens have."""

    model_class: type[PreTrainedModel]
    tokens: Callable[[PretrainedConfig], tuple[int, int]]  # loaded model's config -> (o, q)
    load_kwargs: tuple[tuple[str, Any], ...] = ()


def _patches(config: PretrainedConfig) -> int:
    return (config.image_size // config.patch_size) ** 2


TOWERS: dict[str, Tower] = {
    "blip-2": Tower(Blip2VisualTower, lambda c: (c.num_query_tokens, c.qformer_config.hidden_size)),
    "clip": Tower(CLIPVisionModel, lambda c: (_patches(c) + 1, c.hidden_size)),  # + CLS
    "siglip": Tower(SiglipVisionModel, lambda c: (_patches(c), c.hidden_size)),  # no CLS
    "vit": Tower(ViTModel, lambda c: (_patches(c) + 1, c.hidden_size), (("add_pooling_layer", False),)),
}
TOWERS["clip_vision_model"] = TOWERS["clip"]
TOWERS["siglip_vision_model"] = TOWERS["siglip"]


class TransformersVisionEncoder(VisualEncoder):
    """A transformers vision tower, frozen in eval mode; X is its last hidden state (Q-Former outputs for BLIP-2)."""

    backend = "transformers"

    def __init__(
        self,
        name_or_path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
        trust_remote_code: bool = False,
    ) -> None:
        source = str(name_or_path)
        self.name = Path(source).name if Path(source).is_dir() else source  # no machine paths in fingerprints
        self.device = torch.device(device)
        self.batch_size = batch_size
        require_hub(source, "visual encoder")
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read a model config ({first_line(exc)})", file=source) from None
        self.model_type = str(config.model_type)
        if self.model_type not in TOWERS:
            supported = ", ".join(sorted(TOWERS))
            raise InputError(
                f"model_type '{self.model_type}' is not a supported vision tower ({supported})", file=source
            )
        tower = TOWERS[self.model_type]
        try:
            loaded = tower.model_class.from_pretrained(
                source,
                dtype=dtype,
                output_loading_info=True,
                trust_remote_code=trust_remote_code,
                **dict(tower.load_kwargs),
            )
            self.processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: tensor shapes that do not fit the config
            raise InputError(f"cannot load the vision model ({first_line(exc)})", file=source) from None
        model, info = cast(tuple[PreTrainedModel, dict[str, Any]], loaded)
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise InputError(f"checkpoint lacks weights for {len(missing)} tensors, e.g. {missing[:3]}", file=source)
        self.model = freeze(cast(nn.Module, model)).to(self.device)  # nn.Module's .to: PreTrainedModel wraps it
        self.dtype = dtype
        self.o, self.q = tower.tokens(model.config)

    def _encode_batch(self, frames: np.ndarray) -> torch.Tensor:
        pixels = self.processor(images=list(frames), return_tensors="pt")["pixel_values"]  # (b, 3, S, S)
        out = self.model(pixel_values=pixels.to(self.device, self.dtype))
        return out if isinstance(out, torch.Tensor) else out.last_hidden_state  # (b, o, q)

    @cached_property
    def _weights_sha256(self) -> str:
        return module_sha256(self.model)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "name": self.name,
            "model_type": self.model_type,
            "o": self.o,
            "q": self.q,
            "weights_sha256": self._weights_sha256,
        }
