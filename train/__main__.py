"""``python -m train fit | evaluate | predict | push`` — see ``python -m train <command> --help``."""

from __future__ import annotations

import argparse
import json
import logging
import random
import shlex
import sys
from pathlib import Path

import numpy as np
import torch.distributed
import yaml

from speakerdemo.encoder import SPEED_MARK, SpeakerEncoder
from speakerdemo.gallery import Gallery
from speakerdemo.metrics import compute_eer, compute_min_dcf, top_k_accuracy
from speakerdemo.scoring import Calibration, adaptive_snorm, cosine

from .augment import AugmentConfig, Augmenter, babble_source
from .config import ConfigError, load_config
from .data import (
    AudioStore, CropDataset, DataError, Trial, Utterance, check_training_set, folder_source, k_fold,
    label_map, manifest_source, read_trials, speaker_disjoint_split, utterance_split, voxceleb_list_source,
    write_split,
)
from .hw4 import HOP_LENGTH, N_MELS, Hw4CropDataset, hw4_utterances, load_hw4
from .loop import (
    Dist, Prepared, StateError, atomic_save_pretrained, embed_files, fit, init_distributed, trial_embeddings,
    trial_scores,
)

log = logging.getLogger("train")


# ----------------------------------------------------------------------------- data
def load_source(spec: dict, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """One entry of ``data.sources``: returns (training utterances, held-out speakers' utterances)."""
    kind = spec.get("type", "folder")
    root = Path(spec["root"])
    if kind == "folder":
        utts = folder_source(root)
    elif kind == "manifest":
        utts = manifest_source(Path(spec["manifest"]), root)
    elif kind == "voxceleb":
        utts = voxceleb_list_source(Path(spec["list"]), root)
    else:
        raise DataError(f"Unknown source type {kind!r}; choose folder, manifest, voxceleb or hw4.")
    if spec.get("split"):
        utts = [u for u in utts if u.split == spec["split"]]
    held: list[Utterance] = []
    if spec.get("hold_out_speakers"):
        utts, held = speaker_disjoint_split(utts, int(spec["hold_out_speakers"]), seed)
    return utts, held


def make_trials(utts: list[Utterance], count: int, seed: int) -> list[Trial]:
    """Balanced trials among held-out speakers (half same-speaker pairs), for validation EER."""
    rng = random.Random(seed)
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, []).append(u)
    multi = [s for s, us in by_speaker.items() if len(us) > 1]
    speakers = sorted(by_speaker)
    if not multi or len(speakers) < 2:
        raise DataError("Validation trials need held-out speakers with two or more clips each.")
    trials = []
    for i in range(count):
        if i % 2 == 0:
            a, b = rng.sample(by_speaker[rng.choice(multi)], 2)
            trials.append(Trial(1, str(a.file), str(b.file)))
        else:
            s, t = rng.sample(speakers, 2)
            trials.append(Trial(0, str(rng.choice(by_speaker[s]).file), str(rng.choice(by_speaker[t]).file)))
    return trials


def split_data(utts: list[Utterance], split: dict, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """(train, validation) as ``data.split`` asks."""
    if split["kind"] == "utterance":
        return utterance_split(utts, float(split.get("val_fraction", 0.0)), seed)
    if split["kind"] == "speaker":
        return speaker_disjoint_split(utts, split["val_speakers"], seed)
    if split["kind"] == "kfold":
        return k_fold(utts, int(split["folds"]), int(split["fold"]), seed)
    raise DataError(f"Unknown split kind {split['kind']!r}; choose utterance, speaker or kfold.")


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
        raise DataError(f"HW4 features have {N_MELS} mel bands but frontend.n_mels is {cfg['frontend']['n_mels']}; "
                        "leave frontend empty (the hw4 preset) or set frontend: {preset: hw4}.")
    if data["split"]["kind"] == "speaker" or data.get("trials"):
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
    ignored = sorted(key for key in cfg["augment"] if not key.startswith("spec_"))
    if ignored:
        log.warning("HW4 features are not audio: ignoring the waveform augmentation settings %s", ignored)
    frames = round(data["crop_seconds"] * cfg["frontend"]["sample_rate"] / HOP_LENGTH)
    dataset = Hw4CropDataset(train, speaker2id, segment_len=frames, seed=seed)
    log.info("training on %d HW4 utterances of %d speakers (%d-frame crops); %d validation utterances",
             len(train), len({u.speaker for u in train}), frames, len(val))
    classes = sorted(speaker2id, key=speaker2id.__getitem__)
    return Prepared(dataset, classes, speaker2id, val, None, {item.feature_path: item.mel_len for item in items})


def prepare_data(cfg: dict, run_dir: Path, d: Dist) -> Prepared:
    data, seed = cfg["data"], cfg["seed"]
    if not data["sources"]:
        raise DataError("No data sources: set data.sources in the config (see train/configs/).")
    if any(spec.get("type") == "hw4" for spec in data["sources"]):
        return prepare_hw4(cfg, run_dir, d)
    utts, repeats, held = [], [], []
    for spec in data["sources"]:
        kept, out = load_source(spec, seed)
        utts += kept
        repeats += [int(spec.get("repeats", 1))] * len(kept)
        held += out
    split = data["split"]
    train, val = split_data(utts, split, seed)
    check_training_set(train)
    keep = {id(u) for u in train}
    repeats = [r for u, r in zip(utts, repeats) if id(u) in keep]
    if d.main:
        write_split(run_dir / "split.csv", train=train, val=val, holdout=held)
    val = readable(val)
    labels = label_map(train)
    aug = AugmentConfig(**cfg["augment"])
    speeds = aug.speeds if aug.speeds_as_speakers else []
    names = sorted(labels)
    classes = names + [f"{n}{SPEED_MARK}{s}" for s in speeds for n in names]
    store = AudioStore(train, preload=bool(data.get("preload", True)))
    augmenter = None
    if cfg["augment"]:
        crop = int(max(data["crop_seconds"], cfg["train"].get("long_crop_seconds", 0)) * 16000 * 1.2)
        augmenter = Augmenter(aug, 16000, babble_source(store, train, crop), seed=seed)
    dataset = CropDataset(train, labels, store, data["crop_seconds"], augmenter, repeats,
                          speeds_as_speakers=aug.speeds_as_speakers, seed=seed)
    log.info("training on %d clips (%d crops/epoch) of %d speakers; %d validation clips",
             len(train), len(dataset), len(labels), len(val))
    trials = None
    if data.get("trials"):
        t = data["trials"]
        trials = (read_trials(Path(t["file"]), Path(t["root"])), Path(t["root"]))
    elif split["kind"] == "speaker" and val:
        trials = (make_trials(val, 2000, seed), Path("/"))
    return Prepared(dataset, classes, labels, val if split["kind"] != "speaker" else [], trials)


def readable(utts: list[Utterance]) -> list[Utterance]:
    """The clips whose headers can be read: validation embeds whole clips, and one bad file
    would otherwise end the run at its first validation, possibly hours in."""
    store = AudioStore(utts, preload=False)
    return [u for u in utts if str(u.file) in store.readable]


# ----------------------------------------------------------------------------- commands
def setup_logging(run_dir: Path | None, main: bool = True) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None and main:
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    logging.basicConfig(level=logging.INFO if main else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)


def cmd_fit(args: argparse.Namespace) -> int:
    d = init_distributed()
    if args.resume:
        run_dir = Path(args.resume)
        resolved = run_dir / "config.yaml"
        if not resolved.exists():
            raise SystemExit(f"{run_dir} has no config.yaml: not a run folder to resume.")
        cfg = load_config(resolved, args.set)
    else:
        cfg = load_config(args.config, args.set)
        run_dir = Path(args.run_dir or cfg.get("run_dir") or "runs/latest")
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir, d.main)
    if d.main:
        command = "python -m train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if args.resume and cfg.get("command"):  # config.yaml keeps the command that started the run
            log.info("resumed with: %s", command)
        else:
            cfg["command"] = command
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    data = prepare_data(cfg, run_dir, d)
    fit(cfg, run_dir, data, d, resume=bool(args.resume))
    if d.world > 1:
        torch.distributed.destroy_process_group()
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    setup_logging(None)
    encoder = SpeakerEncoder.from_pretrained(args.checkpoint, device=args.device)
    results: dict = {"checkpoint": str(args.checkpoint)}
    if args.trials:
        trials = read_trials(Path(args.trials), Path(args.root))
        embeddings = trial_embeddings(encoder, trials, Path(args.root))
        scores, labels = trial_scores(encoder, trials, Path(args.root), embeddings)
        results.update(verification_metrics(scores, labels, args.trials))
        if args.cohort:
            normed = snorm_scores(encoder, trials, embeddings, Path(args.cohort), args.cohort_top_n)
            results["snorm"] = verification_metrics(normed, labels, args.trials)
        if args.calibrate:
            encoder.calibration = Calibration.from_scores(scores, labels, trials=trial_list_name(args.trials))
            atomic_save_pretrained(encoder.cpu(), Path(args.checkpoint))
            results["calibration_written"] = str(args.checkpoint)
    if args.identify:
        results["identification"] = identification(encoder, Path(args.identify), args.enroll_per_speaker, args.seed)
    if len(results) == 1:
        raise SystemExit("Nothing to evaluate: give --trials (with --root) and/or --identify.")
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


def trial_list_name(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def verification_metrics(scores: np.ndarray, labels: np.ndarray, trials: str) -> dict:
    eer, threshold = compute_eer(scores, labels)
    return {
        "trials": trial_list_name(trials), "n_trials": int(len(scores)), "eer": eer, "eer_threshold": threshold,
        "min_dcf_0.01": compute_min_dcf(scores, labels, 0.01)[0], "min_dcf_0.05": compute_min_dcf(scores, labels, 0.05)[0],
    }


def snorm_scores(encoder: SpeakerEncoder, trials: list[Trial], emb: dict, cohort_dir: Path, top_n: int) -> np.ndarray:
    """Adaptive s-norm against a cohort folder (one folder per speaker; the mean per speaker)."""
    cohort_utts = folder_source(cohort_dir)
    embs = embed_files(encoder, [u.file for u in cohort_utts], desc="cohort")
    speakers = sorted({u.speaker for u in cohort_utts})
    centres = np.stack([np.mean([e.vector for u, e in zip(cohort_utts, embs) if u.speaker == s], axis=0) for s in speakers])
    a = np.stack([emb[t.a].vector for t in trials])
    b = np.stack([emb[t.b].vector for t in trials])
    raw = np.sum(a * b, axis=1)
    return adaptive_snorm(raw, cosine(a, centres), cosine(b, centres), top_n)


def identification(encoder: SpeakerEncoder, root: Path, per_speaker: int, seed: int) -> dict:
    """Closed-set identification: enrol ``per_speaker`` clips per speaker, identify the rest."""
    utts = folder_source(root)
    rng = random.Random(seed)
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, []).append(u)
    gallery, tests = Gallery(), []
    for speaker, clips in sorted(by_speaker.items()):
        clips = clips[:]
        rng.shuffle(clips)
        if len(clips) <= per_speaker:
            continue
        enrol = embed_files(encoder, [c.file for c in clips[:per_speaker]], desc=f"enrol {speaker}")
        gallery.enroll(speaker, [e.vector for e in enrol])
        tests += [(speaker, c) for c in clips[per_speaker:]]
    if len(gallery) < 2:
        raise DataError(f"Identification needs 2+ speakers with more than {per_speaker} clips each.")
    names = gallery.names()
    centres = np.stack([gallery.centroid(n) for n in names])
    embs = embed_files(encoder, [c.file for _, c in tests], desc="identify")
    scores = cosine(np.stack([e.vector for e in embs]), centres)
    labels = np.array([names.index(s) for s, _ in tests])
    return {"speakers": len(names), "test_clips": len(tests), "enrolment_clips_per_speaker": per_speaker,
            "top1": top_k_accuracy(scores, labels, 1), "top5": top_k_accuracy(scores, labels, min(5, len(names)))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train from a YAML config plus overrides",
                       description="Train a speaker encoder. Every run gets a folder with the resolved config, "
                                   "the split, logs, metrics (jsonl + TensorBoard), curves.png and checkpoints.")
    p.add_argument("--config", type=Path, help="YAML config (see train/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=500 --set encoder.channels=256")
    p.add_argument("--run-dir", help="run folder (default: run_dir from the config, else runs/latest)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="EER/minDCF on a trial list; identification accuracy",
                       description="Embed every file of a trial list at full length and report EER, its threshold "
                                   "and minDCF (p_target 0.01 and 0.05); optionally store the calibration in the "
                                   "checkpoint; optionally closed-set identification on a folder per speaker.")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub repo id")
    p.add_argument("--trials", help="trial list: 'label path1 path2' per line")
    p.add_argument("--root", default=".", help="folder the trial paths are relative to")
    p.add_argument("--cohort", help="folder per speaker used as the adaptive s-norm cohort")
    p.add_argument("--cohort-top-n", type=int, default=100, help="cohort scores kept per side (AS-Norm)")
    p.add_argument("--calibrate", action="store_true",
                   help="store the EER threshold and FAR/FRR curve in the checkpoint's config.json")
    p.add_argument("--identify", help="folder per speaker for closed-set identification accuracy")
    p.add_argument("--enroll-per-speaker", type=int, default=3, help="clips enrolled per speaker (--identify)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--output", help="write the results as JSON here")
    p.set_defaults(func=cmd_evaluate)

    from . import hub, predict  # imported here so that fit/evaluate run without their extras

    p = sub.add_parser("predict", help="HW4 test set -> Kaggle submission CSV (full-length utterances)")
    predict.add_arguments(p)
    p.set_defaults(func=predict.run)

    p = sub.add_parser("push", help="checkpoint folder -> Hugging Face Hub repo, with a model card")
    hub.add_arguments(p)
    p.set_defaults(func=hub.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, StateError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
