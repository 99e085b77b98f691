"""The ML2022 HW4 data set: precomputed 40-band log-mel features instead of audio, read, cropped for
training, and batched at full length for classification (``predict`` and validation).

A HW4 folder holds ``mapping.json`` (speaker ids <-> class indices), ``metadata.json`` (training
utterances per speaker), ``testdata.json`` (the unlabelled Kaggle test utterances) and one
``uttr-*.pt`` tensor (frames, 40) per utterance. The features are read as they are, so waveform
augmentation cannot apply (SpecAugment can). Feature files are loaded with
``torch.load(weights_only=True)``: a downloaded ``.pt`` file is a pickle, and only plain tensors are
accepted from it.

Training items map onto ``train.data.Utterance`` records (the feature file as the path), so the
split functions there (``utterance_split``, ``k_fold``, ``write_split``) apply unchanged.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.features import pad_frames

from .data import DataError, Utterance, safe_path

N_MELS = 40
SEGMENT_LEN = 128
HOP_LENGTH = 160  # samples per feature frame: 10 ms at 16 kHz, the hop of the ``hw4`` front-end preset
MAPPING_FILE = "mapping.json"
METADATA_FILE = "metadata.json"
TESTDATA_FILE = "testdata.json"


class Hw4Item(NamedTuple):
    """One training utterance as listed in metadata.json."""

    speaker: str
    feature_path: str
    mel_len: int


class Hw4TestItem(NamedTuple):
    """One Kaggle test utterance as listed in testdata.json; ``feature_path`` is its submission Id."""

    feature_path: str
    mel_len: int


# ----------------------------------------------------------------------------- json files
def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from one of the HW4 index files, or a DataError saying what is wrong with it."""
    if not path.is_file():
        raise DataError(
            f"{path} is missing: a HW4 folder needs {MAPPING_FILE}, {METADATA_FILE} "
            f"and/or {TESTDATA_FILE} beside its uttr-*.pt files."
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object, not {type(data).__name__}.")
    return data


def _field(data: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    """``data[key]``, checked to be of ``kind``: HW4 files from other sources are not always complete."""
    if key not in data:
        raise DataError(f"{path} has no {key!r} entry.")
    if not isinstance(data[key], kind):
        raise DataError(f"{path}: {key!r} must be a JSON {kind.__name__}.")
    return data[key]


def _check_n_mels(data: dict[str, Any], path: Path) -> None:
    """Refuse feature sets made with another mel count: they cannot feed a 40-band model."""
    n_mels = data.get("n_mels", N_MELS)
    if n_mels != N_MELS:
        raise DataError(f"{path} declares n_mels={n_mels}; the HW4 features have {N_MELS}.")


def _entry(root: Path, raw: Any, path: Path) -> tuple[str, int]:
    """(feature_path, mel_len) of one listed utterance, refusing paths that leave the folder."""
    if not isinstance(raw, dict) or not isinstance(raw.get("feature_path"), str):
        raise DataError(f"{path}: every utterance needs a 'feature_path' string, got {raw!r}.")
    mel_len = raw.get("mel_len")
    if not isinstance(mel_len, int) or mel_len <= 0:
        raise DataError(f"{path}: {raw['feature_path']!r} needs a positive integer 'mel_len', got {mel_len!r}.")
    safe_path(root, raw["feature_path"])
    return raw["feature_path"], mel_len


def load_speaker2id(root: Path) -> dict[str, int]:
    """mapping.json's ``speaker2id``, checked to number the speakers 0..N-1 (they are class indices)."""
    path = Path(root) / MAPPING_FILE
    speaker2id = _field(read_json(path), "speaker2id", dict, path)
    ids = sorted(speaker2id.values()) if all(isinstance(i, int) for i in speaker2id.values()) else None
    if not speaker2id or ids != list(range(len(speaker2id))):
        raise DataError(f"{path}: 'speaker2id' must map each speaker to a distinct index 0..N-1.")
    return dict(speaker2id)


def load_hw4(root: Path) -> tuple[dict[str, int], list[Hw4Item]]:
    """The training side of a HW4 folder: (speaker2id, utterances in metadata.json order)."""
    root = Path(root)
    speaker2id = load_speaker2id(root)
    path = root / METADATA_FILE
    metadata = read_json(path)
    _check_n_mels(metadata, path)
    items = []
    for speaker, utterances in _field(metadata, "speakers", dict, path).items():
        if speaker not in speaker2id:
            raise DataError(f"{path}: speaker {speaker!r} is not in {MAPPING_FILE}.")
        if not isinstance(utterances, list):
            raise DataError(f"{path}: the utterances of {speaker!r} must be a JSON list.")
        items += [Hw4Item(speaker, *_entry(root, raw, path)) for raw in utterances]
    if not items:
        raise DataError(f"{path} lists no utterances.")
    return speaker2id, items


def load_hw4_test(root: Path) -> list[Hw4TestItem]:
    """The Kaggle test utterances of testdata.json, in file order."""
    root = Path(root)
    path = root / TESTDATA_FILE
    testdata = read_json(path)
    _check_n_mels(testdata, path)
    items = [Hw4TestItem(*_entry(root, raw, path)) for raw in _field(testdata, "utterances", list, path)]
    if not items:
        raise DataError(f"{path} lists no utterances.")
    return items


def hw4_utterances(root: Path, items: Sequence[Hw4Item]) -> list[Utterance]:
    """Training items as ``Utterance`` records, so train.data's splits and split.csv apply to HW4."""
    return [Utterance(item.speaker, item.feature_path, root=str(root)) for item in items]


# ----------------------------------------------------------------------------- feature files
def load_features(path: Path) -> torch.Tensor:
    """One utterance's (frames, 40) float32 features; anything else is a DataError naming the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise DataError(f"{path} is missing.") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable tensor file (only plain tensors are loaded): {err}") from err
    if not (
        isinstance(obj, torch.Tensor)
        and obj.dim() == 2
        and obj.is_floating_point()
        and obj.shape[0] > 0
        and obj.shape[1] == N_MELS
    ):
        raise DataError(f"{path} holds {_describe(obj)}; HW4 features must be a 2-D float tensor (frames, {N_MELS}).")
    return obj.float()


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a {obj.dtype} tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def crop_frames(feats: torch.Tensor, length: int, rng: np.random.Generator) -> torch.Tensor:
    """A random window of ``length`` frames; short utterances are repeated to fill it.

    Repeating rather than zero-padding keeps every frame real speech, so a crop needs no mask.
    """
    if feats.shape[0] < length:
        feats = feats.repeat(math.ceil(length / feats.shape[0]), 1)
    start = int(rng.integers(0, feats.shape[0] - length + 1))
    return feats[start : start + length]


class Hw4CropDataset(Dataset):
    """Random ``segment_len``-frame crops of HW4 features with their class labels.

    Like ``train.data.CropDataset``, item ``i`` of epoch ``epoch`` always gets the same crop for a
    given ``seed``, so a resumed run sees exactly the crops an uninterrupted one would have;
    ``epoch`` is a plain attribute the training loop sets before each epoch, and ``crop_samples``
    the crop length in waveform samples that the loop speaks for every data set (it lengthens
    crops late in training).
    """

    def __init__(
        self, utts: Sequence[Utterance], labels: dict[str, int], segment_len: int = SEGMENT_LEN, seed: int = 0
    ) -> None:
        if not utts:
            raise DataError("No HW4 training utterances.")
        unknown = sorted({u.speaker for u in utts} - labels.keys())
        if unknown:
            raise DataError(f"Speakers without a class label: {unknown[:5]}.")
        self.utts = list(utts)
        self.labels = labels
        self.segment_len = segment_len
        self.seed = seed
        self.epoch = 0

    @property
    def crop_samples(self) -> int:
        return self.segment_len * HOP_LENGTH

    @crop_samples.setter
    def crop_samples(self, samples: int) -> None:
        self.segment_len = max(1, samples // HOP_LENGTH)

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        utt = self.utts[i]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        return crop_frames(load_features(utt.file), self.segment_len, rng), self.labels[utt.speaker]


# ----------------------------------------------------------------------------- full-length classification
def batches(items: Sequence[Hw4TestItem], batch_size: int) -> list[list[int]]:
    """Indices of ``items`` in batches of similar length (sorted by mel_len), to keep padding small."""
    order = sorted(range(len(items)), key=lambda i: items[i].mel_len)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def load_batch(root: Path, items: Sequence[Hw4TestItem]) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-length features of ``items``, zero-padded to the longest: (B, T, 40) and the mask (B, T)."""
    return pad_frames([load_features(safe_path(root, item.feature_path)) for item in items])


def batch_logits(encoder: SpeakerEncoder, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Class logits (B, classes) without the training margin, computed in float32 on the model's device."""
    with torch.inference_mode():
        out = encoder.model(feats.to(encoder.device), mask.to(encoder.device))
        return encoder.head.logits(out.embedding).float().cpu()


def predicted_classes(
    encoder: SpeakerEncoder, root: Path, items: Sequence[Hw4TestItem], batch_size: int, progress: bool = False
) -> list[int]:
    """The class index of each item, classified at FULL length in batches of similar length.

    Cropping utterances to the training segment length throws away most of the evidence (it cost
    one public HW4 solution 20 points); the padding mask keeps padding out of the pooling instead.
    """
    predicted: dict[int, int] = {}
    for group in tqdm(batches(items, batch_size), desc="classifying", unit="batch", disable=not progress):
        logits = batch_logits(encoder, *load_batch(root, [items[i] for i in group]))
        predicted.update(zip(group, logits.argmax(dim=1).tolist()))
    return [predicted[i] for i in range(len(items))]
