"""Enrolled speakers for the app's identify tab.

A gallery maps speaker names to the embeddings of their enrolment clips and
ranks a query embedding against each speaker's centroid. It is stored as ONE
safetensors file, never pickle, because galleries are uploaded and shared and
unpickling runs arbitrary code:

* tensor ``clips``: float32, (total_clips, D), the L2-normalised clip vectors,
  speaker after speaker in enrolment order;
* header metadata ``speakerdemo_gallery``: JSON
  ``{"version": 1, "dim": D, "speakers": [{"name": ..., "clips": n}, ...]}``
  whose clip counts index consecutive rows of ``clips``.

Every file is validated in full before a Gallery is built from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import safetensors
import safetensors.numpy

from .atomic import atomic_write_bytes
from .scoring import cosine

__all__ = ["Gallery", "GalleryError", "Match", "Ranking", "UNKNOWN"]

UNKNOWN = "unknown"
MAX_NAME_LENGTH = 64
FORMAT_VERSION = 1
_META_KEY = "speakerdemo_gallery"
_TENSOR_KEY = "clips"
# Stored clips are unit vectors rounded to float32; anything further off was
# not written by this module.
_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Match:
    """One enrolled speaker and its score against a query."""

    name: str
    score: float


@dataclass(frozen=True)
class Ranking:
    """The top-k speakers for a query, best first, and the acceptance threshold."""

    matches: list[Match]
    threshold: float

    @property
    def best(self) -> str:
        """The top speaker's name, or ``"unknown"`` when nobody scores high enough.

        Identification is open-set: the closest enrolled speaker is only an
        answer if the score clears the threshold.
        """
        if not self.matches or self.matches[0].score < self.threshold:
            return UNKNOWN
        return self.matches[0].name

    @property
    def margin(self) -> float | None:
        """How far the best match scores above the runner-up (None with one speaker enrolled): a
        small margin means the query sounds about as much like the second person as the first."""
        return self.matches[0].score - self.matches[1].score if len(self.matches) > 1 else None


class GalleryError(ValueError):
    """A gallery file that cannot be trusted or read: message says why."""


def _clean_name(name: object) -> str:
    """Validate a speaker name and return it stripped.

    ``"unknown"`` is reserved because ``Ranking.best`` uses it to mean "no
    enrolled speaker matched"; a speaker called that would be ambiguous.
    """
    if not isinstance(name, str):
        raise ValueError(f"Speaker name must be a string, got {type(name).__name__}.")
    cleaned = name.strip()
    if not cleaned:
        raise ValueError("Speaker name is empty.")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise ValueError(f"Speaker name is {len(cleaned)} characters long; the limit is {MAX_NAME_LENGTH}.")
    if cleaned.lower() == UNKNOWN:
        raise ValueError(f"'{cleaned}' is reserved for unmatched queries; choose another speaker name.")
    return cleaned


class Gallery:
    """Named speakers, each with one or more L2-normalised clip embeddings.

    Clips are kept as float32 (the file's dtype) so that save/load round
    trips are bit-exact. Speakers keep their enrolment order.
    """

    def __init__(self, dim: int | None = None) -> None:
        """``dim`` is the embedding size; ``None`` lets the first enrolment fix it."""
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim must be a positive integer or None, got {dim!r}.")
        self._dim = dim
        self._clips: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int | None:
        """The embedding size every clip and query must have (None until known)."""
        return self._dim

    def __len__(self) -> int:
        return len(self._clips)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip() in self._clips

    def names(self) -> list[str]:
        """Speaker names in enrolment order."""
        return list(self._clips)

    def clip_counts(self) -> dict[str, int]:
        """Number of enrolled clips per speaker, in enrolment order."""
        return {name: len(clips) for name, clips in self._clips.items()}

    def _existing(self, name: str) -> str:
        """The stored key for ``name``, or a ValueError the UI can show as is."""
        if name not in self:
            raise ValueError(f"No enrolled speaker named '{name}'.")
        return name.strip()

    def _unit_vectors(self, vectors: Sequence[np.ndarray] | np.ndarray, what: str) -> np.ndarray:
        """Validate (n, D) embeddings against this gallery's dim and L2-normalise them."""
        try:
            arr = np.asarray(vectors, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what} must be equal-length numeric vectors: {err}") from err
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"{what} must be a non-empty sequence of 1-D vectors, got shape {arr.shape}.")
        if self._dim is not None and arr.shape[1] != self._dim:
            raise ValueError(f"{what} have dimension {arr.shape[1]}, but this gallery holds {self._dim}-D embeddings.")
        if not np.isfinite(arr).all():
            raise ValueError(f"{what} contain NaN or infinite values.")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms == 0.0).any():
            raise ValueError(f"{what} include a zero vector, which has no direction to compare.")
        return arr / norms

    def enroll(self, name: str, vectors: Sequence[np.ndarray]) -> None:
        """Add clips to a new or existing speaker.

        Everything is validated before anything changes, so a failed call
        leaves the gallery as it was.
        """
        key = _clean_name(name)
        unit = self._unit_vectors(vectors, "Enrolment vectors").astype(np.float32)
        self._dim = unit.shape[1]
        previous = self._clips.get(key)
        self._clips[key] = unit if previous is None else np.concatenate([previous, unit])

    def remove(self, name: str) -> None:
        """Forget a speaker and all their clips."""
        del self._clips[self._existing(name)]

    def clips(self, name: str) -> np.ndarray:
        """A copy of the speaker's (n, D) unit clip vectors (copy: callers cannot corrupt the gallery)."""
        return self._clips[self._existing(name)].copy()

    def centroid(self, name: str) -> np.ndarray:
        """The speaker's direction: mean of the unit clip vectors, re-normalised.

        Averaging unit vectors weights every clip equally regardless of its
        raw embedding norm; re-normalising makes the centroid comparable by
        cosine like a single clip.
        """
        return self._centroid(self._existing(name))

    def _centroid(self, key: str) -> np.ndarray:
        mean = self._clips[key].astype(np.float64).mean(axis=0)
        return mean / np.linalg.norm(mean)

    def rank(
        self,
        query: np.ndarray,
        top_k: int = 5,
        threshold: float = 0.5,
        score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> Ranking:
        """The ``top_k`` speakers whose centroids score highest against ``query``.

        ``score(query, centroids)`` gives the scores of the unit query (D,) against the speakers'
        unit centroids (K, D); by default their cosines. The app passes the checkpoint's own
        scoring (cohort normalisation, a calibration's shift for the query's kind of clip), so that
        a phone-band or short query meets the threshold on the same footing as a clean one. Equal
        scores keep enrolment order, so rankings are deterministic.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        q = self._unit_vectors([query], "Query vector")[0]
        if not self._clips:
            return Ranking(matches=[], threshold=threshold)
        names = self.names()
        centroids = np.stack([self._centroid(n) for n in names])
        scores = np.asarray(cosine(centroids, q) if score is None else score(q, centroids), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return Ranking(matches=[Match(names[i], float(scores[i])) for i in order], threshold=threshold)

    def copy(self) -> Gallery:
        """An independent deep copy (each web session gets its own gallery)."""
        clone = Gallery(self._dim)
        clone._clips = {name: clips.copy() for name, clips in self._clips.items()}
        return clone

    def to_bytes(self) -> bytes:
        """Serialise to safetensors bytes (see the module docstring for the layout)."""
        dim = self._dim or 0
        rows = list(self._clips.values()) or [np.zeros((0, dim), dtype=np.float32)]
        meta = {
            "version": FORMAT_VERSION,
            "dim": self._dim,
            "speakers": [{"name": n, "clips": len(c)} for n, c in self._clips.items()],
        }
        return safetensors.numpy.save(
            {_TENSOR_KEY: np.ascontiguousarray(np.concatenate(rows))},
            metadata={_META_KEY: json.dumps(meta)},
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Gallery:
        """Parse and fully validate safetensors bytes; GalleryError says what is wrong."""
        clips = _read_clips(data)
        dim, speakers = _read_metadata(data)
        _check_clips(clips, dim, speakers)
        gallery = cls(dim)
        start = 0
        for name, count in speakers:
            gallery._clips[name] = np.array(clips[start : start + count], dtype=np.float32)
            start += count
        return gallery

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: the file at ``path`` is either the old one or the new one.

        See :func:`speakerdemo.atomic.atomic_write`.
        """
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str], max_bytes: int = 64 * 2**20) -> Gallery:
        """Read and validate a gallery file no larger than ``max_bytes``.

        The size is checked before reading and again while reading (the file
        may grow in between), so an oversized upload is never loaded whole.
        """
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_bytes:
                    raise GalleryError(f"Gallery file is {size} bytes; the limit is {max_bytes}.")
                data = f.read(max_bytes + 1)
        except OSError as err:
            raise GalleryError(f"Cannot read gallery file {os.fspath(path)!r}: {err}") from err
        if len(data) > max_bytes:
            raise GalleryError(f"Gallery file is over the {max_bytes}-byte limit.")
        return cls.from_bytes(data)


def _read_clips(data: bytes) -> np.ndarray:
    """The single ``clips`` tensor, or GalleryError if the bytes are not a valid gallery tensor file.

    safetensors validates the header and that the buffer is exactly covered
    by the tensors, which catches truncation and non-safetensors input such
    as pickles (only parsed as a length and JSON, never executed).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GalleryError(f"Gallery data must be bytes, got {type(data).__name__}.")
    try:
        tensors = safetensors.numpy.load(bytes(data))
    except safetensors.SafetensorError as err:
        raise GalleryError(f"Not a valid safetensors gallery file ({err}).") from err
    if set(tensors) != {_TENSOR_KEY}:
        raise GalleryError(f"Gallery file must hold exactly one tensor '{_TENSOR_KEY}', found {sorted(tensors)}.")
    return tensors[_TENSOR_KEY]


def _read_metadata(data: bytes) -> tuple[int | None, list[tuple[str, int]]]:
    """(dim, [(name, clip count), ...]) from the header metadata, validated.

    Only called after safetensors accepted the file, so the 8-byte length
    prefix and the JSON header are known to be well formed.
    """
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(bytes(data[8 : 8 + header_len]))
    raw = header.get("__metadata__", {}).get(_META_KEY)
    if raw is None:
        raise GalleryError(f"Gallery file has no '{_META_KEY}' metadata; it was not written by speakerdemo.")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise GalleryError(f"Gallery metadata is not valid JSON ({err}).") from err
    if not isinstance(meta, dict):
        raise GalleryError("Gallery metadata must be a JSON object.")
    version = meta.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise GalleryError(f"Unsupported gallery format version {version!r}; expected {FORMAT_VERSION}.")
    dim = meta.get("dim")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise GalleryError(f"Gallery metadata has an invalid dim {dim!r}.")
    return dim, _read_speakers(meta.get("speakers"))


def _read_speakers(entries: object) -> list[tuple[str, int]]:
    """Validated (name, clip count) pairs: legal, unique names and positive counts."""
    if not isinstance(entries, list):
        raise GalleryError("Gallery metadata 'speakers' must be a list.")
    speakers: list[tuple[str, int]] = []
    for entry in entries:
        count = entry.get("clips") if isinstance(entry, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise GalleryError(f"Gallery speaker entry {entry!r} needs a name and a positive clip count.")
        try:
            name = _clean_name(entry.get("name"))
        except ValueError as err:
            raise GalleryError(f"Gallery speaker entry {entry!r} has an invalid name: {err}") from err
        if name != entry["name"]:
            raise GalleryError(f"Gallery speaker name {entry['name']!r} has surrounding whitespace.")
        speakers.append((name, count))
    names = [name for name, _ in speakers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise GalleryError(f"Gallery lists duplicate speaker names: {duplicates}.")
    return speakers


def _check_clips(clips: np.ndarray, dim: int | None, speakers: list[tuple[str, int]]) -> None:
    """Check the tensor against the metadata and the unit-vector invariant."""
    if clips.ndim != 2:
        raise GalleryError(f"Gallery tensor '{_TENSOR_KEY}' must be 2-D, got shape {clips.shape}.")
    if clips.dtype != np.float32:
        raise GalleryError(f"Gallery tensor '{_TENSOR_KEY}' must be float32, got {clips.dtype}.")
    if clips.shape[1] != (dim or 0):
        raise GalleryError(f"Gallery clips have dimension {clips.shape[1]}, but the metadata says {dim}.")
    total = sum(count for _, count in speakers)
    if total != clips.shape[0]:
        raise GalleryError(f"Gallery speakers list {total} clips in total, but the tensor has {clips.shape[0]} rows.")
    if not np.isfinite(clips).all():
        raise GalleryError("Gallery clips contain NaN or infinite values.")
    norms = np.linalg.norm(clips.astype(np.float64), axis=1)
    if (np.abs(norms - 1.0) > _NORM_TOLERANCE).any():
        raise GalleryError(
            "Gallery clips are not unit-length vectors; the file was altered or not written by speakerdemo."
        )
