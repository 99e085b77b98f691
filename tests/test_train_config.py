"""train/config.py: overrides, named sections, early checks, and DEFAULTS (with the option defaults of
OPTIMIZERS and SCHEDULES) as the only defaults the training code knows."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import write_voices
from train_helpers import SHIPPED_CHECKPOINT_AUGMENT, fit_settings, logging_restored

from speakerdemo.losses import build_head
from speakerdemo.models import ENCODERS
from train.augment import AugmentConfig
from train.config import (
    DEFAULTS,
    FIXED_SECTIONS,
    OPTIMIZERS,
    SCHEDULES,
    ConfigError,
    apply_override,
    load_config,
    options,
)
from train.distributed import Dist
from train.loop import fit
from train.prepare import prepare_data

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "train" / "configs"
SHIPPED = REPO / "checkpoints" / "ecapa-speechocean"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


def test_set_overrides_are_parsed_as_yaml() -> None:
    cfg = load_config(
        None,
        [
            "train.steps=500",
            "augment.speeds=[0.9, 1.1]",
            "data.preload=false",
            "encoder.channels=256",
            "schedule.min_lr_ratio=2e-2",
            "data.split.kind=speaker",
            "new.section.key=text",
        ],
    )
    assert cfg["train"]["steps"] == 500 and cfg["augment"]["speeds"] == [0.9, 1.1]
    assert cfg["data"]["preload"] is False and cfg["encoder"] == {"name": "ecapa_tdnn", "channels": 256}
    assert cfg["schedule"]["min_lr_ratio"] == 0.02 and cfg["data"]["split"]["kind"] == "speaker"
    assert cfg["data"]["split"]["val_fraction"] == 0.0 and cfg["new"] == {"section": {"key": "text"}}
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_override(cfg, "train.steps")


def test_a_file_naming_another_component_does_not_inherit_the_defaults_options(tmp_path: Path) -> None:
    """...but gets the defaults of the component it names, which config.yaml then records."""
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {"encoder": {"name": "conformer", "dim": 32}, "head": {"margin": 0.3}, "optim": {"name": "sgd", "lr": 0.1}}
        )
    )
    cfg = load_config(path, [])
    assert cfg["encoder"] == {"name": "conformer", "dim": 32}
    assert cfg["head"] == {"name": "aam_softmax", "scale": 30.0, "margin": 0.3}
    assert cfg["optim"] == {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "lr": 0.1}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("encoder.name=resnet", re.escape(f"Unknown encoder 'resnet'; choose one of {sorted(ENCODERS)}")),
        ("head.name=arcface", "Unknown head 'arcface'; choose one of \\['aam_softmax', 'am_softmax', 'softmax'\\]"),
        ("schedule.name=linear", "Unknown schedule 'linear'; choose one of \\['cosine', 'step'"),
        ("optim.name=adam", "Unknown optimizer 'adam'"),
        ("encoder.name=conformer", "encoder option\\(s\\) \\['channels'\\] do not apply to conformer"),
        ("frontend.n_mel=40", "frontend: .*n_mel"),
    ],
)
def test_unknown_names_are_a_clear_value_error(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.validate_evry=10", "Unknown setting\\(s\\) \\['train.validate_evry'\\]; train takes"),
        ("augment={noise: 0.5}", "Unknown setting\\(s\\) \\['augment.noise'\\]"),
        ("data.split={kind: speaker, val_speaker: 3}", "\\['data.split.val_speaker'\\]"),
        ("schedule={name: step}", "schedule step needs \\['step_size'\\]"),
        ("optim={name: sgd, lr: 0.1, betas: [0.9, 0.99]}", "optim option\\(s\\) \\['betas'\\] do not apply to sgd"),
        ("data.sources=[{root: x, hold_out: 3}]", "\\['hold_out'\\] do not apply to a folder source"),
        ("data.sources=[{type: manifest, root: x}]", "A manifest source needs \\['manifest'\\]"),
        ("data.sources=[{type: sphere, root: x}]", "Unknown source type 'sphere'"),
        ("data.sources=[{type: kaldi, root: x, wav_scp: x/wav.scp}]", "\\['wav_scp'\\] do not apply to a kaldi source"),
        ("train.margin_warmup_start=200", "train.margin_warmup_start has moved: set head.margin_warmup_start instead"),
        ("train.margin_warmup_steps=800", "train.margin_warmup_steps has moved: set head.margin_warmup_steps instead"),
        (
            "head={name: softmax, margin_warmup_steps: 800}",
            "head option\\(s\\) \\['margin_warmup_steps'\\] do not apply to softmax",
        ),
        ("train.best_metric=accuracy", "train.best_metric 'accuracy'"),
        ("frontend.sample_rate=8000", "frontend.sample_rate 8000: training reads audio at 16000 Hz"),
    ],
)
def test_misspelt_or_missing_settings_are_refused_before_any_data_is_read(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


# ----------------------------------------------------------------------------- one source of truth
def test_defaults_in_config_are_the_only_defaults() -> None:
    """AugmentConfig and the optimizer and schedule functions take every value from the resolved
    config: none of them has a default of its own, and every setting they take has one there (or
    is required)."""
    fields = dataclasses.fields(AugmentConfig)
    assert [f.name for f in fields if f.default is not dataclasses.MISSING] == []
    assert {f.name for f in fields} == set(DEFAULTS["augment"])
    for registry in (OPTIMIZERS, SCHEDULES):
        for name, choice in registry.items():
            keywords = [p for p in inspect.signature(choice.build).parameters.values() if p.kind is p.KEYWORD_ONLY]
            assert [p.name for p in keywords if p.default is not p.empty] == [], name
            assert set(choice.defaults) <= set(choice.options), name


def test_the_resolved_config_records_every_setting() -> None:
    cfg = load_config(
        None,
        [
            "augment={gain_db: 3.0}",
            "data.split={kind: kfold}",
            "schedule={name: plateau}",
            "data.sources=[{type: manifest, root: r, manifest: m.csv}]",
        ],
    )
    for section in FIXED_SECTIONS:
        assert list(cfg[section]) == list(DEFAULTS[section]), section
    assert cfg["augment"] == {**DEFAULTS["augment"], "gain_db": 3.0}
    assert cfg["data"]["split"] == {**DEFAULTS["data"]["split"], "kind": "kfold"}
    assert cfg["optim"] == {"name": "adamw", "lr": 1e-3, "weight_decay": 2e-5}
    assert cfg["schedule"] == {"name": "plateau", "gamma": 0.5, "patience": 2}
    assert cfg["data"]["sources"] == [
        {"type": "manifest", "split": None, "hold_out_speakers": 0, "repeats": 1, "root": "r", "manifest": "m.csv"}
    ]
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg


@pytest.mark.parametrize(
    "missing",
    [("train", "validate_every"), ("train", "checkpoint_every"), ("augment", "spec_prob"), ("optim", "weight_decay")],
)
def test_training_reads_the_resolved_config_without_fallbacks(tmp_path: Path, missing: tuple[str, str]) -> None:
    """A setting taken out of a resolved config is an error, not a silent second default."""
    write_voices(tmp_path / "data", ["alice", "bob"], clips=2)
    settings = fit_settings([{"type": "folder", "root": str(tmp_path / "data")}], "ecapa_tdnn", steps=1, batch_size=2)
    cfg = load_config(None, [value for flag, value in zip(settings[::2], settings[1::2]) if flag == "--set"])
    section, key = missing
    del cfg[section][key]
    with pytest.raises((KeyError, TypeError), match=key):
        fit(cfg, tmp_path, prepare_data(cfg, tmp_path, Dist()), Dist())


# ----------------------------------------------------------------------------- recipe files
@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_recipe_file_resolves_and_picks_best_by_the_held_out_eer(recipe: str) -> None:
    cfg = load_config(RECIPES / recipe, ["train.init_from=null"])
    assert cfg["train"]["best_metric"] == "val_eer"
    assert any(source["hold_out_speakers"] for source in cfg["data"]["sources"])


def test_the_recipes_warm_the_margin_up_in_the_head() -> None:
    """0 until step 200, then linear to 0.2 over 800 steps, as when train.margin_warmup_* held it."""
    cfg = load_config(RECIPES / "ecapa-speechocean.yaml", [])
    head = build_head(cfg["head"]["name"], 8, 3, **options(cfg["head"]))
    steps = (0, 199, 200, 400, 600, 1000, 2599)
    assert [head.margin_at(step) for step in steps] == pytest.approx([0.0, 0.0, 0.0, 0.05, 0.1, 0.2, 0.2])


def test_the_shipped_checkpoint_recipe_file_is_the_old_command() -> None:
    """``--config train/configs/ecapa-speechocean.yaml`` with no --set asks for what the shipped
    checkpoint's seven-field command asked for: the same settings, no augmentation, the same model."""
    recipe = load_config(RECIPES / "ecapa-speechocean.yaml", [])
    old = load_config(RECIPES / "ecapa_speechocean_augmented.yaml", [SHIPPED_CHECKPOINT_AUGMENT])
    assert recipe["run_dir"] == "runs/ecapa-speechocean"
    differing = sorted(key for key in recipe if recipe[key] != old[key])
    assert differing == ["augment", "run_dir"]
    for cfg in (recipe, old):
        augment = AugmentConfig(**cfg["augment"])
        assert augment.waveform_components() == [] and (augment.spec_freq_mask, augment.spec_time_mask) == (0, 0)


def test_the_shipped_checkpoint_joins_the_networks_its_two_recipes_describe() -> None:
    """The shipped checkpoint is an ensemble: member 0 is what ecapa-speechocean.yaml trains,
    member 1 what ecapa_speechocean_distill_speeds.yaml trains, both on the shipped front end."""
    shipped = json.loads((SHIPPED / "config.json").read_text())
    recipes = [
        load_config(RECIPES / name, []) for name in ("ecapa-speechocean.yaml", "ecapa_speechocean_distill_speeds.yaml")
    ]
    assert shipped["encoder"]["name"] == "ensemble" and shipped["head"] is None
    assert shipped["encoder"]["members"] == [recipe["encoder"] for recipe in recipes]
    assert all(recipe["frontend"].items() <= shipped["frontend"].items() for recipe in recipes)


def test_a_head_that_passes_options_on_to_its_base_accepts_the_base_options_and_its_own() -> None:
    # AAMSoftmaxHead takes easy_margin and hands scale, margin and the warm-up to CosineHead.
    cfg = load_config(
        None,
        ["head={name: aam_softmax, scale: 20, margin: 0.3, easy_margin: true, margin_warmup_steps: 5}"],
    )
    assert cfg["head"] == {
        "name": "aam_softmax",
        "scale": 20,
        "margin": 0.3,
        "easy_margin": True,
        "margin_warmup_steps": 5,
    }
    head = build_head("aam_softmax", embed_dim=4, n_classes=3, **options(cfg["head"]))
    assert (head.scale, head.margin, head.easy_margin, head.margin_warmup_steps) == (20, 0.3, True, 5)
    with pytest.raises(ConfigError, match=r"easy_margin"):
        load_config(None, ["head={name: am_softmax, easy_margin: true}"])
