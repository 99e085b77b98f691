"""``python -m train predict``: the HW4 Kaggle test set -> ``Id,Category`` submission CSV.

Every test utterance is classified at its FULL length (``train.hw4.predicted_classes``): batched
by length and padded, with a mask that keeps the padding out of the pooling.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path

from speakerdemo.atomic import atomic_write_text
from speakerdemo.checkpoint import CheckpointError
from speakerdemo.encoder import SpeakerEncoder

from .data import DataError
from .hw4 import N_MELS, load_hw4_test, load_speaker2id, predicted_classes

CSV_HEADER = ("Id", "Category")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``predict`` sub-command."""
    parser.description = (
        "Classify every utterance of a HW4 test set (testdata.json) at full length with a checkpoint "
        "trained on the HW4 speakers, and write the Kaggle submission CSV (Id,Category)."
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH_OR_REPO",
        help="checkpoint folder or Hub repo id; it must have a classification head whose "
        "classes are the HW4 speaker ids of mapping.json",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DIR",
        help="HW4 folder holding testdata.json, mapping.json and the uttr-*.pt feature files",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("submission.csv"),
        metavar="FILE.csv",
        help="submission CSV to write, replaced atomically (default: submission.csv)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="utterances per forward pass; they are grouped by length, so padding stays small (default: 32)",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    """Run ``predict``; checkpoint, data and output problems are reported as one line, exit status 2."""
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        encoder = SpeakerEncoder.from_pretrained(args.checkpoint, device=args.device)
        rows = predict(encoder, args.data, args.batch_size)
        write_submission(args.output, rows)
    except (CheckpointError, DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} predictions to {args.output}")
    return 0


def check_classifier(encoder: SpeakerEncoder, speaker2id: dict[str, int]) -> list[str]:
    """The checkpoint's class names, once it is known to classify HW4 speakers from HW4 features."""
    if encoder.head is None or not encoder.classes:
        raise CheckpointError("this checkpoint has no classifier: predict needs one trained on the HW4 speakers")
    n_mels = encoder.frontend.config.n_mels
    if n_mels != N_MELS:
        raise CheckpointError(
            f"this checkpoint expects {n_mels} mel bands but the HW4 features have {N_MELS}: "
            "predict needs a model trained on the HW4 features"
        )
    unknown = [name for name in encoder.classes if name not in speaker2id]
    if unknown:
        raise CheckpointError(
            f"this checkpoint's classes are not HW4 speaker ids (e.g. {unknown[:3]} are not in "
            "mapping.json): predict needs a model trained on the HW4 speakers"
        )
    return list(encoder.classes)


def predict(encoder: SpeakerEncoder, root: Path, batch_size: int = 32) -> list[tuple[str, str]]:
    """(Id, Category) per test utterance of the HW4 folder ``root``, in testdata.json order."""
    root = Path(root)
    items = load_hw4_test(root)
    classes = check_classifier(encoder, load_speaker2id(root))
    encoder.eval()
    predicted = predicted_classes(encoder, root, items, batch_size, progress=True)
    return [(item.feature_path, classes[k]) for item, k in zip(items, predicted)]


def write_submission(path: Path, rows: Sequence[tuple[str, str]]) -> None:
    """The Kaggle CSV, written whole or not at all (an interrupted run leaves the old file)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    atomic_write_text(Path(path), text.getvalue())
