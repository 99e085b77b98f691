"""``python -m train fit | evaluate | calibrate | export | ensemble | predict | push``: see ``--help`` of each.

The command line only: each command's options and work live in its module (``add_arguments`` and
``run``); here they are wired up, and the errors a user can fix become one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from speakerdemo.checkpoint import CheckpointError

from . import calibrate, ensemble, evaluate, export, hub, loop, predict
from .checkpoints import StateError
from .config import ConfigError
from .data import DataError

COMMANDS = {
    "fit": (loop, "train from a YAML config plus overrides"),
    "evaluate": (evaluate, "EER/minDCF on a trial list; identification accuracy"),
    "calibrate": (calibrate, "one threshold for every recording condition, stored in the checkpoint"),
    "export": (export, "the encoder network as model.onnx for ONNX Runtime, checked against torch"),
    "ensemble": (ensemble, "join checkpoints trained apart into one whose score is the mean of theirs"),
    "predict": (predict, "HW4 test set -> Kaggle submission CSV (full-length utterances)"),
    "push": (hub, "checkpoint folder -> Hugging Face Hub repo, with a model card"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, summary) in COMMANDS.items():
        command = sub.add_parser(name, help=summary)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, StateError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
