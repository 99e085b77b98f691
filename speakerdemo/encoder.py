"""SpeakerEncoder: audio -> features -> model -> Embedding. The one object the app and scripts use.

It is saved to and loaded from a checkpoint folder or Hub repo by :mod:`speakerdemo.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .audio import (
    HOP_SECONDS,
    MAX_SECONDS,
    MIN_SPEECH_SECONDS,
    AudioError,
    analyse_speech,
    high_band_db,
    load_audio,
    require_speech,
    speech_regions,
    speech_seconds,
)
from .checkpoint import HUB_LIBRARY, HUB_LICENSE, HUB_TAGS, CheckpointError, build, load, save
from .cohort import Cohort
from .features import FrontEnd, FrontEndConfig, pad_frames
from .gallery import Gallery, Ranking
from .losses import build_head
from .models import build_encoder
from .onnx_runtime import OnnxNetwork
from .scoring import Calibration, pair_cosines, snorm

if TYPE_CHECKING:
    from .adapt import Adaptation
    from .verdict import Verdict

DEFAULT_THRESHOLD = 0.5
SPEED_MARK = "@"  # class "spk@0.9": speaker "spk" at speed 0.9 (see train/prepare.py)
SPEECH_COLLAR_SECONDS = 0.3  # context kept around detected speech (see with_collar)
CLIP_LEVEL = 0.999  # samples this close to full scale count as clipped
GPU_BATCH_FRAMES = 48000  # default bound of an encoder batch (see embed_batch)
CPU_BATCH_FRAMES = 3000


@dataclass
class Embedding:
    """One clip's embedding, with what the model saw and where it looked.

    ``mel``, ``attention`` and ``frame_times`` are per feature frame: the log-mel features, the
    pooling weights (zero on frames not pooled) and each frame's time in the input clip in
    seconds (the ``hw4`` front end trims silence, so frames are not always evenly spaced).
    ``speech_mask`` is the VAD's own mask (:func:`~speakerdemo.audio.detect_speech`, one entry
    per 10 ms over the input clip): the one stored record of where speech is, from which the
    regions and the seconds of speech are derived, so they always agree with the speech gate.
    ``high_band_db`` (:func:`~speakerdemo.audio.high_band_db`) tells a phone-band clip from a
    wideband one, ``level_range_db`` (the level range of :func:`~speakerdemo.audio.analyse_speech`)
    a noisy one from a quiet one.
    ``class_logits`` is None unless asked for (``embed_batch(..., class_logits=True)``).
    """

    vector: np.ndarray
    attention: np.ndarray
    mel: np.ndarray
    frame_times: np.ndarray
    speech_mask: np.ndarray
    duration_seconds: float
    high_band_db: float
    level_range_db: float
    clipped_fraction: float = 0.0
    class_logits: np.ndarray | None = None

    @property
    def speech_regions(self) -> list[tuple[float, float]]:
        """(start_s, end_s) of each detected speech region of the input clip."""
        return speech_regions(self.speech_mask, HOP_SECONDS)

    @property
    def speech_seconds(self) -> float:
        """Seconds of detected speech, counted as the minimum-speech gate counts them."""
        return speech_seconds(self.speech_mask, HOP_SECONDS)


@dataclass
class _Clip:
    """One clip ready for the model: its log-mel features, which frames are pooled (speech + collar),
    and what its Embedding reports about the input (VAD mask, frame times, duration, clipping)."""

    feats: torch.Tensor
    frame_times: np.ndarray
    speech_mask: np.ndarray
    pooled: np.ndarray
    duration: float
    clipped: float
    high_band_db: float
    level_range_db: float


def with_collar(mask: np.ndarray, frames: int) -> np.ndarray:
    """Widen every speech region by ``frames`` on each side.

    The model was trained on crops with their natural pauses and edges; pooling speech frames
    with a collar keeps that context while still dropping long silences (measured on
    speechocean762/trials_test.txt with the previous, augmented default checkpoint: EER 6.60 %
    with no collar, 5.74 % with 0.3 s, 5.44 % pooling every frame — which lets a mostly-silent
    clip produce a confident score).
    """
    if frames <= 0 or not mask.any():
        return mask
    # mode="full", then the centred len(mask) entries: mode="same" returns max(len(mask), kernel)
    # entries, longer than the mask for clips under 2 * frames + 1 frames.
    widened = np.convolve(mask.astype(np.int32), np.ones(2 * frames + 1, dtype=np.int32), mode="full")
    return widened[frames : frames + len(mask)] > 0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on: ``device`` as given, else CUDA when present, else the CPU.

    The one place that decides, so the app, the scripts and training agree on the default.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SpeakerEncoder(
    nn.Module,
    PyTorchModelHubMixin,
    library_name=HUB_LIBRARY,
    tags=list(HUB_TAGS),  # a copy: the mixin appends its own tags to the list it is given
    license=HUB_LICENSE,
):
    """Front end + encoder (+ optional classification head) with a calibrated threshold.

    ``window_seconds`` bounds memory on long clips: they are embedded in windows whose
    embeddings are averaged, weighted by their speech frames.
    """

    def __init__(
        self,
        frontend: dict | None = None,
        encoder: dict | None = None,
        head: dict | None = None,
        classes: list[str] | None = None,
        calibration: dict | None = None,
        window_seconds: float = 20.0,
        onnx: dict | None = None,
        cohort: dict | None = None,
    ) -> None:
        super().__init__()
        self.frontend = FrontEnd(FrontEndConfig(**(frontend or {})))
        self.encoder_config = dict(encoder or {"name": "ecapa_tdnn", "channels": 512})
        self.model = build_encoder(n_mels=self.frontend.config.n_mels, **self.encoder_config)
        self.head_config = dict(head) if head else None
        self.classes = list(classes) if classes else None
        self.head = None
        if self.head_config:
            if not self.classes:
                raise CheckpointError("A checkpoint with a classification head must list its classes.")
            self.head = build_head(embed_dim=self.model.embed_dim, n_classes=len(self.classes), **self.head_config)
        self.calibration = Calibration.from_dict(calibration) if calibration else None
        self.window_seconds = float(window_seconds)
        self.onnx_config = dict(onnx) if onnx else None
        self.onnx: OnnxNetwork | None = None  # the exported network, when from_pretrained loaded it
        self.onnx_int8 = False  # whether that network is the int8 copy
        self.onnx_files: dict[str, bytes] = {}  # every exported file config.json names, to save again
        self.cohort_config = dict(cohort) if cohort else None  # config.json's entry, until from_pretrained reads it
        self.cohort: Cohort | None = None  # the score cohort, when the checkpoint has one
        self.adaptation: Adaptation | None = None  # what adapt() measured, on an adapted copy

    # ----------------------------------------------------------------- checkpoints
    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> str | None:
        """Write this encoder, with its *current* calibration, as a checkpoint (:func:`speakerdemo.checkpoint.save`)."""
        return save(super().save_pretrained, save_directory, self, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        backend: str = "auto",
        **kwargs: Any,
    ) -> SpeakerEncoder:
        """Load a local checkpoint folder or a Hub repo id; ``device`` defaults to CUDA if present,
        ``backend`` picks what runs the network on the CPU (:func:`speakerdemo.checkpoint.load`)."""
        return load(super().from_pretrained, pretrained_model_name_or_path, resolve_device(device), backend, **kwargs)

    @classmethod
    def _from_pretrained(cls, **kwargs: Any) -> SpeakerEncoder:
        """The Hub mixin's hook once config.json is read: :func:`speakerdemo.checkpoint.build`."""
        return build(cls, **kwargs)

    def use_onnx(self, network: OnnxNetwork, entry: dict, files: dict[str, bytes], int8: bool = False) -> None:
        """Run the encoder network with ``network`` on the CPU from now on (``python -m train
        export`` after exporting); ``entry`` is config.json's description of the exported files,
        ``files`` their bytes by name, ``int8`` whether ``network`` is the int8 copy."""
        self.onnx, self.onnx_config, self.onnx_files, self.onnx_int8 = network, dict(entry), dict(files), int8

    @property
    def backend(self) -> str:
        """What runs the encoder network now: ``"onnx"`` or ``"onnx-int8"`` (ONNX Runtime, CPU), or ``"torch"``."""
        if self.onnx is None or self.device.type != "cpu":
            return "torch"
        return "onnx-int8" if self.onnx_int8 else "onnx"

    # ----------------------------------------------------------------- inference
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def threshold(self) -> float:
        """The calibrated EER threshold, or a neutral default for an uncalibrated model."""
        return self.calibration.threshold if self.calibration else DEFAULT_THRESHOLD

    def embed(
        self,
        audio: Any,
        sample_rate: int | None = None,
        *,
        max_seconds: float | None = MAX_SECONDS,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
        class_logits: bool = False,
    ) -> Embedding:
        """Embed one clip: a path, bytes, a Gradio ``(sr, array)`` tuple, or an array with ``sample_rate``."""
        return self.embed_batch(
            [audio if sample_rate is None else (sample_rate, audio)],
            max_seconds=max_seconds,
            min_speech_seconds=min_speech_seconds,
            class_logits=class_logits,
        )[0]

    def embed_batch(
        self,
        clips: Sequence[Any],
        *,
        max_seconds: float | None = MAX_SECONDS,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
        names: Sequence[str] | None = None,
        max_batch_frames: int | None = None,
        class_logits: bool = False,
    ) -> list[Embedding]:
        """Embed several clips; windows of all clips are batched by length on the device.

        ``max_batch_frames`` bounds a batch (frames x windows, padding included); by default 48,000
        on CUDA and 3,000 (30 s) on the CPU, where large batches only add memory traffic: 8 clips
        of 60 s took 3.5 s in batches of 48,000 frames and 2.2 s in batches of 3,000 (2 cores).

        Only detected speech is pooled. ``min_speech_seconds=0`` (evaluation of fixed trial lists)
        accepts any clip and pools all frames of a clip where no speech is detected. The
        classifier head's logits are computed only with ``class_logits=True`` (identification,
        validation), as verification has no use for them. Raises AudioError for the first bad clip,
        naming it (``names[i]``, else "Clip i") when there are several.
        """
        prepared = []
        for i, clip in enumerate(clips):
            try:
                # The speech check happens in _prepare, on the mask the pooling uses: one VAD pass.
                wav = load_audio(
                    clip, self.frontend.config.sample_rate, max_seconds=max_seconds, min_speech_seconds=0.0
                )
                prepared.append(self._prepare(wav, min_speech_seconds))
            except AudioError as err:
                name = names[i] if names else f"Clip {i + 1}"
                raise AudioError(f"{name}: {err}" if len(clips) > 1 else str(err)) from None
        windows = [(c, w) for c, clip in enumerate(prepared) for w in self._windows(clip)]
        if max_batch_frames is None:
            max_batch_frames = GPU_BATCH_FRAMES if self.device.type == "cuda" else CPU_BATCH_FRAMES
        outputs = self.encode_windows([clip_windows for _, clip_windows in windows], max_batch_frames, class_logits)
        return [
            self._assemble(clip, [out for (c, _), out in zip(windows, outputs) if c == index])
            for index, clip in enumerate(prepared)
        ]

    def network_inputs(self, audio: Any) -> list[torch.Tensor]:
        """The normalised log-mel windows (frames, n_mels) that the encoder network is given for
        one clip, whole and without a speech gate: what int8 quantisation measures ranges on."""
        wav = load_audio(audio, self.frontend.config.sample_rate, max_seconds=None, min_speech_seconds=0.0)
        return self._windows(self._prepare(wav, 0.0))

    def score(self, a: Embedding | np.ndarray, b: Embedding | np.ndarray) -> float:
        """The score of two embeddings (or vectors) that :attr:`threshold` applies to
        (:meth:`pair_scores`)."""
        va = a.vector if isinstance(a, Embedding) else a
        vb = b.vector if isinstance(b, Embedding) else b
        if np.shape(va) != np.shape(vb):
            raise ValueError(f"Embedding sizes differ: {np.shape(va)} vs {np.shape(vb)}.")
        return float(self.pair_scores(np.stack([va, vb]), [0], [1])[0])

    def verify(self, a: Any, b: Any, threshold: float | None = None) -> Verdict:
        """Are ``a`` and ``b`` one speaker: "same", "different" or "uncertain", with why (see
        :mod:`speakerdemo.verdict`). Each is an Embedding, a 1-D vector or audio :meth:`embed` takes."""
        from .verdict import decide  # the verdict module builds on this one

        return decide(self, self._embedding_or_vector(a), self._embedding_or_vector(b), threshold)

    def identify(self, query: Any, gallery: Gallery, threshold: float | None = None, top_k: int = 5) -> Ranking:
        """Who of ``gallery`` ``query`` is (an Embedding, a 1-D vector or audio); ``.best`` is a name
        or "unknown", against a threshold raised for the size of the gallery (speakerdemo.verdict)."""
        from .verdict import rank

        return rank(self, self._embedding_or_vector(query), gallery, threshold, top_k)

    def _embedding_or_vector(self, item: Any) -> Embedding | np.ndarray:
        if isinstance(item, Embedding):
            return item
        if isinstance(item, np.ndarray) and item.shape == (self.model.embed_dim,):
            return item.astype(np.float64)
        return self.embed(item)

    def adapt(self, clips_by_person: dict[str, Sequence[Any]], target_far: float = 0.05) -> SpeakerEncoder:
        """A copy calibrated on clips of the user's own people (speakerdemo.adapt); this one is unchanged."""
        from .adapt import adapt

        return adapt(self, clips_by_person, target_far)

    def pair_scores(self, vectors: np.ndarray, first: Sequence[int], second: Sequence[int]) -> np.ndarray:
        """Scores of the pairs ``(vectors[first[i]], vectors[second[i]])``: their cosine, normalised
        against the checkpoint's cohort when it has one (:class:`speakerdemo.cohort.Cohort`), so
        that strangers score alike whatever the clips. Each clip meets the cohort once, however
        many pairs it is in."""
        v = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        i, j = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
        cosines = pair_cosines(v[i], v[j])
        if self.cohort is None:
            return cosines
        mean, std = self.cohort.stats(v)
        return snorm(cosines, (mean[i], std[i]), (mean[j], std[j]))

    def classify(self, embedding: Embedding, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k training speakers with probabilities, for checkpoints with a classifier head.

        Classes named ``speaker@0.9`` are speed-perturbed copies of ``speaker`` (training with
        speeds as new speakers); their probability is added to the speaker's own.
        """
        if embedding.class_logits is None or not self.classes:
            return []
        probs = torch.softmax(torch.from_numpy(embedding.class_logits).double(), dim=0).numpy()
        totals: dict[str, float] = {}
        for name, p in zip(self.classes, probs):
            speaker = name.split(SPEED_MARK)[0]
            totals[speaker] = totals.get(speaker, 0.0) + float(p)
        return sorted(totals.items(), key=lambda item: -item[1])[:top_k]

    def _prepare(self, wav: np.ndarray, min_speech_seconds: float) -> _Clip:
        """Features of the whole clip, and which frames are speech, on the input's time axis.

        The VAD runs here, once per clip: its mask both gates the clip (``min_speech_seconds``,
        disabled by 0) and selects the frames to pool.
        """
        sr = self.frontend.config.sample_rate
        hop = self.frontend.config.hop_length
        vad, level_range = analyse_speech(wav, sr)
        if min_speech_seconds > 0:
            require_speech(vad, min_speech_seconds)
        processed, kept = self.frontend.prepare(wav)
        # The STFT pads each end by n_fft // 2 samples, reflecting the clip: it needs more than that.
        shortest = self.frontend.config.n_fft // 2 + 1
        if len(processed) < shortest:
            raise AudioError(
                f"The clip is too short ({1000 * len(wav) / sr:.0f} ms); "
                f"at least {1000 * shortest / sr:.0f} ms is needed."
            )
        with torch.inference_mode():
            feats = self.frontend.log_mel(torch.from_numpy(processed).to(self.device).unsqueeze(0))[0]
        positions = np.minimum(np.arange(feats.shape[0]) * hop, len(processed) - 1)
        original = kept[positions] if kept is not None else positions
        vad_hop = int(round(HOP_SECONDS * sr))
        speech = vad[np.minimum(original // vad_hop, len(vad) - 1)]  # the VAD's verdict at each feature frame
        pooled = with_collar(speech, int(round(SPEECH_COLLAR_SECONDS * sr / hop)))
        if not speech.any():
            if min_speech_seconds > 0:
                raise AudioError("No speech detected in the clip.")
            pooled = np.ones_like(speech)
        clipped = float(np.mean(np.abs(wav) >= CLIP_LEVEL))
        return _Clip(
            feats,
            original / sr,
            vad,
            pooled,
            len(wav) / sr,
            clipped,
            high_band_db(wav, sr, vad),
            level_range,
        )

    def _windows(self, clip: _Clip) -> list[torch.Tensor]:
        """Speech frames of a clip, normalised together, cut into windows of at most ``window_seconds``."""
        speech = clip.feats[torch.from_numpy(clip.pooled).to(clip.feats.device)]
        frames = self.frontend.normalize(speech.unsqueeze(0))[0]
        size = max(1, int(self.window_seconds * self.frontend.config.sample_rate / self.frontend.config.hop_length))
        return list(torch.split(frames, size))

    def encode_windows(self, windows: list[torch.Tensor], max_batch_frames: int, logits: bool = False) -> list:
        """(embedding, attention, logits or None) per window of normalised log-mel frames, through the
        network in length-sorted padded batches: also for callers that cut their own windows (diarize)."""
        order = sorted(range(len(windows)), key=lambda i: windows[i].shape[0])
        results: list[tuple] = [None] * len(windows)  # type: ignore[list-item]
        batch: list[int] = []
        for index in order + [None]:
            # Sorted by length, so the window being added is the longest and sets the padded size.
            if batch and (index is None or (len(batch) + 1) * windows[index].shape[0] > max_batch_frames):
                for i, out in zip(batch, self._encode([windows[i] for i in batch], logits)):
                    results[i] = out
                batch = []
            if index is not None:
                batch.append(index)
        return results

    def _encode(self, windows: list[torch.Tensor], class_logits: bool) -> list[tuple]:
        """(embedding, attention over the window's frames, logits or None) for each window of one batch."""
        feats, mask = pad_frames(windows)
        use_amp = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=use_amp):
            out = self.model(feats, mask) if self.backend == "torch" else self.onnx(feats, mask)
            logits = self.head.logits(out.embedding) if class_logits and self.head is not None else None
        embeddings = out.embedding.float().cpu().numpy()
        weights = out.weights.float().cpu().numpy()
        logits = logits.float().cpu().numpy() if logits is not None else None
        return [
            (embeddings[row], weights[row, : window.shape[0]], None if logits is None else logits[row])
            for row, window in enumerate(windows)
        ]

    def _assemble(self, clip: _Clip, outputs: list[tuple]) -> Embedding:
        """Average window embeddings by speech frames; spread attention back onto all frames."""
        sizes = np.array([len(w) for _, w, _ in outputs], dtype=np.float64)
        share = sizes / sizes.sum()
        unit = [e / max(np.linalg.norm(e), 1e-12) for e, _, _ in outputs]
        vector = np.sum([s * u for s, u in zip(share, unit)], axis=0)
        attention = np.zeros(len(clip.pooled), dtype=np.float32)
        attention[clip.pooled] = np.concatenate([s * w for s, (_, w, _) in zip(share, outputs)])
        logits = None
        if outputs[0][2] is not None:
            logits = np.sum([s * z for s, (_, _, z) in zip(share, outputs)], axis=0).astype(np.float32)
        return Embedding(
            vector=(vector / np.linalg.norm(vector)).astype(np.float32),
            attention=attention / attention.sum(),
            mel=clip.feats.float().cpu().numpy(),
            frame_times=clip.frame_times.astype(np.float32),
            speech_mask=clip.speech_mask,
            duration_seconds=clip.duration,
            high_band_db=clip.high_band_db,
            level_range_db=clip.level_range_db,
            clipped_fraction=clip.clipped,
            class_logits=logits,
        )
