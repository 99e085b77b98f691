"""What every encoder returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderOutput:
    """An embedding per utterance and the pooling weights over its input frames.

    ``weights`` (B, T) sums to 1 over each utterance's real frames and is zero on padding;
    ``channel_weights`` (B, C, T) is the full matrix of attentive statistics pooling, else None.
    """

    embedding: torch.Tensor
    weights: torch.Tensor
    channel_weights: torch.Tensor | None = None
