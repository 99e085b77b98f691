"""ResNet34 and Res2Net50 over the log-mel "image" (He et al. 2016; Gao et al. 2019), as WeSpeaker
and 3D-Speaker train them for speaker verification.

2-D convolutions over (frequency, time); stages 2-4 halve both axes, so the attentive statistics
pooling sees one frame per 8 input frames, and its weights are spread back onto the input frames
for the app to draw. Padded frames are zeroed after every batch norm at the tensor's own time
rate (frame ``t`` of a halved axis comes from input frame ``2t``), so every convolution sees them
as its own zero padding and an utterance embeds the same alone or padded in a batch. A batch
without padding skips the masking, as in ECAPA-TDNN.
"""

from __future__ import annotations

import torch
from torch import nn

from .output import EncoderOutput
from .pooling import AttentiveStatsPooling

STAGE_STRIDES = (1, 2, 2, 2)
TIME_FACTOR = 8  # input frames per pooled frame: the product of the strides


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _strided(mask: torch.Tensor | None, stride: int) -> torch.Tensor | None:
    """The mask at the output rate of a convolution of ``stride`` (kernel 3 padding 1, or kernel 1)."""
    return mask if mask is None or stride == 1 else mask[..., ::stride]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions and a shortcut (ResNet18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = _conv_bn(cin, planes, 3, stride)
        self.conv2 = _conv_bn(planes, planes, 3)
        self.shortcut = None if stride == 1 and cin == planes else _conv_bn(cin, planes, 1, stride)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``mask`` at ``x``'s rate; the output is at the strided rate."""
        out_mask = _strided(mask, self.stride)
        h = _masked(torch.relu(self.conv1(x)), out_mask)
        h = _masked(self.conv2(h), out_mask)
        shortcut = x if self.shortcut is None else _masked(self.shortcut(x), out_mask)
        return torch.relu(h + shortcut)


class Res2Block(nn.Module):
    """Bottle2neck: 1 x 1 in, ``scale`` groups of 3 x 3 convolutions, each fed the previous group's
    output too (the first block of a stage convolves each group apart and average-pools the last,
    since the strides differ), 1 x 1 out.

    Expansion 2 rather than ImageNet's 4, as in 3D-Speaker's Res2Net: the pooling sees every
    frequency band of the last stage, so 4 would double the pooled width again for little gain.
    """

    expansion = 2

    def __init__(self, cin: int, planes: int, stride: int, scale: int = 4, base_width: int = 26) -> None:
        super().__init__()
        self.stride, self.width = stride, max(1, planes * base_width // 64)
        self.first = stride != 1 or cin != planes * self.expansion
        self.conv_in = _conv_bn(cin, self.width * scale, 1)
        self.convs = nn.ModuleList(_conv_bn(self.width, self.width, 3, stride) for _ in range(scale - 1))
        self.pool = nn.AvgPool2d(3, stride, 1) if self.first else None
        self.conv_out = _conv_bn(self.width * scale, planes * self.expansion, 1)
        self.shortcut = _conv_bn(cin, planes * self.expansion, 1, stride) if self.first else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``mask`` at ``x``'s rate; the output is at the strided rate."""
        out_mask = _strided(mask, self.stride)
        groups = torch.split(_masked(torch.relu(self.conv_in(x)), mask), self.width, dim=1)
        out: list[torch.Tensor] = []
        for conv, group in zip(self.convs, groups):
            out.append(_masked(torch.relu(conv(group if self.first or not out else group + out[-1])), out_mask))
        out.append(groups[-1] if self.pool is None else _masked(self.pool(groups[-1]), out_mask))
        h = _masked(self.conv_out(torch.cat(out, dim=1)), out_mask)
        shortcut = x if self.shortcut is None else _masked(self.shortcut(x), out_mask)
        return torch.relu(h + shortcut)


class ResNet(nn.Module):
    """A first 3 x 3 layer, four stages of ``block`` (widths ``width`` x 1, 2, 4, 8), attentive statistics pooling
    over the last stage's channels x frequency bands, and a projection to ``embed_dim``."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Res2Block],
        layers: tuple[int, ...],
        n_mels: int = 80,
        width: int = 32,
        embed_dim: int = 256,
        attention_bottleneck: int = 128,
    ) -> None:
        super().__init__()
        # Named as ECAPA-TDNN's first layer: the int8 export keeps it fp32 (onnx_runtime.KEPT_FP32).
        self.layer1 = _conv_bn(1, width, 3)
        cin, stages = width, []
        for i, (count, stride) in enumerate(zip(layers, STAGE_STRIDES)):
            planes = width * 2**i
            for j in range(count):
                stages.append(block(cin, planes, stride if j == 0 else 1))
                cin = planes * block.expansion
        self.blocks = nn.ModuleList(stages)
        bands = n_mels
        for stride in STAGE_STRIDES:
            bands = (bands + stride - 1) // stride
        channels = cin * bands
        self.pooling = AttentiveStatsPooling(channels, attention_bottleneck)
        self.head = nn.Sequential(
            nn.BatchNorm1d(2 * channels), nn.Linear(2 * channels, embed_dim), nn.BatchNorm1d(embed_dim)
        )
        self.embed_dim = embed_dim

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        m = None if bool(mask.all()) else mask[:, None, None, :].to(feats.dtype)
        x = _masked(feats.transpose(1, 2).unsqueeze(1), m)  # (B, 1, n_mels, T)
        x = _masked(torch.relu(self.layer1(x)), m)
        for block in self.blocks:
            x = block(x, m)
            m = _strided(m, block.stride)
        frames = mask[:, ::TIME_FACTOR]
        pooled = self.pooling(x.flatten(1, 2), frames)
        # Each pooled frame's weight goes to the input frames it stands for, then renormalised.
        spread = pooled.weights[:, torch.arange(feats.shape[1], device=feats.device) // TIME_FACTOR]
        spread = spread * mask.to(spread.dtype)
        return EncoderOutput(self.head(pooled.embedding), spread / spread.sum(dim=1, keepdim=True))


class ResNet34(ResNet):
    """ResNet34 with basic blocks (3, 4, 6, 3); width 32 as WeSpeaker's flagship."""

    def __init__(
        self, n_mels: int = 80, width: int = 32, embed_dim: int = 256, attention_bottleneck: int = 128
    ) -> None:
        super().__init__(BasicBlock, (3, 4, 6, 3), n_mels, width, embed_dim, attention_bottleneck)


class Res2Net50(ResNet):
    """Res2Net50 with bottle2neck blocks (3, 4, 6, 3), scale 4."""

    def __init__(
        self, n_mels: int = 80, width: int = 32, embed_dim: int = 256, attention_bottleneck: int = 128
    ) -> None:
        super().__init__(Res2Block, (3, 4, 6, 3), n_mels, width, embed_dim, attention_bottleneck)
