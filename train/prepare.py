"""The data stage of ``fit``: from a resolved config to what the loop needs (``Prepared``).

Sources are read and split, the split written to split.csv, training clips preloaded into crops
with the recipe's augmentation, and the validation sets made: held-out utterances of training
speakers for accuracy, and verification trials on speakers kept out of training for the EER.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch.utils.data import Dataset

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.encoder import SPEED_MARK

from .augment import AugmentConfig, Augmenter
from .data import (
    AudioStore,
    CropDataset,
    DataError,
    Utterance,
    babble_source,
    check_training_set,
    k_fold,
    label_map,
    read_trials,
    speaker_disjoint_split,
    utterance_split,
    write_split,
)
from .distributed import Dist
from .hw4 import HOP_LENGTH, N_MELS, Hw4CropDataset, hw4_utterances, load_hw4
from .sources import source_of
from .trials import FileTrials, TrialSet, segment_trials

log = logging.getLogger("train")

# Babble crops are this much longer than the training crop, so that a speed-perturbed crop is still filled.
BABBLE_LENGTH_FACTOR = 1.2


@dataclass
class Prepared:
    """Everything ``fit`` needs from the data stage.

    ``dataset`` yields (crop, label): ``train.data.CropDataset`` (waveforms) or
    ``train.hw4.Hw4CropDataset`` (features); both expose the ``crop_samples`` and ``epoch``
    attributes the loop sets. ``val_utts`` are clips of training speakers (validation accuracy),
    ``trials`` verification trials for the validation EER. ``val_frames`` is set for feature data
    sets only: frames per validation utterance, for full-length validation on the feature files.
    """

    dataset: Dataset
    classes: list[str]
    labels: dict[str, int]
    val_utts: list[Utterance]
    trials: TrialSet | None
    val_frames: dict[str, int] | None = None


def load_source(spec: dict, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """One resolved entry of ``data.sources``: (training utterances, held-out speakers' utterances).

    Sources without ``hold_out_speakers`` among their options (unlabelled clips, HW4) hold none out.
    """
    utts = source_of(spec).read(spec)
    held: list[Utterance] = []
    if spec.get("hold_out_speakers"):
        utts, held = speaker_disjoint_split(utts, spec["hold_out_speakers"], seed)
    return utts, held


def split_data(utts: list[Utterance], split: dict, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """(train, validation) as ``data.split`` asks."""
    if split["kind"] == "utterance":
        return utterance_split(utts, float(split["val_fraction"]), seed)
    if split["kind"] == "speaker":
        return speaker_disjoint_split(utts, split["val_speakers"], seed)
    if split["kind"] == "kfold":
        return k_fold(utts, int(split["folds"]), int(split["fold"]), seed)
    raise DataError(f"Unknown split kind {split['kind']!r}; choose utterance, speaker or kfold.")


def readable(utts: list[Utterance]) -> list[Utterance]:
    """The clips whose headers can be read: validation embeds whole clips, and one bad file
    would otherwise end the run at its first validation, possibly hours in."""
    store = AudioStore(utts, preload=False)
    return [u for u in utts if str(u.file) in store.readable]


def crop_dataset(
    cfg: dict, train: list[Utterance], labels: dict[str, int], repeats: list[int] | None = None
) -> CropDataset:
    """Random crops of the training clips with the recipe's augmentation (run in the loader workers)."""
    data, aug = cfg["data"], AugmentConfig(**cfg["augment"])
    store = AudioStore(train, preload=data["preload"])
    augmenter = None
    if aug.waveform_components():
        longest = max(data["crop_seconds"], cfg["train"]["long_crop_seconds"])
        babble = babble_source(store, train, int(longest * SAMPLE_RATE * BABBLE_LENGTH_FACTOR))
        augmenter = Augmenter(aug, SAMPLE_RATE, babble, seed=cfg["seed"])
    return CropDataset(
        train,
        labels,
        store,
        data["crop_seconds"],
        augmenter,
        repeats,
        speeds_as_speakers=aug.speeds_as_speakers,
        seed=cfg["seed"],
    )


def holdout_trials(held: list[Utterance], settings: dict) -> TrialSet:
    """Every pair of fixed-length segments of the held-out speakers' clips (``data.holdout_trials``).

    Segments, rather than pairs of whole clips, because a held-out LibriSpeech speaker has a single
    recording: a few segments of it give same-speaker trials all the same.
    """
    store = AudioStore(held, preload=False)
    clips = ((u.speaker, partial(store.get, str(u.file))) for u in held if str(u.file) in store.readable)
    seconds, per_speaker = settings["segment_seconds"], settings["segments_per_speaker"]
    trials = segment_trials(clips, round(seconds * SAMPLE_RATE), per_speaker)
    labels = trials.labels
    if not (labels.any() and not labels.all()):
        raise DataError(
            f"The validation EER needs same- and different-speaker pairs of {seconds:g}-s segments of "
            f"held-out clips, but {len(set(trials.speakers))} speaker(s) gave {len(trials.segments)}: "
            "hold out more speakers, or shorten data.holdout_trials.segment_seconds."
        )
    log.info(
        "validation EER on %d pairs of %d %g-s segments of %d held-out speakers",
        len(labels),
        len(trials.segments),
        seconds,
        len(set(trials.speakers)),
    )
    return trials


def prepare_hw4(cfg: dict, run_dir: Path, d: Dist) -> Prepared:
    """The ML2022 HW4 feature set: ``data.sources: [{type: hw4, root: DIR}]``.

    The classes are mapping.json's speaker ids in id order, so ``python -m train predict`` maps
    class indices back to Kaggle categories. The features are not audio: only SpecAugment applies,
    and validation is accuracy on held-out utterances (full length), not EER on audio trials.
    """
    data, seed = cfg["data"], cfg["seed"]
    if len(data["sources"]) != 1:
        raise DataError("A hw4 source cannot be combined with other sources: HW4 ships features, the others audio.")
    if cfg["frontend"]["n_mels"] != N_MELS:
        raise DataError(
            f"HW4 features have {N_MELS} mel bands but frontend.n_mels is {cfg['frontend']['n_mels']}; "
            "leave frontend empty (the hw4 preset) or set frontend: {preset: hw4}."
        )
    if data["split"]["kind"] == "speaker" or data["trials"]:
        raise DataError("HW4 runs classify their own speakers: use split kind utterance or kfold, and no trials.")
    root = Path(data["sources"][0]["root"])
    speaker2id, items = load_hw4(root)
    utts = hw4_utterances(root, items)
    missing = [u.path for u in utts if not u.file.is_file()]
    if missing:
        log.warning("skipped %d missing feature file(s), e.g. %s", len(missing), missing[:3])
        utts = [u for u in utts if u.file.is_file()]
    train, val = split_data(utts, data["split"], seed)
    check_training_set(train)
    if d.main:
        write_split(run_dir / "split.csv", train=train, val=val)
    ignored = AugmentConfig(**cfg["augment"]).waveform_components()
    if ignored:
        log.warning("HW4 features are not audio: ignoring the waveform augmentation settings %s", ignored)
    frames = round(data["crop_seconds"] * cfg["frontend"]["sample_rate"] / HOP_LENGTH)
    dataset = Hw4CropDataset(train, speaker2id, segment_len=frames, seed=seed)
    log.info(
        "training on %d HW4 utterances of %d speakers (%d-frame crops); %d validation utterances",
        len(train),
        len({u.speaker for u in train}),
        frames,
        len(val),
    )
    classes = sorted(speaker2id, key=speaker2id.__getitem__)
    return Prepared(dataset, classes, speaker2id, val, None, {item.feature_path: item.mel_len for item in items})


def prepare_data(cfg: dict, run_dir: Path, d: Dist) -> Prepared:
    """Sources -> split (written to split.csv) -> training crops, validation clips and trials."""
    data, seed = cfg["data"], cfg["seed"]
    if not data["sources"]:
        raise DataError("No data sources: set data.sources in the config (see train/configs/).")
    if not all(source_of(spec).audio for spec in data["sources"]):
        return prepare_hw4(cfg, run_dir, d)
    utts, repeats, held, unlabelled = [], [], [], []
    for spec in data["sources"]:
        if not source_of(spec).labelled:  # never split or held out: it has no speakers to validate on
            unlabelled += [(u, int(spec["repeats"])) for u in source_of(spec).read(spec)]
            continue
        kept, out = load_source(spec, seed)
        utts += kept
        repeats += [int(spec["repeats"])] * len(kept)
        held += out
    train, val = split_data(utts, data["split"], seed)
    check_training_set(train)
    keep = {id(u) for u in train}
    repeats = [r for u, r in zip(utts, repeats) if id(u) in keep]
    if d.main:
        write_split(run_dir / "split.csv", train=train, val=val, holdout=held, unlabelled=[u for u, _ in unlabelled])
    if data["split"]["kind"] == "speaker":  # validation speakers are unseen: verification, not accuracy
        held, val = held + val, []
    labels = label_map(train)
    aug = AugmentConfig(**cfg["augment"])
    speeds = aug.speeds if aug.speeds_as_speakers else []
    names = sorted(labels)
    classes = names + [f"{n}{SPEED_MARK}{s}" for s in speeds for n in names]
    dataset = crop_dataset(cfg, train + [u for u, _ in unlabelled], labels, repeats + [r for _, r in unlabelled])
    val = readable(val)
    log.info(
        "training on %d clips (%d crops/epoch) of %d speakers and %d unlabelled clips; %d validation clips",
        len(train),
        len(dataset),
        len(labels),
        len(unlabelled),
        len(val),
    )
    trials: TrialSet | None = None
    if data["trials"]:
        root = Path(data["trials"]["root"])
        trials = FileTrials(read_trials(Path(data["trials"]["file"]), root), root)
    elif held:
        trials = holdout_trials(held, data["holdout_trials"])
    return Prepared(dataset, classes, labels, val, trials)
