"""ECAPA-TDNN (Desplanques et al., Interspeech 2020).

SE-Res2Blocks with growing dilation, multi-layer feature aggregation, and channel- and
context-dependent attentive statistics pooling. Every layer re-zeroes padded frames, and the
squeeze-excitation means are taken over real frames only, so the embedding does not depend on
padding. A batch without padding skips the masking (``mask`` None inside the network): the
same numbers, fewer passes over memory.
"""

from __future__ import annotations

import torch
from torch import nn

from .output import EncoderOutput
from .pooling import AttentiveStatsPooling, uniform_weights


class ConvBlock(nn.Module):
    """Conv1d -> ReLU -> BatchNorm, with padded frames zeroed afterwards."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = self.bn(torch.relu(self.conv(x)))
        return y if mask is None else y * mask


class Res2Conv(nn.Module):
    """Res2Net-style hierarchical convolution: ``scale`` groups, each fed the previous output."""

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int = 8) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be divisible by scale ({scale}).")
        self.scale = scale
        width = channels // scale
        self.convs = nn.ModuleList(ConvBlock(width, width, kernel, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)
        out = [chunks[0]]
        y = None
        for conv, chunk in zip(self.convs, chunks[1:]):
            y = conv(chunk if y is None else chunk + y, mask)
            out.append(y)
        return torch.cat(out, dim=1)


class SqueezeExcitation(nn.Module):
    """Channel gates from the utterance mean over real frames."""

    def __init__(self, channels: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels, bottleneck), nn.ReLU(), nn.Linear(bottleneck, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            mean = x.mean(dim=-1)
        else:
            mean = (x * uniform_weights(mask.squeeze(1), x.dtype).unsqueeze(1)).sum(dim=-1)
        return x * self.gate(mean).unsqueeze(-1)


class SERes2Block(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int, scale: int = 8) -> None:
        super().__init__()
        self.conv_in = ConvBlock(channels, channels)
        self.res2 = Res2Conv(channels, kernel, dilation, scale)
        self.conv_out = ConvBlock(channels, channels)
        self.se = SqueezeExcitation(channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.conv_out(self.res2(self.conv_in(x, mask), mask), mask)
        return x + self.se(h, mask)


class EcapaTdnn(nn.Module):
    """ECAPA-TDNN; ``channels`` 512 and 1024 are the paper's two sizes."""

    def __init__(
        self,
        n_mels: int = 80,
        channels: int = 512,
        embed_dim: int = 192,
        scale: int = 8,
        attention_bottleneck: int = 128,
    ) -> None:
        super().__init__()
        self.layer1 = ConvBlock(n_mels, channels, kernel=5)
        self.blocks = nn.ModuleList(SERes2Block(channels, 3, d, scale) for d in (2, 3, 4))
        self.aggregate = ConvBlock(3 * channels, 3 * channels)
        self.pooling = AttentiveStatsPooling(3 * channels, attention_bottleneck)
        self.head = nn.Sequential(
            nn.BatchNorm1d(6 * channels), nn.Linear(6 * channels, embed_dim), nn.BatchNorm1d(embed_dim)
        )
        self.embed_dim = embed_dim

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        m = None if bool(mask.all()) else mask.unsqueeze(1).to(feats.dtype)
        x = feats.transpose(1, 2)
        x = self.layer1(x if m is None else x * m, m)
        outs = []
        for block in self.blocks:
            x = block(x, m)
            outs.append(x)
        x = self.aggregate(torch.cat(outs, dim=1), m)
        pooled = self.pooling(x, mask)
        return EncoderOutput(self.head(pooled.embedding), pooled.weights)
