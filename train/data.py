"""Training data: the readers of the sources (folder per speaker, CSV manifest, VoxCeleb list, Kaldi
data dir; ``train.sources`` names them for configs), trial lists, splits, the clip store, and random
crops.

Every source yields ``Utterance`` records whose paths are checked to stay inside the data root;
unreadable clips are skipped with a count in the log instead of crashing an epoch.
"""

from __future__ import annotations

import csv
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from speakerdemo.audio import AUDIO_SUFFIXES, SAMPLE_RATE, AudioError, load_audio

from .augment import Augmenter

log = logging.getLogger("train")


UNLABELLED = ""  # the speaker of a clip from an unlabelled source
NO_CLASS = -1  # its class label: the head ignores it, the distillation losses use it


class DataError(ValueError):
    """A data set that cannot be used as given; the message says what to fix."""


@dataclass(frozen=True)
class Utterance:
    """One clip: ``path`` is relative to ``root`` (as listed in the source), ``file`` the checked full path."""

    speaker: str
    path: str
    split: str = ""
    root: str = "."

    @property
    def file(self) -> Path:
        return safe_path(Path(self.root), self.path)


@dataclass(frozen=True)
class Trial:
    label: int
    a: str
    b: str


def safe_path(root: Path, relative: str) -> Path:
    """``root / relative``, refusing entries that escape the root (``../../etc/passwd``)."""
    root = root.resolve()
    try:
        path = (root / relative).resolve()
    except (ValueError, OSError, RuntimeError) as err:  # NUL bytes, symlink loops
        raise DataError(f"Path {relative!r} cannot be resolved inside the data root {root}: {err}") from err
    if root != path and root not in path.parents:
        raise DataError(f"Path {relative!r} points outside the data root {root}.")
    return path


def folder_source(root: Path) -> list[Utterance]:
    """``root/<speaker>/**/*.{wav,flac,ogg,opus,mp3}``: one folder per speaker."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Data folder {root} does not exist.")
    utts = [
        Utterance(spk.name, str(f.relative_to(root)), root=str(root))
        for spk in sorted(p for p in root.iterdir() if p.is_dir())
        for f in sorted(spk.rglob("*"))
        if f.suffix.lower() in AUDIO_SUFFIXES
    ]
    if not utts:
        raise DataError(f"No audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}/<speaker>/.")
    return utts


def manifest_source(manifest: Path, root: Path) -> list[Utterance]:
    """A CSV with columns ``speaker, path`` and optionally ``split``; paths relative to ``root``."""
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"speaker", "path"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{manifest} lacks the column(s) {sorted(missing)}.")
        utts = [Utterance(r["speaker"], r["path"], r.get("split") or "", str(root)) for r in reader]
    for u in utts:
        safe_path(root, u.path)  # refuses paths that escape the root
    return utts


def unlabelled_source(manifest: Path, root: Path) -> list[Utterance]:
    """A CSV with a ``path`` column (other columns are ignored): clips of unknown speakers, which
    teach only through distillation (``UNLABELLED`` speaker, class ``NO_CLASS``)."""
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise DataError(f"{manifest} lacks the column 'path'.")
        utts = [Utterance(UNLABELLED, r["path"], root=str(root)) for r in reader]
    for u in utts:
        safe_path(root, u.path)  # refuses paths that escape the root
    return utts


def voxceleb_list_source(list_file: Path, root: Path) -> list[Utterance]:
    """VoxCeleb training list: ``id00012 id00012/21Uxsk56VDQ/00001.wav`` per line."""
    utts = []
    for number, line in enumerate(Path(list_file).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{list_file}:{number}: expected 'speaker path', got {line!r}.")
        safe_path(root, parts[1])  # refuses paths that escape the root
        utts.append(Utterance(parts[0], parts[1], root=str(root)))
    return utts


def _kaldi_table(path: Path, form: str) -> dict[str, tuple[str, int]]:
    """A Kaldi table file (``key value`` per line) as key -> (value, line number).

    A line with a key alone, or a repeated key (which of the two lines was meant cannot be known), is
    a DataError naming file:line; the value is the rest of the line, checked by the caller.
    """
    if not path.is_file():
        raise DataError(f"{path} is missing: a Kaldi data dir needs wav.scp and utt2spk.")
    table: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{path}:{number}: expected '{form}', got {line!r}.")
        key, value = parts[0], parts[1].strip()
        if key in table:
            raise DataError(f"{path}:{number}: utterance {key!r} is listed again (first on line {table[key][1]}).")
        table[key] = (value, number)
    return table


def _plain_path(value: str, where: str) -> str:
    """A wav.scp value that names a file: commands and archive offsets need Kaldi (or a shell) to read."""
    if value.endswith("|") or value.startswith("|") or value == "-":
        raise DataError(
            f"{where}: {value!r} is a piped command; only plain audio paths are read (write the clips out)."
        )
    if re.search(r"\.ark:\d+$", value):
        raise DataError(f"{where}: {value!r} is an offset into a Kaldi archive; only plain audio paths are read.")
    if len(value.split()) != 1:
        raise DataError(f"{where}: expected 'utterance-id path' (a path without spaces), got {value!r}.")
    return value


def kaldi_source(data_dir: Path, audio_root: Path) -> list[Utterance]:
    """A Kaldi data dir: ``wav.scp`` (``utt-id path``) and ``utt2spk`` (``utt-id speaker-id``), in
    wav.scp order.

    Only plain audio paths are read: piped commands (``utt sox in.flac -t wav - |``), standard input
    and archive offsets (``raw.ark:1234``) would run programs or need Kaldi to decode, so they are
    refused; so is a ``segments`` file (wav.scp then lists recordings, not utterances). Relative paths
    are relative to ``audio_root`` and absolute ones must lie inside it, as every source's paths must.
    Both files must list the same utterances (Kaldi's ``utils/fix_data_dir.sh`` makes them agree).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"Kaldi data dir {data_dir} does not exist.")
    if (data_dir / "segments").exists():
        raise DataError(
            f"{data_dir / 'segments'}: utterances cut out of recordings are not supported; "
            "extract them to files first (e.g. Kaldi's extract-segments) and list those in wav.scp."
        )
    wav_scp, utt2spk = data_dir / "wav.scp", data_dir / "utt2spk"
    speakers = _kaldi_table(utt2spk, "utterance-id speaker-id")
    for speaker, number in speakers.values():
        if len(speaker.split()) != 1:
            raise DataError(f"{utt2spk}:{number}: expected 'utterance-id speaker-id', got {speaker!r} after the id.")
    utts = []
    for utt, (value, number) in _kaldi_table(wav_scp, "utterance-id path").items():
        path = _plain_path(value, f"{wav_scp}:{number}")
        if utt not in speakers:
            raise DataError(f"{wav_scp}:{number}: utterance {utt!r} is missing from {utt2spk}.")
        safe_path(audio_root, path)  # refuses paths that escape the audio root
        utts.append(Utterance(speakers.pop(utt)[0], path, root=str(audio_root)))
    if speakers:
        utt, (_, number) = next(iter(speakers.items()))
        raise DataError(f"{utt2spk}:{number}: utterance {utt!r} is missing from {wav_scp} ({len(speakers)} such).")
    if not utts:
        raise DataError(f"{wav_scp} lists no utterances.")
    return utts


def read_trials(path: Path, root: Path | None = None) -> list[Trial]:
    """VoxCeleb trial list: ``label path1 path2`` with label 1 for the same speaker."""
    trials = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise DataError(f"{path}:{number}: expected '0|1 path1 path2', got {line!r}.")
        if root is not None:
            safe_path(root, parts[1]), safe_path(root, parts[2])
        trials.append(Trial(int(parts[0]), parts[1], parts[2]))
    if not trials:
        raise DataError(f"{path} holds no trials.")
    return trials


def speaker_disjoint_split(
    utts: Sequence[Utterance], val_speakers: int | float, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Hold out whole speakers (for verification): a count, or a fraction of the speakers."""
    speakers = sorted({u.speaker for u in utts})
    count = int(round(val_speakers * len(speakers))) if isinstance(val_speakers, float) else val_speakers
    held = set(random.Random(seed).sample(speakers, min(count, len(speakers) - 1)))
    return [u for u in utts if u.speaker not in held], [u for u in utts if u.speaker in held]


def _shuffled_per_speaker(utts: Sequence[Utterance], seed: int) -> Iterator[list[Utterance]]:
    """Each speaker's utterances in a seeded random order, speakers in name order."""
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_speaker[u.speaker].append(u)
    rng = random.Random(seed)
    for speaker in sorted(by_speaker):
        items = by_speaker[speaker][:]
        rng.shuffle(items)
        yield items


def utterance_split(
    utts: Sequence[Utterance], val_fraction: float, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Stratified per speaker (for identification): each speaker keeps at least one training clip."""
    train, val = [], []
    for items in _shuffled_per_speaker(utts, seed):
        n_val = min(int(round(val_fraction * len(items))), len(items) - 1)
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def k_fold(utts: Sequence[Utterance], folds: int, fold: int, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """Fold ``fold`` of a speaker-stratified K-fold split: (train, validation)."""
    train, val = [], []
    for items in _shuffled_per_speaker(utts, seed):
        for i, u in enumerate(items):
            (val if i % folds == fold else train).append(u)
    return train, val


def write_split(path: Path, **parts: Iterable[Utterance]) -> None:
    """The split as a CSV in the run folder, so a run can be audited and reproduced."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["speaker", "path", "split", "root"])
        for name, utts in parts.items():
            writer.writerows((u.speaker, u.path, name, u.root) for u in utts)


class AudioStore:
    """Decoded clips by path, optionally all held in memory (int16) to spare the decoder each epoch.

    Clips that cannot be read are dropped at start-up with a count in the log, so a bad file
    stops nothing an hour into an epoch.
    """

    def __init__(self, utts: Sequence[Utterance], preload: bool, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self.cache: dict[str, np.ndarray] = {}
        self.readable: set[str] = set()
        skipped: list[str] = []
        for u in tqdm(utts, desc="checking audio", unit="clip", leave=False, disable=len(utts) < 200):
            try:
                path = str(u.file)
                if preload:
                    self.cache[path] = (np.clip(self._decode(path), -1, 1) * 32767).astype(np.int16)
                elif sf.info(path).frames == 0:
                    raise AudioError("empty file")
                self.readable.add(path)
            except (AudioError, DataError, RuntimeError, sf.LibsndfileError) as err:
                skipped.append(f"{u.path}: {err}")
        if skipped:
            log.warning("skipped %d unreadable clip(s), e.g. %s", len(skipped), skipped[:3])

    def _decode(self, path: str) -> np.ndarray:
        return load_audio(path, self.sample_rate, max_seconds=None, min_speech_seconds=0.0, max_bytes=None)

    def get(self, path: str) -> np.ndarray:
        if path in self.cache:
            return self.cache[path].astype(np.float32) / 32767.0
        return self._decode(path)


def babble_source(
    store: AudioStore, utts: Sequence[Utterance], crop_samples: int
) -> Callable[[np.random.Generator], np.ndarray]:
    """Crops of random readable clips among ``utts``: the voices that babble noise mixes together."""
    paths = [str(u.file) for u in utts if str(u.file) in store.readable]

    def draw(rng: np.random.Generator) -> np.ndarray:
        return random_crop(store.get(paths[int(rng.integers(len(paths)))]), crop_samples, rng)

    return draw


def random_crop(wav: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``length`` samples; short clips are repeated to fill it."""
    if len(wav) < length:
        wav = np.tile(wav, int(np.ceil(length / len(wav))))
    start = int(rng.integers(0, len(wav) - length + 1))
    return wav[start : start + length]


class CropDataset(Dataset):
    """Random fixed-length crops with speaker labels; augmentation runs in the loader workers.

    ``repeats[i]`` crops are drawn from utterance ``i`` per epoch (one long LibriSpeech file can
    yield several). ``crop_samples`` and ``epoch`` are plain attributes so the training loop can
    lengthen crops late in training and vary the crops between epochs reproducibly: item ``i`` of
    epoch ``e`` always gets the same crop and augmentation, which makes resumed runs exact.
    """

    def __init__(
        self,
        utts: Sequence[Utterance],
        labels: dict[str, int],
        store: AudioStore,
        crop_seconds: float,
        augmenter: Augmenter | None = None,
        repeats: Sequence[int] | None = None,
        speeds_as_speakers: bool = False,
        seed: int = 0,
    ) -> None:
        self.utts = list(utts)
        self.index = [
            i
            for i, u in enumerate(self.utts)
            if str(u.file) in store.readable
            for _ in range(repeats[i] if repeats else 1)
        ]
        if not self.index:
            raise DataError("No readable training clips.")
        self.labels = labels
        self.store = store
        self.crop_samples = int(crop_seconds * store.sample_rate)
        self.augmenter = augmenter
        self.speeds_as_speakers = speeds_as_speakers
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        utt = self.utts[self.index[i]]
        label = self.labels.get(utt.speaker, NO_CLASS)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.augmenter is None:
            wav = random_crop(self.store.get(str(utt.file)), self.crop_samples, rng)
        else:
            longer = int(np.ceil(self.crop_samples * self.augmenter.length_factor))
            wav, speed = self.augmenter(random_crop(self.store.get(str(utt.file)), longer, rng), self.crop_samples, rng)
            if self.speeds_as_speakers and label != NO_CLASS:
                label += speed * len(self.labels)
        return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), label


def label_map(utts: Iterable[Utterance]) -> dict[str, int]:
    """Speaker -> class index, sorted by name so the mapping is reproducible."""
    return {s: i for i, s in enumerate(sorted({u.speaker for u in utts}))}


def check_training_set(utts: Sequence[Utterance]) -> None:
    """Refuse sets that cannot train a classifier, with the reason."""
    if not utts:
        raise DataError("The training split is empty.")
    speakers = {u.speaker for u in utts}
    if len(speakers) < 2:
        raise DataError(f"Training needs at least 2 speakers; found {len(speakers)}.")
