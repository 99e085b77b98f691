"""``python -m train ensemble``: join checkpoints trained apart into one checkpoint whose embedding
is their unit embeddings side by side (``speakerdemo.models.ensemble``), so that its cosine score
is the mean of theirs.

The members must share a front end (the same features feed them all) and are copied weight for
weight; the classification heads are left out (each knows its own training classes, and the joined
embedding has none). The result is uncalibrated and not exported: run ``python -m train
calibrate`` and ``python -m train export`` on it, as on any checkpoint.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from speakerdemo.checkpoint import CheckpointError
from speakerdemo.encoder import SpeakerEncoder

from .checkpoints import atomic_save_pretrained
from .logs import setup_logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``ensemble`` sub-command."""
    parser.description = __doc__.split("\n\n")[0].replace("``", "")
    parser.add_argument("members", nargs="+", help="checkpoint folders (or Hub repos) to join, two or more")
    parser.add_argument("--output", required=True, type=Path, help="folder of the joined checkpoint")


def join(members: list[SpeakerEncoder]) -> SpeakerEncoder:
    """One encoder over ``members``' networks, their weights copied; the front end is theirs."""
    if len(members) < 2:
        raise CheckpointError("an ensemble joins two checkpoints or more")
    first = members[0]
    if any(m.frontend.config != first.frontend.config for m in members[1:]):
        raise CheckpointError("the checkpoints have different front ends; an ensemble feeds them the same features")
    if any(m.encoder_config.get("name") == "ensemble" for m in members):
        raise CheckpointError("join plain checkpoints: an ensemble cannot be a member")
    joined = SpeakerEncoder(
        frontend=first.frontend.config.to_dict(),
        encoder={"name": "ensemble", "members": [m.encoder_config for m in members]},
        window_seconds=min(m.window_seconds for m in members),
    )
    for target, member in zip(joined.model.members, members, strict=True):
        target.load_state_dict(member.model.state_dict())
    return joined.eval()


def run(args: argparse.Namespace) -> int:
    """Run ``ensemble``: load the members (torch), join them, write the folder atomically."""
    setup_logging(None)
    members = [SpeakerEncoder.from_pretrained(m, device="cpu", backend="torch") for m in args.members]
    joined = join(members)
    atomic_save_pretrained(joined, args.output)
    log.info(
        "joined %d checkpoints into %s (embedding %d-d); next: python -m train calibrate, python -m train export",
        len(members),
        args.output,
        joined.model.embed_dim,
    )
    return 0
