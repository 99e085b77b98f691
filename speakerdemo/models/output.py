"""What every encoder and every pooling returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderOutput:
    """A vector per utterance and the weights over its input frames that produced it.

    From an encoder, ``embedding`` is the speaker embedding; from a pooling, the pooled vector the
    encoder projects into one. One type for both, because the weights pass through unchanged.
    ``weights`` (B, T) sums to 1 over each utterance's real frames and is zero on padding.
    """

    embedding: torch.Tensor
    weights: torch.Tensor
