"""Knowledge distillation: a frozen teacher encoder and the losses that pull the student towards it.

Resemblyzer (Apache-2.0) ships in its wheel an encoder trained on thousands of speakers
(LibriSpeech, VoxCeleb 1 and 2), about ten times as many as the 326 labelled speakers here.
Distillation hands some of what those speakers taught it to our student: the teacher embeds the
same augmented crop the student sees, and two losses (``distillation_losses``), added to the
classification loss, pull the student towards it. The teacher and the projection the cosine loss
learns run in training only; no checkpoint contains them and the app never runs them.

Its weights are read with ``torch.load(weights_only=True)`` (tensors only) into an LSTM of the same
shape; its features, ``resemblyzer.audio.wav_to_mel_spectrogram`` (librosa's 40-band power mel,
25 ms windows every 10 ms, not logarithmic), are reproduced with torchaudio so that the teacher
runs batched on the training device.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from speakerdemo.audio import SAMPLE_RATE

N_MELS, HIDDEN, LAYERS = 40, 256, 3
PARTIAL_FRAMES = 160  # Resemblyzer embeds 1.6-s partial utterances and averages them
PARTIAL_STEP = 80
TARGET_DBFS = -30.0  # Resemblyzer's volume normalisation (raise only)


class TeacherError(RuntimeError):
    """The teacher's weights cannot be found or read."""


def resemblyzer_weights() -> Path:
    """``pretrained.pt`` inside the installed resemblyzer package (``pip install resemblyzer``)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise TeacherError(
            "distill.teacher: resemblyzer is not installed; `pip install resemblyzer` "
            "(its wheel carries the teacher's weights)"
        )
    return Path(spec.origin).parent / "pretrained.pt"


class ResemblyzerTeacher(nn.Module):
    """Waveforms (B, N) at 16 kHz -> L2-normalised 256-d Resemblyzer embeddings (B, 256), no gradient."""

    embed_dim = HIDDEN

    def __init__(self, weights: Path | None = None) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=400,
            hop_length=160,
            n_mels=N_MELS,
            norm="slaney",
            mel_scale="slaney",
            pad_mode="constant",
        )
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        path = weights or resemblyzer_weights()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
            self.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}, strict=False)
        except (OSError, RuntimeError, KeyError, TypeError) as err:
            raise TeacherError(f"{path} is not Resemblyzer's encoder: {err}") from err
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ResemblyzerTeacher:
        """Always in evaluation mode: the teacher is frozen."""
        return super().train(False)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, T, 40) power mel, after raising quiet crops to -30 dBFS as Resemblyzer does."""
        rms = wav.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-8)
        gain = (10 ** (TARGET_DBFS / 20) / rms).clamp_min(1.0)
        with torch.autocast(wav.device.type, enabled=False):
            return self.mel((wav * gain).float()).transpose(1, 2)

    def embed_frames(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, T, 40) mel frames -> (B, 256) unit vectors: Resemblyzer's network on one partial."""
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mels = self.features(wav)
        if mels.shape[1] < PARTIAL_FRAMES:
            mels = nn.functional.pad(mels, (0, 0, 0, PARTIAL_FRAMES - mels.shape[1]))
        partials = mels.unfold(1, PARTIAL_FRAMES, PARTIAL_STEP).transpose(2, 3)  # (B, P, 160, 40)
        batch, count = partials.shape[:2]
        with torch.autocast(wav.device.type, enabled=False):
            units = self.embed_frames(partials.reshape(batch * count, PARTIAL_FRAMES, N_MELS).float())
        mean = units.reshape(batch, count, -1).mean(dim=1)
        return mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-8)


# Teachers by the name ``distill.teacher`` gives; each has an ``embed_dim`` class attribute.
TEACHERS: dict[str, type[nn.Module]] = {"resemblyzer": ResemblyzerTeacher}


def standardised_similarities(vectors: torch.Tensor) -> torch.Tensor:
    """The cosine of every pair of distinct rows, standardised (zero mean, unit spread over the batch).

    Standardising keeps the batch's similarity *structure* (who is closer to whom) and drops its
    level: the teacher's ReLU embeddings put any two voices at a cosine of 0.5 or more, where a
    margin-trained student puts strangers near 0, and neither level is wrong.
    """
    unit = F.normalize(vectors.float(), dim=1)
    upper = torch.triu_indices(len(unit), len(unit), offset=1, device=unit.device)
    pairs = (unit @ unit.T)[upper[0], upper[1]]
    return (pairs - pairs.mean()) / pairs.std().clamp_min(1e-6)


def distillation_losses(
    student: torch.Tensor, projected: torch.Tensor, teacher: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine, similarity) losses of a batch, both 0 when the student agrees with the teacher.

    ``cosine``: 1 - cos(projected student embedding, teacher embedding), averaged over the crops:
    the learned projection maps the student's space onto the teacher's, crop by crop.
    ``similarity``: the mean squared difference of the two batches' standardised pairwise
    similarities, on the student's own embedding, so that its space itself takes on the
    teacher's structure (relational distillation).
    """
    cosine = 1.0 - F.cosine_similarity(projected.float(), teacher.float(), dim=1).mean()
    similarity = (standardised_similarities(student) - standardised_similarities(teacher)).pow(2).mean()
    return cosine, similarity
