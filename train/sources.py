"""The one table of data sources: what a ``data.sources`` entry of each ``type`` needs, what it
defaults to, how it is read, and what it yields.

Config validation (``train.config.source_settings``), the data stage (``train.prepare``) and the
score cohort (``train.cohort``) all ask this table, so a new format is one reader in
``train.data`` and one entry here. Code that must treat a kind of source differently asks the
entry (``audio``, ``labelled``, ``feature_preset``), never the type's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import (
    Utterance,
    folder_source,
    kaldi_source,
    manifest_source,
    unlabelled_source,
    voxceleb_list_source,
)
from .hw4 import hw4_utterances, load_hw4

# The options that labelled audio sources share, with their defaults:
#   hold_out_speakers: that many speakers (or that fraction of them) are kept out of training for the
#                      validation EER (and for calibrate's dev and test halves); 0 keeps every one in.
#   repeats:           crops per clip and epoch (one long LibriSpeech file can give several).
LABELLED_AUDIO = {"hold_out_speakers": 0, "repeats": 1}


@dataclass(frozen=True)
class Source:
    """One ``type`` of ``data.sources`` entry.

    ``read`` turns a resolved entry (``required`` keys given, ``defaults`` filled in) into its
    utterances. ``labelled`` sources know their speakers, so they are split, held out and
    classified; unlabelled clips teach through distillation alone. ``feature_preset`` marks
    sources that ship precomputed features instead of audio: the front-end preset they were made
    with, which the run defaults to, and which no waveform augmentation, teacher or cohort can use.
    """

    read: Callable[[dict[str, Any]], list[Utterance]]
    required: tuple[str, ...]
    defaults: dict[str, Any]
    labelled: bool = True
    feature_preset: str | None = None

    @property
    def audio(self) -> bool:
        """Whether the source's utterances are audio clips (the front end's input)."""
        return self.feature_preset is None

    @property
    def options(self) -> list[str]:
        """Every key an entry of this type takes besides ``type``."""
        return sorted({*self.required, *self.defaults})


def _folder(spec: dict[str, Any]) -> list[Utterance]:
    return folder_source(Path(spec["root"]))


def _manifest(spec: dict[str, Any]) -> list[Utterance]:
    """The manifest's rows, only those of ``split`` when one is named (e.g. speechocean762's train half)."""
    utts = manifest_source(Path(spec["manifest"]), Path(spec["root"]))
    return [u for u in utts if u.split == spec["split"]] if spec["split"] else utts


def _voxceleb(spec: dict[str, Any]) -> list[Utterance]:
    return voxceleb_list_source(Path(spec["list"]), Path(spec["root"]))


def _kaldi(spec: dict[str, Any]) -> list[Utterance]:
    """wav.scp paths are relative to ``audio_root``, the data dir itself unless named (see README)."""
    return kaldi_source(Path(spec["root"]), Path(spec["audio_root"] or spec["root"]))


def _unlabelled(spec: dict[str, Any]) -> list[Utterance]:
    return unlabelled_source(Path(spec["manifest"]), Path(spec["root"]))


def _hw4(spec: dict[str, Any]) -> list[Utterance]:
    """The feature files of metadata.json as utterances (``train.prepare.prepare_hw4`` reads the rest)."""
    root = Path(spec["root"])
    return hw4_utterances(root, load_hw4(root)[1])


SOURCES: dict[str, Source] = {
    # root/<speaker>/**/*.{wav,flac,ogg,opus,mp3}
    "folder": Source(_folder, ("root",), LABELLED_AUDIO),
    # A CSV with columns speaker, path[, split]; split: keep only the rows of that split (None: all).
    "manifest": Source(_manifest, ("root", "manifest"), {"split": None, **LABELLED_AUDIO}),
    # A VoxCeleb training list: ``speaker path`` per line.
    "voxceleb": Source(_voxceleb, ("root", "list"), LABELLED_AUDIO),
    # A Kaldi data dir (wav.scp, utt2spk); audio_root: what wav.scp's paths are relative to and must
    # stay inside (None: the data dir itself).
    "kaldi": Source(_kaldi, ("root",), {"audio_root": None, **LABELLED_AUDIO}),
    # Clips of unknown speakers (a CSV with a path column), for distillation only.
    "unlabelled": Source(_unlabelled, ("root", "manifest"), {"repeats": 1}, labelled=False),
    # The ML2022 HW4 feature set (train.hw4): 40-band log-mels made with the hw4 front-end preset.
    "hw4": Source(_hw4, ("root",), {}, feature_preset="hw4"),
}
DEFAULT_SOURCE_TYPE = "folder"


def source_of(spec: dict[str, Any]) -> Source:
    """The table entry of a resolved ``data.sources`` entry."""
    return SOURCES[spec["type"]]
