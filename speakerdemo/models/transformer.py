"""The ML2022 HW4 sample model: linear prenet, a Transformer encoder and mean pooling (baseline)."""

from __future__ import annotations

import torch
from torch import nn

from .output import EncoderOutput
from .pooling import MeanPooling


class TransformerEncoder(nn.Module):
    """HW4 baseline. Defaults follow the homework's sample code (d_model 80, 2 heads, FFN 256)."""

    def __init__(
        self,
        n_mels: int = 40,
        d_model: int = 80,
        nhead: int = 2,
        dim_feedforward: int = 256,
        num_layers: int = 1,
        dropout: float = 0.1,
        embed_dim: int = 80,
    ) -> None:
        super().__init__()
        self.prenet = nn.Linear(n_mels, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.pooling = MeanPooling()
        self.projection = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, embed_dim))
        self.embed_dim = embed_dim

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        """feats (B, T, n_mels), mask (B, T) True on real frames."""
        hidden = self.encoder(self.prenet(feats), src_key_padding_mask=~mask)
        pooled = self.pooling(hidden.transpose(1, 2), mask)
        return EncoderOutput(self.projection(pooled.embedding), pooled.weights)
