"""Run configuration: defaults, YAML files, ``--set key.sub=value`` overrides, and early checks.

The checks run before any data is read, so that a misspelt encoder name costs a second, not the
minutes a large data set takes to preload.
"""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path
from typing import Any

import yaml

from speakerdemo.features import frontend_config
from speakerdemo.losses import HEADS
from speakerdemo.models import ENCODERS

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "multistep", "exponential", "plateau", "cyclic")
# Sections that pick a component by ``name``: the defaults' other keys belong to the default
# component, so a file that names another one replaces the section instead of merging into it.
NAMED_SECTIONS = ("encoder", "head", "optim", "schedule")

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
        "long_crop_seconds": 0.0, "long_crop_from": 1.0, "init_from": None,
    },
}


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the accepted values."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 exponent floats: PyYAML reads ``1e-3`` and ``1.5e3`` (no dot, or no exponent sign)
    as strings, which would reach the optimizer as ``lr="1e-3"``."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Safe YAML (plain data only), with the exponent floats above."""
    return yaml.load(text, Loader=_Loader)


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def merge_file(cfg: dict, loaded: dict) -> dict:
    """``deep_merge``, except that a named section naming another component replaces the default."""
    loaded = dict(loaded)
    replaced = {}
    for section in NAMED_SECTIONS:
        value = loaded.get(section)
        if isinstance(value, dict) and value.get("name", cfg[section]["name"]) != cfg[section]["name"]:
            replaced[section] = loaded.pop(section)
    return {**deep_merge(cfg, loaded), **replaced}


def apply_override(cfg: dict, assignment: str) -> None:
    """``train.steps=500`` or ``encoder.channels=256``: the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"Override {assignment!r} must look like key.sub=value.")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Override {assignment!r}: {key} is not a section.")
    node[keys[-1]] = parse_yaml(raw)


def _options(component: type, supplied: tuple[str, ...]) -> set[str]:
    """Keyword arguments a component's constructor takes from the config (not those the code supplies)."""
    return set(inspect.signature(component.__init__).parameters) - {"self", *supplied}


def _check_component(cfg: dict, section: str, registry: dict[str, type], supplied: tuple[str, ...],
                     extra: tuple[str, ...] = ()) -> None:
    """Known name, and only options the named component accepts (instead of a TypeError deep in training)."""
    spec = cfg[section]
    name = spec.get("name")
    if name not in registry:
        raise ConfigError(f"Unknown {section} {name!r}; choose one of {sorted(registry)}.")
    accepted = _options(registry[name], supplied) | set(extra)
    unknown = sorted(set(spec) - {"name"} - accepted)
    if unknown:
        raise ConfigError(f"{section} option(s) {unknown} do not apply to {name}; it takes {sorted(accepted)}. "
                          f"To switch {section}, replace the whole section: --set '{section}={{name: ...}}'.")


def check_config(cfg: dict) -> None:
    """Names and options of the model parts, optimizer and schedule."""
    _check_component(cfg, "encoder", ENCODERS, ("n_mels",), extra=("preset",))
    if cfg["head"]:
        _check_component(cfg, "head", HEADS, ("embed_dim", "n_classes"))
    if cfg["optim"].get("name", "adamw") not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {cfg['optim']['name']!r}; choose one of {list(OPTIMIZERS)}.")
    if cfg["schedule"].get("name", "cosine") not in SCHEDULES:
        raise ConfigError(f"Unknown schedule {cfg['schedule']['name']!r}; choose one of {list(SCHEDULES)}.")
    init_from = cfg["train"].get("init_from")
    if init_from and not (Path(init_from) / "config.json").is_file():
        raise ConfigError(f"train.init_from: {init_from} is not a checkpoint folder (no config.json in it).")


def resolve_frontend(cfg: dict) -> None:
    """Expand ``frontend`` into every front-end setting, so config.yaml records the features exactly.

    ``frontend.preset`` picks a speakerdemo preset that the other keys override. HW4 feature
    sources default to the ``hw4`` preset: their features were made with it, and a checkpoint that
    records it also classifies raw audio the way the features were computed.
    """
    settings = dict(cfg["frontend"])
    hw4 = any(spec.get("type") == "hw4" for spec in cfg["data"]["sources"])
    preset = settings.pop("preset", "hw4" if hw4 else "default")
    try:
        cfg["frontend"] = frontend_config(preset, **settings).to_dict()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"frontend: {err}") from err


def load_config(path: Path | None, overrides: list[str]) -> dict:
    """Defaults, then the YAML file, then ``--set`` overrides in order; checked and resolved."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        loaded = parse_yaml(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a YAML mapping.")
        cfg = merge_file(cfg, loaded)
    for assignment in overrides:
        apply_override(cfg, assignment)
    check_config(cfg)
    resolve_frontend(cfg)
    return cfg
