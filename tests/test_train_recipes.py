"""The shipped checkpoint's recipe file trains exactly as the command that trained the checkpoint,
on the real data in ../shared/data (skipped where it is absent).

Both runs take a few steps only (the train.* budget is overridden alike in both); the data, the
augmentation and the model come from the recipe file in one run and from the old command in the
other. About a minute on two cores, most of it decoding the training clips twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from train_helpers import SHIPPED_CHECKPOINT_AUGMENT, logging_restored, metric_rows

from train.__main__ import main

REPO = Path(__file__).resolve().parent.parent
BUDGET = {
    "train.steps": 4,
    "train.batch_size": 8,
    "train.num_workers": 0,
    "train.log_every": 1,
    "train.validate_every": 1000,
    "train.checkpoint_every": 1000,
}
RUNS = {
    "recipe file": ["--config", "train/configs/ecapa-speechocean.yaml"],
    "old command": ["--config", "train/configs/ecapa_speechocean_augmented.yaml", "--set", SHIPPED_CHECKPOINT_AUGMENT],
}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


def test_the_shipped_recipe_file_gives_the_losses_of_the_old_command(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for corpus in ("speechocean762", "librispeech-251"):
        if not (shared_data / corpus / "utterances.csv").is_file():
            pytest.skip(f"{shared_data / corpus} not found: the recipe comparison needs both corpora")
    monkeypatch.chdir(REPO)  # the recipes name the data relative to the repository root
    budget = [arg for key, value in BUDGET.items() for arg in ("--set", f"{key}={value}")]
    rows = {}
    for name, args in RUNS.items():
        run_dir = tmp_path / name.replace(" ", "-")
        assert main(["fit", *args, "--run-dir", str(run_dir), *budget]) == 0
        rows[name] = metric_rows(run_dir)
    losses = {name: [r["loss"] for r in rows[name] if "loss" in r] for name in RUNS}
    assert len(losses["recipe file"]) == BUDGET["train.steps"]
    assert losses["recipe file"] == losses["old command"]
    validated = {name: [r for r in rows[name] if "val_eer" in r] for name in RUNS}
    assert validated["recipe file"] == validated["old command"] and len(validated["recipe file"]) == 1
    assert {"val_accuracy", "val_eer"} <= validated["recipe file"][0].keys()
