"""A checkpoint's impostor cohort: scores that mean the same for every kind of clip.

How close two strangers' embeddings come depends on the clips: on a phone line, in a noisy
room, or in a long clip with pauses, strangers score closer than in clean speech, and a
threshold on the raw cosine lets them through. Adaptive symmetric score normalisation (AS-Norm,
Matejka et al. 2017) measures that for each clip: its cosines to a cohort of other speakers'
clips, recorded in every condition, whose ``top_n`` highest give a mean and spread; a pair's
score is its cosine in units of those spreads above those means, averaged over its two clips.
A clip from a noisy room finds cohort clips from noisy rooms, so its strangers sink to where
clean strangers are, and one threshold holds across conditions.

A clip unlike every cohort clip (a voice or language the cohort lacks) finds only far cohort
members: its mean is low and its normalised scores would be inflated. ``mean_floor`` and
``std_floor`` bound that: no clip is normalised by a smaller mean or spread than those of the
10th percentile of the calibration clips (:meth:`Cohort.with_floors`), so an unfamiliar voice is
scored no more generously than the familiar ones the threshold was calibrated on.

The cohort travels with its checkpoint as ``cohort.safetensors`` (the unit vectors, float16) with
``top_n`` and the floors in config.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import safetensors
import safetensors.numpy
from numpy.typing import ArrayLike

from .scoring import top_n_stats

COHORT_FILE = "cohort.safetensors"
TOP_N = 50
FLOOR_PERCENTILE = 10.0
_TENSOR_KEY = "vectors"
_CHUNK = 4096  # clips scored against the cohort at once: bounds memory on long trial lists
MIN_STD = 1e-6  # no clip's spread is taken as smaller: a clip equally close to its top_n would divide by 0


@dataclass
class Cohort:
    """Unit embeddings of other speakers' clips, and how a score is normalised against them."""

    vectors: np.ndarray
    top_n: int = TOP_N
    mean_floor: float = -1.0
    std_floor: float = 0.0

    def __post_init__(self) -> None:
        v = np.asarray(self.vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[0] < 2:
            raise ValueError(f"A cohort needs at least 2 vectors as an (N, D) array, got shape {v.shape}.")
        if not np.isfinite(v).all():
            raise ValueError("The cohort contains NaN or infinite values.")
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError("The cohort contains a zero vector.")
        self.vectors = v / norms
        if not 2 <= int(self.top_n):
            raise ValueError(f"top_n must be at least 2 to estimate a spread, got {self.top_n}.")
        self.top_n = int(self.top_n)
        if not (np.isfinite(self.mean_floor) and np.isfinite(self.std_floor) and self.std_floor >= 0):
            raise ValueError(f"Cohort floors must be finite (spread >= 0), got {self.mean_floor}, {self.std_floor}.")
        self.mean_floor, self.std_floor = float(self.mean_floor), float(self.std_floor)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def raw_stats(self, vectors: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Per row of ``vectors`` (N, D): mean and spread of its ``top_n`` highest cohort cosines."""
        v = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if v.shape[1] != self.dim:
            raise ValueError(f"Embedding size {v.shape[1]} does not match the cohort's {self.dim}.")
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        parts = [
            top_n_stats((v[start : start + _CHUNK] @ self.vectors.T).astype(np.float64), self.top_n)
            for start in range(0, len(v), _CHUNK)
        ]
        return np.concatenate([mean for mean, _ in parts]), np.concatenate([std for _, std in parts])

    def stats(self, vectors: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`raw_stats`, each raised to its floor (the spread to at least ``MIN_STD``)."""
        mean, std = self.raw_stats(vectors)
        return np.maximum(mean, self.mean_floor), np.maximum(std, max(self.std_floor, MIN_STD))

    def with_floors(self, calibration_vectors: ArrayLike, percentile: float = FLOOR_PERCENTILE) -> Cohort:
        """This cohort with its floors set at ``percentile`` of the calibration clips' raw stats."""
        mean, std = self.raw_stats(calibration_vectors)
        return Cohort(
            self.vectors, self.top_n, float(np.percentile(mean, percentile)), float(np.percentile(std, percentile))
        )

    # ----------------------------------------------------------------- files
    def config(self) -> dict:
        """What config.json keeps of the cohort (the vectors live in ``COHORT_FILE``)."""
        return {
            "file": COHORT_FILE,
            "size": int(self.vectors.shape[0]),
            "top_n": self.top_n,
            "mean_floor": round(self.mean_floor, 6),
            "std_floor": round(self.std_floor, 6),
        }

    def to_bytes(self) -> bytes:
        return safetensors.numpy.save({_TENSOR_KEY: self.vectors.astype(np.float16)})

    @classmethod
    def from_bytes(cls, data: bytes, config: dict) -> Cohort:
        """Rebuild from ``to_bytes`` output and :meth:`config`, refusing anything malformed."""
        if not isinstance(config, dict):
            raise ValueError(f"The cohort entry of config.json must be a dict, got {type(config).__name__}.")
        try:
            tensors = safetensors.numpy.load(data)
        except (safetensors.SafetensorError, ValueError) as err:
            raise ValueError(f"{COHORT_FILE} is not a readable safetensors file: {err}") from err
        if set(tensors) != {_TENSOR_KEY}:
            raise ValueError(f"{COHORT_FILE} must hold exactly one tensor {_TENSOR_KEY!r}, got {sorted(tensors)}.")
        vectors = tensors[_TENSOR_KEY]
        if vectors.ndim != 2 or vectors.shape[0] != config.get("size"):
            raise ValueError(f"{COHORT_FILE} holds {vectors.shape}, config.json says {config.get('size')} vectors.")
        try:
            return cls(
                vectors.astype(np.float32), config["top_n"], float(config["mean_floor"]), float(config["std_floor"])
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"The cohort entry of config.json lacks or mistypes {err}.") from err
