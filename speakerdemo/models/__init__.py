"""Speaker encoders, chosen by name: features (B, T, n_mels) + mask (B, T) -> EncoderOutput."""

from __future__ import annotations

from torch import nn

from .conformer import ConformerEncoder
from .ecapa_tdnn import EcapaTdnn
from .ensemble import EnsembleEncoder
from .output import EncoderOutput
from .resnet import Res2Net50, ResNet34
from .transformer import TransformerEncoder

ENCODERS: dict[str, type[nn.Module]] = {
    "transformer": TransformerEncoder,
    "conformer": ConformerEncoder,
    "ecapa_tdnn": EcapaTdnn,
    "ensemble": EnsembleEncoder,
    "resnet34": ResNet34,
    "res2net50": Res2Net50,
}

# Named sizes, so a config can say {"name": "ecapa_tdnn", "preset": "512"}.
PRESETS: dict[str, dict[str, dict]] = {
    "ecapa_tdnn": {"512": {"channels": 512}, "1024": {"channels": 1024}},
    # WeSpeaker's width, and half of it for training on a CPU (about a quarter of the multiply-adds).
    "resnet34": {"32": {"width": 32}, "16": {"width": 16}},
    "res2net50": {"32": {"width": 32}, "16": {"width": 16}},
}


def build_encoder(name: str, preset: str | None = None, **config) -> nn.Module:
    """Build an encoder by registry name; ``preset`` fills defaults that ``config`` may override."""
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}; choose one of {sorted(ENCODERS)}.")
    if preset is not None:
        presets = PRESETS.get(name, {})
        if preset not in presets:
            raise ValueError(f"Unknown preset {preset!r} for {name}; choose one of {sorted(presets)}.")
        config = {**presets[preset], **config}
    return ENCODERS[name](**config)


__all__ = ["ENCODERS", "EncoderOutput", "build_encoder"]
