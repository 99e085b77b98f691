"""Run configuration: the one place every setting gets its default, YAML files, ``--set key.sub=value``
overrides, and early checks.

``load_config`` resolves a run's settings completely: every setting the training code reads is in
its result, so the code never falls back to a default of its own and config.yaml in the run folder
records every value a run used. The checks run before any data is read, so that a misspelt setting
costs a second, not the minutes a large data set takes to preload.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.features import frontend_config
from speakerdemo.losses import HEADS
from speakerdemo.models import ENCODERS

from . import optim
from .distill import TEACHERS
from .sources import DEFAULT_SOURCE_TYPE, SOURCES, source_of


@dataclass(frozen=True)
class Choice:
    """A component that a config section picks by ``name``: the function that builds it and the
    defaults of its options. The options are the function's keyword-only parameters; one without a
    default here must be given in the config."""

    build: Callable[..., Any]
    defaults: dict[str, Any]

    @property
    def options(self) -> list[str]:
        parameters = inspect.signature(self.build).parameters.values()
        return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


OPTIMIZERS: dict[str, Choice] = {
    "adamw": Choice(optim.adamw, {"lr": 1e-3, "weight_decay": 2e-5}),
    "sgd": Choice(optim.sgd, {"momentum": 0.9, "weight_decay": 1e-4}),
}
SCHEDULES: dict[str, Choice] = {
    "cosine": Choice(optim.cosine, {"warmup_steps": 200, "min_lr_ratio": 0.0}),
    "step": Choice(optim.step, {"gamma": 0.5}),
    "multistep": Choice(optim.multistep, {"gamma": 0.1}),
    "exponential": Choice(optim.exponential, {}),
    "plateau": Choice(optim.plateau, {"gamma": 0.5, "patience": 2}),
    "cyclic": Choice(optim.cyclic, {"base_lr": None, "step_size_up": 2000}),
}
# Sections that pick a component by ``name``: the defaults' other keys belong to the default
# component, so a file that names another one replaces the section instead of merging into it.
# Encoder and head options default in their speakerdemo constructors (checkpoints record them).
NAMED_SECTIONS = ("encoder", "head", "optim", "schedule")

BEST_METRICS = ("val_eer", "val_accuracy")

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": None,  # None: CUDA when available
    "run_dir": "runs/latest",  # --run-dir overrides it
    "command": None,  # the command line that started the run, written by ``fit``
    "data": {
        "sources": [],  # entries as train.sources.SOURCES describes
        "preload": True,  # decoded clips held in memory (int16)
        "split": {"kind": "utterance", "val_fraction": 0.0, "val_speakers": 0, "folds": 5, "fold": 0},
        "trials": None,  # {file, root}: a trial list for the validation EER
        # Without a trial list, the validation EER is measured on every pair of these segments of the
        # held-out speakers' clips (hold_out_speakers of a source, or the speakers of a speaker split).
        "holdout_trials": {"segment_seconds": 3.0, "segments_per_speaker": 4},
        "crop_seconds": 2.0,
    },
    "frontend": {},  # speakerdemo.features.frontend_config: a preset plus settings
    "encoder": {"name": "ecapa_tdnn", "channels": 512},
    "head": {"name": "aam_softmax", "scale": 30.0, "margin": 0.2},
    # Each augmentation component is off unless the recipe switches it on with its own setting (see
    # train.augment.AugmentConfig); prob, reverb_prob, speed_prob and spec_prob only parameterise one.
    "augment": {
        "noise_dir": None,
        "coloured_noise": False,
        "babble": False,
        "rir_dir": None,
        "simulated_rirs": 0,
        "prob": 0.6,
        "reverb_prob": 0.5,
        "speeds": [],
        "speed_prob": 0.3,
        "speeds_as_speakers": False,
        "telephone_prob": 0.0,
        "gain_db": 0.0,
        "spec_freq_mask": 0,
        "spec_time_mask": 0,
        "spec_prob": 0.6,
    },
    # Knowledge distillation (train.distill): off unless a teacher is named. The weights scale the
    # cosine and batch-similarity losses added to the head's classification loss.
    "distill": {"teacher": None, "cosine_weight": 1.0, "similarity_weight": 1.0},
    "optim": {"name": "adamw"},  # and OPTIMIZERS' defaults for the named one
    "schedule": {"name": "cosine"},  # and SCHEDULES' defaults for the named one
    "train": {
        "steps": 1000,
        "batch_size": 64,  # per process
        "num_workers": 2,  # DataLoader workers; waveform augmentation runs in them
        "amp": "bf16",  # autocast on CUDA: bf16, or fp16 with a GradScaler; anything else runs fp32
        "grad_clip": 5.0,
        "compile": False,  # torch.compile the encoder
        "log_every": 10,
        "validate_every": 500,
        "checkpoint_every": 250,  # training state (state.pt) for --resume
        "best_metric": "val_eer",  # what picks best/: EER on held-out speakers, or val_accuracy
        "long_crop_seconds": 0.0,  # longer crops late in training (0: never) ...
        "long_crop_from": 1.0,  # ... from this fraction of the steps on
        "init_from": None,  # a checkpoint folder to fine-tune
    },
}
# Sections whose settings are all listed in DEFAULTS: unknown keys are refused, missing ones filled.
FIXED_SECTIONS = ("data", "augment", "distill", "train")
# Settings that moved, by their old name: refused with the new name, so an old recipe or run folder
# fails at once instead of training without them.
MOVED = {
    "train.margin_warmup_start": "head.margin_warmup_start",  # the head schedules its own margin
    "train.margin_warmup_steps": "head.margin_warmup_steps",
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


def options(section: dict) -> dict[str, Any]:
    """A named section's options: everything but its ``name``."""
    return {key: value for key, value in section.items() if key != "name"}


def build(registry: dict[str, Choice], section: dict, *supplied: Any) -> Any:
    """The component a resolved section names, from what the code supplies and the section's options."""
    return registry[section["name"]].build(*supplied, **options(section))


# ----------------------------------------------------------------------------- checks and defaults
def _settings(section: Any, defaults: dict, where: str) -> dict:
    """``section`` with its missing settings taken from ``defaults`` (at every depth); misspelt
    settings are refused, since they would otherwise be ignored without a word."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping, not {section!r}.")
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise ConfigError(
            f"Unknown setting(s) {[f'{where}.{key}' for key in unknown]}; {where} takes {sorted(defaults)}."
        )
    out = {}
    for key, default in defaults.items():  # in the order of DEFAULTS, so config.yaml reads the same every run
        if key not in section:
            out[key] = copy.deepcopy(default)
        elif isinstance(default, dict):
            out[key] = _settings(section[key], default, f"{where}.{key}")
        else:
            out[key] = section[key]
    return out


def source_settings(spec: Any) -> dict:
    """One ``data.sources`` entry, checked, with the defaults of its type filled in."""
    if not isinstance(spec, dict):
        raise ConfigError(f"A data.sources entry must be a mapping such as {{type: folder, root: DIR}}, not {spec!r}.")
    kind = spec.get("type", DEFAULT_SOURCE_TYPE)
    if kind not in SOURCES:
        raise ConfigError(f"Unknown source type {kind!r}; choose one of {list(SOURCES)}.")
    source = SOURCES[kind]
    missing = [key for key in source.required if key not in spec]
    if missing:
        raise ConfigError(f"A {kind} source needs {missing}: {spec}.")
    unknown = sorted(set(spec) - {"type", *source.options})
    if unknown:
        raise ConfigError(f"Source option(s) {unknown} do not apply to a {kind} source; it takes {source.options}.")
    return {"type": kind, **copy.deepcopy(source.defaults), **spec}


def _named(cfg: dict, section: str, label: str, names: list[str]) -> str:
    """The component name of a named section, refused unless it is one of ``names``."""
    spec = cfg[section]
    if not isinstance(spec, dict):
        raise ConfigError(f"{section} must be a mapping with a name, not {spec!r}.")
    name = spec.get("name")
    if name not in names:
        raise ConfigError(f"Unknown {label} {name!r}; choose one of {names}.")
    return name


def _check_options(cfg: dict, section: str, name: str, accepted: set[str]) -> None:
    """Only options the named component takes (instead of a TypeError deep in training)."""
    unknown = sorted(set(options(cfg[section])) - accepted)
    if unknown:
        raise ConfigError(
            f"{section} option(s) {unknown} do not apply to {name}; it takes {sorted(accepted)}. "
            f"To switch {section}, replace the whole section: --set '{section}={{name: ...}}'."
        )


def _check_model_part(
    cfg: dict, section: str, registry: dict[str, type], supplied: tuple[str, ...], extra: tuple[str, ...] = ()
) -> None:
    """Encoder and head: a known name, and options their constructor takes from the config."""
    name = _named(cfg, section, section, sorted(registry))
    accepted = constructor_options(registry[name]) - {*supplied}
    _check_options(cfg, section, name, accepted | set(extra))


def constructor_options(cls: type) -> set[str]:
    """The named arguments ``cls(...)`` takes, following ``**options`` that its constructor passes
    on to a base class's (a head that adds one option to its base's keeps one list of the rest)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names - {"self"}


def _resolve_choice(cfg: dict, section: str, label: str, registry: dict[str, Choice]) -> None:
    """Optimizer and schedule: a known name, known options, the required ones given, defaults filled in."""
    name = _named(cfg, section, label, list(registry))
    choice = registry[name]
    _check_options(cfg, section, name, set(choice.options))
    resolved = {"name": name, **copy.deepcopy(choice.defaults), **options(cfg[section])}
    missing = [key for key in choice.options if key not in resolved]
    if missing:
        raise ConfigError(f"{label} {name} needs {missing}, e.g. --set {section}.{missing[0]}=...")
    cfg[section] = resolved


def resolve_frontend(cfg: dict) -> None:
    """Expand ``frontend`` into every front-end setting, so config.yaml records the features exactly.

    ``frontend.preset`` picks a speakerdemo preset that the other keys override. Feature sources
    (HW4) default to the preset their features were made with: a checkpoint that records it also
    classifies raw audio the way the features were computed.
    """
    settings = dict(cfg["frontend"])
    made_with = [source_of(spec).feature_preset for spec in cfg["data"]["sources"] if not source_of(spec).audio]
    preset = settings.pop("preset", made_with[0] if made_with else "default")
    try:
        cfg["frontend"] = frontend_config(preset, **settings).to_dict()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"frontend: {err}") from err
    if cfg["frontend"]["sample_rate"] != SAMPLE_RATE:
        raise ConfigError(
            f"frontend.sample_rate {cfg['frontend']['sample_rate']}: training reads audio at {SAMPLE_RATE} Hz, "
            "the rate every speakerdemo model hears (8 kHz audio is resampled; see augment.telephone_prob)."
        )


def _refuse_moved(cfg: dict) -> None:
    """A setting given under its old name (``MOVED``) is refused with its new one."""
    for old, new in MOVED.items():
        section, key = old.split(".")
        if isinstance(cfg.get(section), dict) and key in cfg[section]:
            raise ConfigError(f"{old} has moved: set {new} instead (--set {new}={cfg[section][key]!r}).")


def resolve(cfg: dict) -> dict:
    """Check a merged config and fill in every default: the settings a run uses, all of them."""
    _refuse_moved(cfg)
    for key, default in DEFAULTS.items():
        if key not in cfg:
            cfg[key] = copy.deepcopy(default)
        elif key in FIXED_SECTIONS:
            cfg[key] = _settings(cfg[key], default, key)
    cfg["data"]["sources"] = [source_settings(spec) for spec in cfg["data"]["sources"]]
    trials = cfg["data"]["trials"]
    if trials is not None and not (isinstance(trials, dict) and {"file", "root"} <= set(trials)):
        raise ConfigError(
            f"data.trials must name the list and its root, {{file: TRIALS.txt, root: DIR}}; not {trials!r}."
        )
    _check_model_part(cfg, "encoder", ENCODERS, ("n_mels",), extra=("preset",))
    if cfg["head"]:
        _check_model_part(cfg, "head", HEADS, ("embed_dim", "n_classes"))
    _resolve_choice(cfg, "optim", "optimizer", OPTIMIZERS)
    _resolve_choice(cfg, "schedule", "schedule", SCHEDULES)
    if cfg["train"]["best_metric"] not in BEST_METRICS:
        raise ConfigError(f"train.best_metric {cfg['train']['best_metric']!r}: choose one of {list(BEST_METRICS)}.")
    teacher = cfg["distill"]["teacher"]
    sources = [source_of(spec) for spec in cfg["data"]["sources"]]
    if teacher is None and not all(source.labelled for source in sources):
        raise ConfigError("An unlabelled source teaches only through distillation: set distill.teacher.")
    if teacher is not None:
        if teacher not in TEACHERS:
            raise ConfigError(f"Unknown distill.teacher {teacher!r}; choose one of {sorted(TEACHERS)}, or null (off).")
        if not all(source.audio for source in sources):
            raise ConfigError("distill.teacher needs audio: HW4 sources are features the teacher cannot hear.")
    init_from = cfg["train"]["init_from"]
    if init_from and not (Path(init_from) / "config.json").is_file():
        raise ConfigError(f"train.init_from: {init_from} is not a checkpoint folder (no config.json in it).")
    resolve_frontend(cfg)
    return cfg


def load_config(path: Path | None, overrides: list[str]) -> dict:
    """Defaults, then the YAML file, then ``--set`` overrides in order; checked and fully resolved."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        loaded = parse_yaml(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a YAML mapping.")
        cfg = merge_file(cfg, loaded)
    for assignment in overrides:
        apply_override(cfg, assignment)
    return resolve(cfg)
