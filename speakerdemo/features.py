"""Log-mel front end: waveform -> (frames, n_mels) features, with a padding mask.

The front end knows no model. Its configuration is saved with every checkpoint, so a model is
always fed the features it was trained on. The ``hw4`` preset reproduces the ML2022 HW4
``wav2mel`` features (whose sox effects no longer exist in torchaudio), so that a model trained on
the HW4 feature files works on raw audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import torch
import torchaudio
from torch import nn

from .audio import SAMPLE_RATE

Normalize = Literal["none", "mean", "meanvar"]


@dataclass(frozen=True)
class FrontEndConfig:
    """Everything that decides the features; stored in ``config.json`` under ``frontend``."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 20.0
    f_max: float | None = 7600.0
    log_offset: float = 1e-6
    normalize: Normalize = "mean"
    peak_db: float | None = None
    trim_silence: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, FrontEndConfig] = {
    "default": FrontEndConfig(),
    # ML2022 HW4 wav2mel: sox "norm -3" and "silence 1 0.1 1% -1 0.1 1%", then 40 mels, n_fft 400,
    # hop 160, f_min 50, log(x + 1e-9), no normalisation.
    "hw4": FrontEndConfig(
        n_fft=400,
        win_length=400,
        n_mels=40,
        f_min=50.0,
        f_max=None,
        log_offset=1e-9,
        normalize="none",
        peak_db=-3.0,
        trim_silence=True,
    ),
}


def frontend_config(preset: str = "default", **overrides) -> FrontEndConfig:
    """A preset with overrides; unknown presets name the ones that exist."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown front-end preset {preset!r}; choose one of {sorted(PRESETS)}.")
    return replace(PRESETS[preset], **overrides)


def peak_normalize(wav: np.ndarray, peak_db: float) -> np.ndarray:
    """Scale so the absolute peak sits at ``peak_db`` dBFS (sox ``norm``)."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak == 0.0:
        return wav
    return (wav * (10.0 ** (peak_db / 20.0) / peak)).astype(np.float32)


def trim_silence(wav: np.ndarray, sample_rate: int, min_silence: float = 0.1, threshold: float = 0.01) -> np.ndarray:
    """Indices of the samples kept by sox ``silence 1 0.1 1% -1 0.1 1%``.

    Sox measures loudness as the RMS over a 20 ms window and drops the leading silence and every
    quiet run of at least ``min_silence`` seconds, in the middle and at the end. Returning indices
    rather than samples lets callers map feature frames back to the original time axis.
    """
    window = max(1, sample_rate // 50)
    power = np.convolve(wav.astype(np.float64) ** 2, np.ones(window) / window, mode="same")
    loud = np.sqrt(power) > threshold
    keep = loud.copy()
    min_run = int(round(min_silence * sample_rate))
    edges = np.flatnonzero(np.diff(np.concatenate(([1], loud.astype(np.int8), [1]))))
    for start, end in zip(edges[::2], edges[1::2]):
        if end - start < min_run and start > 0:
            keep[start:end] = True
    return np.flatnonzero(keep)


def pad_frames(frames: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_i, F) feature sequences -> zero-padded (B, T_max, F) batch and its (B, T_max) frame mask.

    The one way batches of unequal length are made: the mask is what keeps padding out of the
    pooling, so an utterance pools to the same embedding alone or in a batch.
    """
    longest = max(f.shape[0] for f in frames)
    first = frames[0]
    padded = first.new_zeros(len(frames), longest, first.shape[1])
    mask = torch.zeros(len(frames), longest, dtype=torch.bool, device=first.device)
    for row, f in enumerate(frames):
        padded[row, : f.shape[0]] = f
        mask[row, : f.shape[0]] = True
    return padded, mask


class FrontEnd(nn.Module):
    """Waveforms (B, N) of equal length -> log-mel features (B, T, n_mels) and a frame mask (B, T).

    Frame ``i`` is centred on sample ``i * hop_length``; an utterance of ``n`` samples has
    ``1 + n // hop_length`` frames. Utterances of different lengths are transformed one by one
    (:meth:`log_mel`, :meth:`normalize`) and batched with :func:`pad_frames`, so an utterance's
    features do not depend on what it is batched with.
    """

    def __init__(self, config: FrontEndConfig | None = None) -> None:
        super().__init__()
        self.config = config or FrontEndConfig()
        c = self.config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=c.sample_rate,
            n_fft=c.n_fft,
            win_length=c.win_length,
            hop_length=c.hop_length,
            f_min=c.f_min,
            f_max=c.f_max,
            n_mels=c.n_mels,
        )
        # The window and filterbank follow from the config: keep them out of checkpoints.
        for module in self.mel.modules():
            for name, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buffer, persistent=False)

    def prepare(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Waveform-level steps of the preset (peak normalisation, silence trimming).

        Returns the processed waveform and, when samples were dropped, the original index of each
        kept sample (``None`` otherwise).
        """
        c = self.config
        if c.peak_db is not None:
            wav = peak_normalize(wav, c.peak_db)
        if not c.trim_silence:
            return wav, None
        kept = trim_silence(wav, c.sample_rate)
        if kept.size < c.win_length:
            return wav, None
        return np.ascontiguousarray(wav[kept]), kept

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised log-mel features of a batch of equal-length crops; every frame is real."""
        feats = self.normalize(self.log_mel(wav))
        return feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=wav.device)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveforms -> (B, T, n_mels) log-mel energies, before normalisation (fp32 always)."""
        with torch.autocast(wav.device.type, enabled=False):
            spec = self.mel(wav.float())
        return torch.log(spec + self.config.log_offset).transpose(1, 2)

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        """Per-utterance normalisation over all frames given (B, T, F).

        Callers that drop silence first normalise over speech alone, so that long pauses do not
        shift the statistics of the frames the model pools.
        """
        if self.config.normalize != "none":
            feats = feats - feats.mean(dim=1, keepdim=True)
        if self.config.normalize == "meanvar":
            feats = feats / feats.std(dim=1, keepdim=True).clamp_min(1e-5)
        return feats
