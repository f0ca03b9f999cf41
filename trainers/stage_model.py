"""The differentiable part shared by REP and EERG: spliced inputs -> per-example negative log-likelihood.

Each example's prompt pieces, its E_v = projector(V_c) (Eq. 9) and its answer tokens are laid out by the same
``splice_video_embeds`` inference uses, rows are left-padded into one batch, and the LLM (frozen; in EERG with its
p-tuning prefix attached) scores the answer tokens. Only the last ``max answer + 1`` positions are projected to the
vocabulary, which keeps memory flat for long prompts and large vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from elmd_sdk.errors import MismatchError
from elmd_sdk.models.splice import splice_video_embeds
from elmd_sdk.trainers.losses.answer_nll import answer_labels, answer_nll
from elmd_sdk.video import VideoProjector
from elmd_sdk.video.tokens import project


class StageModel(nn.Module):
    """LLM (frozen base, optional prefix attached inside it) plus the video projector; forward gives NLL per row.

    ``forward(pieces, videos, targets)`` takes, per row, the prompt's token pieces around ``<video>``, the pooled
    features V_c ``(m + o, q)`` of its clip (or None) and the answer token ids, and returns the summed negative
    log-likelihood of the answer tokens, shape ``(B,)``: the per-sample term of Eq. 10 (REP) or Eq. 11 (EERG).
    """

    def __init__(self, llm: Any, projector: VideoProjector | None) -> None:
        super().__init__()
        self.llm = llm
        self.projector = projector

    def video_tokens(self, pooled: torch.Tensor) -> torch.Tensor:
        """E_v (Eq. 9) of one clip: ``(m + o, q)`` -> ``(m + o, hidden)``."""
        if self.projector is None:
            raise RuntimeError("this stage has no video projector, so it cannot take a clip")
        return project(self.projector, pooled)

    def forward(
        self,
        pieces: Sequence[Sequence[Sequence[int]]],
        videos: Sequence[torch.Tensor | None],
        targets: Sequence[Sequence[int]],
    ) -> torch.Tensor:
        embed_tokens = self.llm.get_input_embeddings()
        rows: list[torch.Tensor] = []
        for row_pieces, pooled, target in zip(pieces, videos, targets, strict=True):
            text = [list(p) for p in row_pieces]
            text[-1] = text[-1] + list(target)  # the answer follows the generation prompt, as generate() continues it
            e_v = [] if pooled is None else [self.video_tokens(pooled)]
            rows.append(splice_video_embeds(embed_tokens, text, e_v).inputs_embeds[0])  # (T_i, hidden)
        length = max(row.shape[0] for row in rows)
        inputs = torch.stack([F.pad(row, (0, 0, length - row.shape[0], 0)) for row in rows])  # (B, T, hidden)
        labels = answer_labels(targets, inputs.device)  # (B, W): the answers end at the last position
        mask = torch.zeros(inputs.shape[:2], dtype=torch.long, device=inputs.device)  # (B, T)
        for i, row in enumerate(rows):
            mask[i, length - row.shape[0] :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): left padding, real tokens count from 0
        logits = self.llm(
            inputs_embeds=inputs,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=labels.shape[1] + 1,
            use_cache=False,
        ).logits  # (B, W + 1, vocab)
        return answer_nll(logits, labels)  # (B,)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The parameters being trained (projector and/or prefix), by name: what a checkpoint must hold."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Inverse of :meth:`trainable_state`; every trainable tensor must be present with its shape."""
        params = dict(self.named_parameters())
        expected = {name for name, p in params.items() if p.requires_grad}
        if set(tensors) != expected:
            raise MismatchError(f"{source}: checkpoint holds {sorted(tensors)}, the model trains {sorted(expected)}")
        with torch.no_grad():
            for name, tensor in tensors.items():
                params[name].copy_(tensor.to(params[name].device))
