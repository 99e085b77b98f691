"""Online waveform augmentation (run in DataLoader workers) and SpecAugment (on feature batches).

What the field uses for speaker embeddings (Kaldi/WeSpeaker VoxCeleb recipes): additive noise in
MUSAN's three categories at their usual SNR ranges, reverberation with room impulse responses
(recorded, or simulated with pyroomacoustics like the recipes' ``simulated_rirs``), speed
perturbation 0.9/1.1 (optionally as new speakers), random gain, and SpecAugment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import torch
import torchaudio
from scipy.signal import fftconvolve

from speakerdemo.audio import load_audio

PHONE_RATE = 8000  # samples per second of a phone line (G.711)
# The settings that switch a waveform augmentation on (the others only parameterise one).
WAVEFORM_SWITCHES = (
    "noise_dir",
    "coloured_noise",
    "babble",
    "rir_dir",
    "simulated_rirs",
    "speeds",
    "telephone_prob",
    "gain_db",
)
# MUSAN categories and the SNR ranges (dB) of the Kaldi/WeSpeaker recipes.
SNR_RANGES: dict[str, tuple[float, float]] = {
    "noise": (0.0, 15.0),
    "music": (5.0, 15.0),
    "speech": (13.0, 20.0),
    "coloured": (0.0, 15.0),
    "babble": (13.0, 20.0),
}


@dataclass(frozen=True)
class AugmentConfig:
    """The ``augment`` section of a resolved config; its defaults are in ``train.config.DEFAULTS``.

    Each component is on only when its own setting is: noise from ``noise_dir``, ``coloured_noise``,
    ``babble``, reverberation from ``rir_dir`` or ``simulated_rirs``, ``speeds``, the phone line
    (``telephone_prob``), ``gain_db`` and SpecAugment (``spec_freq_mask``/``spec_time_mask``). The
    other settings only parameterise a component, so naming one switches nothing on.
    """

    noise_dir: str | None  # MUSAN layout: noise/ music/ speech/ sub-folders
    coloured_noise: bool  # synthetic white/pink/brown noise
    babble: bool  # 3-6 other training clips mixed together
    rir_dir: str | None  # recorded room impulse responses (*.wav)
    simulated_rirs: int  # room impulse responses to simulate with pyroomacoustics
    prob: float  # chance that a crop gets noise and/or reverberation, when either is on
    reverb_prob: float  # share of those crops that get reverberation
    speeds: list[float]  # speed perturbation, e.g. [0.9, 1.1]
    speed_prob: float
    speeds_as_speakers: bool  # a speed-perturbed speaker is a new class
    telephone_prob: float  # share of crops sent through an 8 kHz line (half of them mu-law coded)
    gain_db: float  # random gain within +-gain_db
    spec_freq_mask: int  # SpecAugment mask widths (bands, frames)
    spec_time_mask: int
    spec_prob: float  # share of feature crops that SpecAugment masks, when it is on

    def waveform_components(self) -> list[str]:
        """The waveform augmentations this config switches on, by setting name ([] means none runs)."""
        return [name for name in WAVEFORM_SWITCHES if getattr(self, name)]


def _normalise(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise: white noise shaped by 1/f^beta in the frequency domain."""
    beta = rng.choice([0.0, 1.0, 2.0])
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    return np.fft.irfft(spectrum / freqs ** (beta / 2), n).astype(np.float32)


def simulate_rirs(count: int, sample_rate: int, seed: int) -> list[np.ndarray]:
    """Shoebox rooms of random size and absorption, random source and microphone positions."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    while len(rirs) < count:
        dims = rng.uniform([3, 3, 2.4], [12, 10, 4])
        room = pra.ShoeBox(
            dims,
            fs=sample_rate,
            materials=pra.Material(float(rng.uniform(0.15, 0.8))),
            max_order=int(rng.integers(6, 17)),
        )
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)[:sample_rate]
        rirs.append(rir / np.sqrt(np.sum(rir**2)))
    return rirs


def _read_folder(folder: Path, sample_rate: int, max_seconds: float | None = None) -> list[np.ndarray]:
    return [
        load_audio(p, sample_rate, max_seconds=max_seconds, min_speech_seconds=0.0, max_bytes=None)
        for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in (".wav", ".flac", ".ogg", ".opus")
    ]


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` scaled so that speech power / noise power = ``snr_db``."""
    p_speech = np.mean(speech**2) + 1e-10
    p_noise = np.mean(noise**2) + 1e-10
    return speech + noise * np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))


def telephone(wav: np.ndarray, sample_rate: int, mu_law: bool) -> np.ndarray:
    """The crop as a phone line delivers it: band-limited to 4 kHz by a round trip through 8 kHz
    and, with ``mu_law``, quantised to 8-bit G.711 mu-law. Phone audio is what the app hears that
    speechocean762 and LibriSpeech (16 kHz studio-like recordings) never show a model."""
    narrow = soxr.resample(wav, sample_rate, PHONE_RATE, quality="MQ")
    if mu_law:
        peak = max(float(np.max(np.abs(narrow))), 1e-6)
        codes = torchaudio.functional.mu_law_encoding(torch.from_numpy(narrow / peak), 256)
        narrow = peak * torchaudio.functional.mu_law_decoding(codes, 256).numpy()
    back = soxr.resample(narrow, PHONE_RATE, sample_rate, quality="MQ")
    out = np.zeros(len(wav), np.float32)
    out[: min(len(wav), len(back))] = back[: len(wav)]
    return out


class Augmenter:
    """Callable ``(wav, rng) -> (wav, speed_index)`` applied to each training crop.

    ``speed_index`` is 0 for the original speed and ``k`` for ``speeds[k-1]``; the data set turns
    it into a new class when speeds count as new speakers. Crops arrive ``max(speeds)`` times
    longer than needed so that a speed change still fills the crop.
    """

    def __init__(
        self,
        config: AugmentConfig,
        sample_rate: int,
        crop_source: Callable[[np.random.Generator], np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.sample_rate = sample_rate
        self.babble_source = crop_source if config.babble else None
        self.noises: dict[str, list[np.ndarray]] = {}
        if config.noise_dir:
            for category in ("noise", "music", "speech"):
                folder = Path(config.noise_dir) / category
                if folder.is_dir():
                    self.noises[category] = _read_folder(folder, sample_rate, max_seconds=None)
        self.rirs: list[np.ndarray] = []
        if config.rir_dir:
            self.rirs += [r / np.sqrt(np.sum(r**2) + 1e-10) for r in _read_folder(Path(config.rir_dir), sample_rate)]
        if config.simulated_rirs:
            self.rirs += simulate_rirs(config.simulated_rirs, sample_rate, seed)

    @property
    def length_factor(self) -> float:
        return max([1.0, *self.config.speeds])

    def __call__(self, wav: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        wav, speed_index = self._speed(wav, length, rng)
        c = self.config
        if rng.random() < c.prob:
            if self.rirs and rng.random() < c.reverb_prob:
                wav = self._reverb(wav, rng)
            kinds = self._noise_kinds()
            if kinds:
                wav = self._add_noise(wav, kinds[int(rng.integers(len(kinds)))], rng)
        if c.telephone_prob and rng.random() < c.telephone_prob:
            wav = telephone(wav, self.sample_rate, mu_law=bool(rng.random() < 0.5))
        if c.gain_db:
            wav = wav * 10 ** (rng.uniform(-c.gain_db, c.gain_db) / 20)
        peak = np.max(np.abs(wav))
        return (wav / peak if peak > 1.0 else wav).astype(np.float32), speed_index

    def _speed(self, wav: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        speeds = self.config.speeds
        if speeds and rng.random() < self.config.speed_prob:
            k = int(rng.integers(len(speeds)))
            # Playing sr*speed samples per second: resample from sr*speed to sr (tempo and pitch change).
            faster = soxr.resample(wav, self.sample_rate * speeds[k], self.sample_rate, quality="MQ")
            return faster[:length], k + 1
        return wav[:length], 0

    def _reverb(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rir = self.rirs[int(rng.integers(len(self.rirs)))]
        delay = int(np.argmax(np.abs(rir)))
        return fftconvolve(wav, rir)[delay : delay + len(wav)].astype(np.float32)

    def _noise_kinds(self) -> list[str]:
        kinds = list(self.noises)
        if self.config.coloured_noise:
            kinds.append("coloured")
        if self.babble_source is not None:
            kinds.append("babble")
        return kinds

    def _add_noise(self, wav: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
        n = len(wav)
        if kind == "coloured":
            noise = coloured_noise(n, rng)
        elif kind == "babble":
            noise = np.sum([_normalise(self.babble_source(rng)[:n]) for _ in range(int(rng.integers(3, 7)))], axis=0)
        else:
            clip = self.noises[kind][int(rng.integers(len(self.noises[kind])))]
            noise = np.tile(clip, int(np.ceil(n / len(clip))))
            start = int(rng.integers(0, len(noise) - n + 1))
            noise = noise[start : start + n]
        return mix_at_snr(wav, noise, rng.uniform(*SNR_RANGES[kind]))


class SpecAugment(torch.nn.Module):
    """Frequency and time masking on (B, T, F) features, per utterance, training only."""

    def __init__(self, freq_mask: int, time_mask: int, prob: float) -> None:
        super().__init__()
        self.prob = prob
        self.freq = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True) if freq_mask else None
        self.time = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True) if time_mask else None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # Off means untouched, and no draw from the global generator (which dropout shares).
        if not self.training or self.prob <= 0 or (self.freq is None and self.time is None):
            return feats
        x = feats.transpose(1, 2).unsqueeze(1)
        masked = x
        if self.freq is not None:
            masked = self.freq(masked)
        if self.time is not None:
            masked = self.time(masked)
        chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.prob
        return torch.where(chosen, masked, x).squeeze(1).transpose(1, 2)
