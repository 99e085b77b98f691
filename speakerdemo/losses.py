"""Classification heads for training speaker embeddings: softmax, AM-Softmax, AAM-Softmax.

Each head returns the loss and the logits *without* the margin: accuracy and predictions come
from those, one per utterance, so the margin (a training device) never leaks into the reported
accuracy. The margin heads also own their margin's warm-up: a training loop only tells a head the
step (``set_step``), so the schedule is configured, saved and rebuilt with the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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

    def set_step(self, step: int) -> None:
        """Nothing to schedule: plain softmax has no margin (every head takes the step, so a loop need not ask)."""

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        logits = self.logits(embedding)
        return HeadOutput(F.cross_entropy(logits, labels), logits)


class CosineHead(nn.Module):
    """Shared part of the margin heads: scaled cosine between embedding and class centres.

    The margin warms up: 0 until step ``margin_warmup_start``, then linear to ``margin`` over
    ``margin_warmup_steps`` steps (both 0, the default and what checkpoints without them rebuild:
    the full margin from the start). A large margin on a random network's embeddings only slows the
    first steps. The step is not part of the weights: a training loop sets it before every step
    (``set_step``), from the step count it resumes with; a head that was never told a step (a loaded
    checkpoint) applies the full margin.
    """

    def __init__(
        self,
        embed_dim: int,
        n_classes: int,
        scale: float = 30.0,
        margin: float = 0.2,
        *,
        margin_warmup_start: int = 0,
        margin_warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embed_dim))
        nn.init.xavier_normal_(self.weight)
        self.scale = scale
        self.margin = margin
        self.margin_warmup_start = margin_warmup_start
        self.margin_warmup_steps = margin_warmup_steps
        self.step: int | None = None

    def margin_at(self, step: int) -> float:
        """The margin of training step ``step`` (counted from 0)."""
        start, length = self.margin_warmup_start, self.margin_warmup_steps
        if length <= 0:
            return self.margin if step >= start else 0.0
        return self.margin * min(1.0, max(0.0, (step - start) / length))

    def set_step(self, step: int) -> None:
        """The training step the next forward passes belong to."""
        self.step = step

    @property
    def current_margin(self) -> float:
        """The margin ``forward`` applies now: the step's, or the full one outside training."""
        return self.margin if self.step is None else self.margin_at(self.step)

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
        return cosine - self.current_margin


class AAMSoftmaxHead(CosineHead):
    """Additive angular margin softmax (ArcFace, Deng et al. 2019): target logit s * cos(θ + m).

    cos(θ + m) stops decreasing once θ + m > π, i.e. once cos θ <= cos(π - m); there the target
    logit falls back to cos θ - m sin m (the code's ``sin(π - m) * m``, the same number), which keeps
    decreasing with θ. ``easy_margin`` instead applies the margin only where cos θ > 0 and leaves the
    other targets at cos θ.
    """

    def __init__(self, *args: Any, easy_margin: bool = False, **options: Any) -> None:
        """:class:`CosineHead`'s arguments and options, and ``easy_margin``."""
        super().__init__(*args, **options)
        self.easy_margin = easy_margin

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        m = self.current_margin
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
    """Build a head by name; ``config`` holds scale, margin, the margin warm-up and easy_margin where they apply."""
    if name not in HEADS:
        raise ValueError(f"Unknown head {name!r}; choose one of {sorted(HEADS)}.")
    return HEADS[name](embed_dim, n_classes, **config)
