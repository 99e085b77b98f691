"""Several encoders trained apart, run side by side as one: their unit embeddings, concatenated.

Two encoders trained on the same 326 speakers with different signals (labels only; labels with a
teacher, speed-made speakers and a phone line) err on different pairs, so averaging their cosine
scores beats either of them (see the default checkpoint's card). The concatenation of the members'
unit vectors, scaled by 1/sqrt(n), is itself a unit vector whose cosine with another is exactly the
mean of the members' cosines: the rest of the library (scoring, galleries, ONNX export, int8) sees
one encoder with one embedding and needs no notion of fusion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .output import EncoderOutput


class EnsembleEncoder(nn.Module):
    """``members``: each member's encoder config (as a checkpoint's ``encoder``), built with the
    shared front end's ``n_mels``. Attention weights are the members' mean (still a distribution
    over the real frames)."""

    def __init__(self, members: list[dict], n_mels: int = 80) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("An ensemble needs at least two member encoders.")
        from . import build_encoder  # the registry imports this module

        if any(m.get("name") == "ensemble" for m in members):
            raise ValueError("An ensemble's members must be plain encoders, not ensembles.")
        self.members = nn.ModuleList(build_encoder(n_mels=n_mels, **m) for m in members)
        self.embed_dim = sum(m.embed_dim for m in self.members)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        outs = [member(feats, mask) for member in self.members]
        scale = 1.0 / math.sqrt(len(outs))
        embedding = torch.cat([F.normalize(o.embedding, dim=1) * scale for o in outs], dim=1)
        weights = torch.stack([o.weights for o in outs]).mean(dim=0)
        return EncoderOutput(embedding, weights)
