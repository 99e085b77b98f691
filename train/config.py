"""Run configuration: defaults, YAML files, ``--set key.sub=value`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": None,
    "data": {
        "sources": [],
        "preload": True,
        "split": {"kind": "utterance", "val_fraction": 0.0, "val_speakers": 0, "folds": 5, "fold": 0},
        "trials": None,
        "crop_seconds": 2.0,
    },
    "frontend": {},
    "encoder": {"name": "ecapa_tdnn", "channels": 512},
    "head": {"name": "aam_softmax", "scale": 30.0, "margin": 0.2},
    "augment": {},
    "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 2e-5},
    "schedule": {"name": "cosine", "warmup_steps": 200},
    "train": {
        "steps": 1000, "batch_size": 64, "num_workers": 2, "amp": "bf16", "grad_clip": 5.0,
        "compile": False, "log_every": 10, "validate_every": 500, "checkpoint_every": 250,
        "best_metric": "val_eer", "margin_warmup_start": 0, "margin_warmup_steps": 0,
        "long_crop_seconds": 0.0, "long_crop_from": 1.0,
    },
}


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_override(cfg: dict, assignment: str) -> None:
    """``train.steps=500`` or ``encoder.channels=256``: the value is parsed as YAML."""
    if "=" not in assignment:
        raise ValueError(f"Override {assignment!r} must look like key.sub=value.")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"Override {assignment!r}: {key} is not a section.")
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(path: Path | None, overrides: list[str]) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a YAML mapping.")
        cfg = deep_merge(cfg, loaded)
    for assignment in overrides:
        apply_override(cfg, assignment)
    return cfg
