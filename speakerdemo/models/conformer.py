"""Conformer blocks (Gulati et al. 2020) with self-attentive pooling: the HW4 strong solution.

Written here rather than taken from ``torchaudio.models.Conformer`` because that module's
convolution sees the values at padded positions, so an utterance's embedding would change with
the batch it is padded into. Here padded frames are zeroed before every convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from .output import EncoderOutput
from .pooling import SelfAttentivePooling


def feed_forward(dim: int, mult: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult),
        nn.SiLU(),
        nn.Dropout(dropout),
        nn.Linear(dim * mult, dim),
        nn.Dropout(dropout),
    )


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv over time, batch norm, SiLU, pointwise conv."""

    def __init__(self, dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.tail = nn.Sequential(nn.BatchNorm1d(dim), nn.SiLU(), nn.Conv1d(dim, dim, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = nn.functional.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)
        h = self.depthwise(h * mask.unsqueeze(1))
        return self.tail(h).transpose(1, 2)


class ConformerBlock(nn.Module):
    """Half-step FFN, self-attention, convolution, half-step FFN, layer norm (macaron style)."""

    def __init__(self, dim: int, heads: int, ffn_mult: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.ff1 = feed_forward(dim, ffn_mult, dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(dim, kernel_size, dropout)
        self.ff2 = feed_forward(dim, ffn_mult, dropout)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)
        x = x + self.attn_dropout(h)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x) * mask.unsqueeze(-1)


class ConformerEncoder(nn.Module):
    """Linear prenet, Conformer blocks at full frame rate, self-attentive pooling, projection."""

    def __init__(
        self,
        n_mels: int = 80,
        dim: int = 144,
        heads: int = 4,
        num_layers: int = 4,
        kernel_size: int = 15,
        ffn_mult: int = 4,
        dropout: float = 0.1,
        embed_dim: int = 192,
    ) -> None:
        super().__init__()
        self.prenet = nn.Linear(n_mels, dim)
        self.blocks = nn.ModuleList(
            ConformerBlock(dim, heads, ffn_mult, kernel_size, dropout) for _ in range(num_layers)
        )
        self.pooling = SelfAttentivePooling(dim)
        self.projection = nn.Sequential(nn.Linear(dim, embed_dim), nn.BatchNorm1d(embed_dim))
        self.embed_dim = embed_dim

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        x = self.prenet(feats) * mask.unsqueeze(-1)
        for block in self.blocks:
            x = block(x, mask)
        pooled = self.pooling(x.transpose(1, 2), mask)
        return EncoderOutput(self.projection(pooled.embedding), pooled.weights)
