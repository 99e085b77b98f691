"""Classification heads for training speaker embeddings: softmax, AM-Softmax, AAM-Softmax.

Each head returns the loss and the logits *without* the margin: accuracy and predictions come
from those, one per utterance, so the margin (a training device) never leaks into the reported
accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HeadOutput:
    loss: torch.Tensor
    logits: torch.Tensor


class SoftmaxHead(nn.Module):
    """A linear classifier with cross-entropy (the HW4 sample model's last layer)."""

    def __init__(self, embed_dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(embed_dim, n_classes)

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        logits = self.logits(embedding)
        return HeadOutput(F.cross_entropy(logits, labels), logits)


class CosineHead(nn.Module):
    """Shared part of the margin heads: scaled cosine between embedding and class centres.

    ``margin`` is a plain attribute so a training loop can warm it up step by step.
    """

    def __init__(self, embed_dim: int, n_classes: int, scale: float = 30.0, margin: float = 0.2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embed_dim))
        nn.init.xavier_normal_(self.weight)
        self.scale = scale
        self.margin = margin

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embedding.float()), F.normalize(self.weight.float()))

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(embedding)

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        cosine = self.cosine(embedding)
        target = F.one_hot(labels, cosine.shape[1]).bool()
        with_margin = torch.where(target, self.target_logit(cosine), cosine)
        loss = F.cross_entropy(self.scale * with_margin, labels)
        return HeadOutput(loss, self.scale * cosine.detach())


class AMSoftmaxHead(CosineHead):
    """Additive margin softmax (Wang et al. 2018): target logit s * (cos θ - m)."""

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine - self.margin


class AAMSoftmaxHead(CosineHead):
    """Additive angular margin softmax (ArcFace, Deng et al. 2019): target logit s * cos(θ + m).

    cos(θ + m) stops decreasing once θ + m > π; past that point the standard form falls back to
    cos θ - m sin(m) m, and ``easy_margin`` applies the margin only where cos θ > 0.
    """

    def __init__(
        self,
        embed_dim: int,
        n_classes: int,
        scale: float = 30.0,
        margin: float = 0.2,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(embed_dim, n_classes, scale, margin)
        self.easy_margin = easy_margin

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        m = self.margin
        sine = (1.0 - cosine.pow(2)).clamp(0.0, 1.0).sqrt()
        phi = cosine * math.cos(m) - sine * math.sin(m)
        if self.easy_margin:
            return torch.where(cosine > 0, phi, cosine)
        return torch.where(cosine > math.cos(math.pi - m), phi, cosine - math.sin(math.pi - m) * m)


HEADS: dict[str, type[nn.Module]] = {
    "softmax": SoftmaxHead,
    "am_softmax": AMSoftmaxHead,
    "aam_softmax": AAMSoftmaxHead,
}


def build_head(name: str, embed_dim: int, n_classes: int, **config) -> nn.Module:
    """Build a head by name; ``config`` holds scale/margin/easy_margin where they apply."""
    if name not in HEADS:
        raise ValueError(f"Unknown head {name!r}; choose one of {sorted(HEADS)}.")
    return HEADS[name](embed_dim, n_classes, **config)
