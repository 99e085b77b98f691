"""What a run writes to disk and reads back: Hub-format checkpoints (``model/``, ``best/``), the
resumable training state (``state.pt``), and the checkpoint a fine-tuning run starts from.

Every write is atomic (a crash leaves the old file or folder, or the new one, never a torn one),
and a training state is loaded with ``weights_only=True``: nothing in it is executed.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speakerdemo.atomic import atomic_write, fsync_dir
from speakerdemo.checkpoint import CheckpointError
from speakerdemo.encoder import SpeakerEncoder

log = logging.getLogger("train")

STATE_FILE = "state.pt"
DOCUMENTS = ("README.md", "EXPERIMENTS.md")  # a checkpoint folder's hand-written files


class StateError(ValueError):
    """A training state that cannot be resumed from (damaged, foreign, or of another model)."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """A training state written atomically: a crash leaves the old state or the new one."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_save_pretrained(model: SpeakerEncoder, folder: Path) -> None:
    """Save a Hub-format checkpoint into a fresh folder and swap it in with one rename.

    The documents already in the folder (``DOCUMENTS``: the model card and its experiments file) are
    carried over: they are written by hand or by ``push``, not by ``save_pretrained``, and
    ``calibrate`` or ``export`` rewriting a shipped checkpoint must not lose them.
    """
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for name in DOCUMENTS:
        if (folder / name).is_file():
            (tmp / name).write_bytes((folder / name).read_bytes())
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(folder.parent)


def training_state(model: nn.Module, opt: Any, sched: Any, scaler: Any, progress: dict) -> dict:
    """Everything a resumed run needs to continue bit for bit, RNG states included (dropout and
    SpecAugment draw from the global generators)."""
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "progress": progress,
    }


def restore_state(path: Path, model: nn.Module, opt: Any, sched: Any, scaler: Any) -> dict:
    """Load a training state into the run's objects and return its progress.

    Anything but tensors and plain containers (a pickle of other objects, a damaged file) or a
    state of another configuration is a StateError naming the file; nothing in it is executed.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise StateError(
            f"{path} is not a readable training state (only tensors and plain containers "
            f"are loaded): {str(err).splitlines()[0]}"
        ) from err
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["progress"]
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise StateError(f"{path} does not fit this run's model and optimizer: {str(err).splitlines()[0]}") from err


def init_from_checkpoint(encoder: SpeakerEncoder, folder: Path) -> None:
    """Fine-tuning: start from a trained checkpoint's weights instead of a random initialisation.

    The encoder must have the same architecture. The classification head is taken over only when
    the checkpoint was trained on exactly these classes in this order (a row of the head is a
    speaker's centre, so a head from other speakers would be a wrong start, not a head start);
    otherwise it starts fresh. The run's own ``frontend``/``encoder`` settings must match the
    checkpoint's: a mismatch is refused, not silently half-loaded.
    """
    try:
        source = SpeakerEncoder.from_pretrained(folder, device="cpu", backend="torch")
    except CheckpointError as err:
        raise StateError(f"train.init_from: {err}") from err
    if source.frontend.config != encoder.frontend.config or source.encoder_config != encoder.encoder_config:
        raise StateError(
            f"train.init_from: {folder} has another front end or encoder than this run "
            f"({source.encoder_config} vs {encoder.encoder_config}); copy its settings into the config."
        )
    encoder.frontend.load_state_dict(source.frontend.state_dict())
    encoder.model.load_state_dict(source.model.state_dict())
    same_head = source.classes == encoder.classes and (source.head_config or {}).get("name") == (
        encoder.head_config or {}
    ).get("name")
    if same_head:
        encoder.head.load_state_dict(source.head.state_dict())
    log.info("initialised from %s (%s)", folder, "encoder and head" if same_head else "encoder; new head")
