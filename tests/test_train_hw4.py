"""HW4 feature data (train/hw4.py), the Kaggle prediction command (train/predict.py), and training on
the features through ``python -m train fit``."""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import fit_args, logging_restored, metric_rows

from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.features import frontend_config
from train.__main__ import main
from train.data import DataError, utterance_split
from train.hw4 import (
    N_MELS,
    Hw4CropDataset,
    batch_logits,
    batches,
    hw4_utterances,
    load_batch,
    load_features,
    load_hw4,
    load_hw4_test,
)
from train.predict import add_arguments, run

SPEAKERS = ["id10001", "id10002", "id10003"]
# Four training utterances per speaker; 50 and 60 frames are shorter than the 128-frame crop.
TRAIN_LENGTHS = [[50, 140, 220, 300], [60, 128, 180, 260], [90, 150, 200, 290]]
TEST_LENGTHS = [300, 55, 129, 210, 75]


def _save(root: Path, name: str, frames: int, generator: torch.Generator) -> dict:
    torch.save(torch.randn(frames, N_MELS, generator=generator), root / name)
    return {"feature_path": name, "mel_len": frames}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``fit`` points the root logger at the run's train.log."""
    with logging_restored():
        yield


@pytest.fixture
def hw4(tmp_path: Path) -> Path:
    """A HW4 folder in the homework's layout: 3 speakers x 4 utterances, 5 test utterances."""
    generator = torch.Generator().manual_seed(0)
    speakers = {
        speaker: [_save(tmp_path, f"uttr-{speaker}-{i}.pt", n, generator) for i, n in enumerate(lengths)]
        for speaker, lengths in zip(SPEAKERS, TRAIN_LENGTHS)
    }
    tests = [_save(tmp_path, f"uttr-test{i}.pt", n, generator) for i, n in enumerate(TEST_LENGTHS)]
    mapping = {
        "speaker2id": {s: i for i, s in enumerate(SPEAKERS)},
        "id2speaker": {str(i): s for i, s in enumerate(SPEAKERS)},
    }
    (tmp_path / "mapping.json").write_text(json.dumps(mapping))
    (tmp_path / "metadata.json").write_text(json.dumps({"n_mels": N_MELS, "speakers": speakers}))
    (tmp_path / "testdata.json").write_text(json.dumps({"n_mels": N_MELS, "utterances": tests}))
    return tmp_path


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _dataset(root: Path, seed: int = 0) -> Hw4CropDataset:
    speaker2id, items = load_hw4(root)
    return Hw4CropDataset(hw4_utterances(root, items), speaker2id, seed=seed)


# ----------------------------------------------------------------------------- loading
def test_load_hw4_lists_every_training_utterance(hw4: Path) -> None:
    speaker2id, items = load_hw4(hw4)
    assert speaker2id == {"id10001": 0, "id10002": 1, "id10003": 2}
    assert [(i.speaker, i.mel_len) for i in items] == [
        (s, n) for s, lengths in zip(SPEAKERS, TRAIN_LENGTHS) for n in lengths
    ]
    assert all((hw4 / i.feature_path).is_file() for i in items)


def test_load_hw4_test_keeps_testdata_order(hw4: Path) -> None:
    assert [i.mel_len for i in load_hw4_test(hw4)] == TEST_LENGTHS


def test_hw4_items_split_like_any_other_source(hw4: Path) -> None:
    _, items = load_hw4(hw4)
    train, val = utterance_split(hw4_utterances(hw4, items), 0.25, seed=0)
    assert sorted(u.speaker for u in val) == SPEAKERS
    assert len(train) == 9
    assert all(u.file.is_file() for u in train + val)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("metadata.json", None, "metadata.json is missing"),
        ("mapping.json", "{not json", "mapping.json is not valid JSON"),
        ("mapping.json", json.dumps({"id2speaker": {}}), "has no 'speaker2id'"),
        ("mapping.json", json.dumps({"speaker2id": {"id10001": 0, "id10002": 0, "id10003": 2}}), "distinct index"),
        ("metadata.json", json.dumps({"n_mels": 80, "speakers": {}}), "n_mels=80"),
        (
            "metadata.json",
            json.dumps({"speakers": {"id99999": [{"feature_path": "x.pt", "mel_len": 3}]}}),
            "'id99999' is not in mapping.json",
        ),
        ("metadata.json", json.dumps({"speakers": {"id10001": [{"feature_path": "x.pt"}]}}), "mel_len"),
    ],
)
def test_missing_or_broken_json_is_a_clear_data_error(hw4: Path, name: str, content: str | None, message: str) -> None:
    if content is None:
        (hw4 / name).unlink()
    else:
        (hw4 / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_hw4(hw4)


@pytest.mark.parametrize("name", ["metadata.json", "testdata.json"])
def test_paths_escaping_the_folder_are_refused(hw4: Path, name: str) -> None:
    def escape(data: dict) -> None:
        entries = data["utterances"] if "utterances" in data else data["speakers"]["id10001"]
        entries[0]["feature_path"] = "../outside.pt"

    _edit_json(hw4 / name, escape)
    with pytest.raises(DataError, match="outside the data root"):
        load_hw4_test(hw4) if name == "testdata.json" else load_hw4(hw4)


# ----------------------------------------------------------------------------- feature files
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"a": 1}, "a dict"),
        (torch.zeros(10, 80), "a torch.float32 tensor of shape \\(10, 80\\)"),
        (torch.zeros(10, N_MELS, dtype=torch.int64), "a torch.int64 tensor"),
        (torch.zeros(N_MELS), "a torch.float32 tensor of shape \\(40,\\)"),
    ],
)
def test_feature_files_that_are_not_hw4_features_are_refused(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "uttr-bad.pt"
    torch.save(content, path)
    with pytest.raises(DataError, match=f"uttr-bad.pt holds {message}.*2-D float tensor"):
        load_features(path)


def test_feature_files_with_arbitrary_objects_are_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "uttr-object.pt"
    torch.save(argparse.Namespace(a=1), path)
    with pytest.raises(DataError, match="uttr-object.pt is not a readable tensor file"):
        load_features(path)


def test_broken_feature_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "uttr-text.pt"
    path.write_text("not a tensor")
    with pytest.raises(DataError, match="uttr-text.pt"):
        load_features(path)


# ----------------------------------------------------------------------------- crops
def test_crops_are_segment_windows_of_the_utterance_with_its_label(hw4: Path) -> None:
    dataset = _dataset(hw4)
    assert len(dataset) == 12
    for i in (3, 7, 11):
        feats, label = dataset[i]
        utt = dataset.utts[i]
        full = load_features(utt.file)
        assert feats.shape == (128, N_MELS) and feats.dtype == torch.float32
        assert label == SPEAKERS.index(utt.speaker)
        starts = [s for s in range(full.shape[0] - 127) if torch.equal(full[s : s + 128], feats)]
        assert len(starts) == 1


def test_crops_are_deterministic_per_seed_epoch_and_index(hw4: Path) -> None:
    a, b = _dataset(hw4, seed=1), _dataset(hw4, seed=1)
    assert torch.equal(a[3][0], b[3][0])
    a.epoch = b.epoch = 4
    assert torch.equal(a[3][0], b[3][0])
    crops_by_epoch = []
    for epoch in range(4):
        a.epoch = epoch
        crops_by_epoch.append(a[3][0])
    assert any(not torch.equal(crops_by_epoch[0], c) for c in crops_by_epoch[1:])
    assert not torch.equal(_dataset(hw4, seed=2)[3][0], _dataset(hw4, seed=1)[3][0])


def test_short_utterances_are_repeated_to_fill_the_crop(hw4: Path) -> None:
    dataset = _dataset(hw4)
    feats, _ = dataset[0]
    full = load_features(dataset.utts[0].file)
    assert full.shape[0] == 50
    assert feats.shape == (128, N_MELS)
    assert torch.equal(feats[:78], feats[50:])
    assert any(torch.equal(feats[0], row) for row in full)


def test_crop_dataset_needs_a_label_for_every_speaker(hw4: Path) -> None:
    _, items = load_hw4(hw4)
    with pytest.raises(DataError, match="without a class label"):
        Hw4CropDataset(hw4_utterances(hw4, items), {"id10001": 0})


# ----------------------------------------------------------------------------- predict
@pytest.fixture
def hw4_checkpoint(tiny_checkpoint: Callable[..., Path]) -> Callable[..., Path]:
    """Factory: an untrained checkpoint with a head over ``classes`` (none without) on ``n_mels`` bands."""

    def make(classes: list[str] | None = SPEAKERS, n_mels: int = N_MELS) -> Path:
        return tiny_checkpoint(
            16,
            frontend=frontend_config("hw4", n_mels=n_mels).to_dict(),
            head={"name": "aam_softmax"} if classes else None,
            classes=classes,
        )

    return make


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args([*argv, "--device", "cpu"]))


def test_predict_writes_one_row_per_test_utterance(hw4: Path, tmp_path: Path, hw4_checkpoint) -> None:
    checkpoint = hw4_checkpoint()
    output = tmp_path / "out" / "submission.csv"
    output.parent.mkdir()
    assert _run("--checkpoint", str(checkpoint), "--data", str(hw4), "--output", str(output), "--batch-size", "2") == 0
    with open(output, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"]
    assert [r[0] for r in rows[1:]] == [f"uttr-test{i}.pt" for i in range(len(TEST_LENGTHS))]
    assert {r[1] for r in rows[1:]} <= set(SPEAKERS)
    encoder = SpeakerEncoder.from_pretrained(checkpoint, device="cpu")
    full = [load_features(hw4 / item.feature_path).unsqueeze(0) for item in load_hw4_test(hw4)]
    full_length = [
        SPEAKERS[int(batch_logits(encoder, f, torch.ones(f.shape[:2], dtype=torch.bool)).argmax())] for f in full
    ]
    assert [r[1] for r in rows[1:]] == full_length
    assert sorted(p.name for p in output.parent.iterdir()) == ["submission.csv"]


def test_batches_group_similar_lengths_and_cover_every_utterance(hw4: Path) -> None:
    items = load_hw4_test(hw4)
    groups = batches(items, 2)
    assert sorted(i for g in groups for i in g) == list(range(len(items)))
    assert all(1 <= len(g) <= 2 for g in groups)
    lengths = [items[i].mel_len for g in groups for i in g]
    assert lengths == sorted(TEST_LENGTHS)


def test_batches_hold_full_length_features_with_a_padding_mask(hw4: Path) -> None:
    items = load_hw4_test(hw4)
    chosen = [items[0], items[1]]
    feats, mask = load_batch(hw4, chosen)
    assert feats.shape == (2, 300, N_MELS)
    assert mask.sum(dim=1).tolist() == [300, 55]
    assert torch.equal(feats[0], load_features(hw4 / items[0].feature_path))
    assert torch.equal(feats[1, :55], load_features(hw4 / items[1].feature_path))
    assert not feats[1, 55:].any()


def test_padding_does_not_change_an_utterance_prediction(hw4: Path, hw4_checkpoint) -> None:
    encoder = SpeakerEncoder.from_pretrained(hw4_checkpoint(), device="cpu")
    items = load_hw4_test(hw4)
    together = batch_logits(encoder, *load_batch(hw4, items))
    alone = torch.cat([batch_logits(encoder, *load_batch(hw4, [item])) for item in items])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("classes", "n_mels", "message"),
    [
        (None, N_MELS, "this checkpoint has no classifier: predict needs one trained on the HW4 speakers"),
        (SPEAKERS, 80, "expects 80 mel bands but the HW4 features have 40"),
        (["alice", "bob"], N_MELS, "classes are not HW4 speaker ids"),
    ],
)
def test_predict_refuses_checkpoints_that_cannot_classify_hw4(
    hw4: Path, tmp_path: Path, capsys, hw4_checkpoint, classes: list[str] | None, n_mels: int, message: str
) -> None:
    checkpoint = hw4_checkpoint(classes, n_mels)
    output = tmp_path / "submission.csv"
    assert _run("--checkpoint", str(checkpoint), "--data", str(hw4), "--output", str(output)) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_predict_without_testdata_is_a_clear_error(hw4: Path, tmp_path: Path, capsys, hw4_checkpoint) -> None:
    (hw4 / "testdata.json").unlink()
    checkpoint = hw4_checkpoint()
    assert _run("--checkpoint", str(checkpoint), "--data", str(hw4), "--output", str(tmp_path / "s.csv")) == 2
    assert "testdata.json is missing" in capsys.readouterr().err


# ----------------------------------------------------------------------------- training on the features
SEPARABLE_SPEAKERS = ["id10003", "id10001", "id10002"]


def _separable_features(speaker: int, frames: int, rng: np.random.Generator) -> torch.Tensor:
    """Log-mel-like frames around a per-speaker mean spectrum."""
    centre = np.linspace(-4, 4, N_MELS) * (speaker - 1) - 8.0
    return torch.from_numpy((centre + rng.standard_normal((frames, N_MELS))).astype(np.float32))


@pytest.fixture
def separable_hw4(tmp_path: Path) -> Path:
    """A HW4 folder a tiny model can learn: 3 speakers x 6 utterances of 80-300 frames, each speaker
    with its own mean spectrum; 6 test utterances."""
    rng = np.random.default_rng(0)
    root = tmp_path / "hw4"
    root.mkdir()

    def save(name: str, speaker: int, frames: int) -> dict:
        torch.save(_separable_features(speaker, frames, rng), root / name)
        return {"feature_path": name, "mel_len": frames}

    speakers = {
        s: [save(f"uttr-{s}-{i}.pt", k, int(rng.integers(80, 300))) for i in range(6)]
        for k, s in enumerate(SEPARABLE_SPEAKERS)
    }
    tests = [save(f"uttr-test{i}.pt", i % 3, int(rng.integers(60, 400))) for i in range(6)]
    (root / "mapping.json").write_text(json.dumps({"speaker2id": {s: i for i, s in enumerate(SEPARABLE_SPEAKERS)}}))
    (root / "metadata.json").write_text(json.dumps({"n_mels": N_MELS, "speakers": speakers}))
    (root / "testdata.json").write_text(json.dumps({"n_mels": N_MELS, "utterances": tests}))
    return root


def test_fit_on_hw4_features_then_predict_writes_a_submission(separable_hw4: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = fit_args(
        run_dir,
        [{"type": "hw4", "root": str(separable_hw4)}],
        encoder="transformer",
        head="softmax",
        steps=24,
        validate_every=12,
        best_metric="val_accuracy",
    )
    args[args.index('frontend={"n_mels": 40}')] = "frontend={}"
    args += [
        "--set",
        "data.split={kind: utterance, val_fraction: 0.34}",
        "--set",
        "augment={spec_freq_mask: 4, spec_time_mask: 5, spec_prob: 0.5, speeds: [0.9, 1.1]}",
    ]
    assert main(args) == 0
    log_text = (run_dir / "train.log").read_text()
    assert "ignoring the waveform augmentation settings ['speeds']" in log_text
    assert "50-frame crops" in log_text
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["classes"] == SEPARABLE_SPEAKERS
    assert config["frontend"]["n_mels"] == N_MELS and config["frontend"]["trim_silence"] is True

    encoder = SpeakerEncoder.from_pretrained(run_dir / "model", device="cpu")
    with open(run_dir / "split.csv", newline="") as f:
        val = [r for r in csv.DictReader(f) if r["split"] == "val"]
    assert len(val) == 6
    hits = []
    for row in val:
        feats = load_features(separable_hw4 / row["path"]).unsqueeze(0)
        logits = batch_logits(encoder, feats, torch.ones(feats.shape[:2], dtype=torch.bool))
        hits.append(SEPARABLE_SPEAKERS[int(logits.argmax())] == row["speaker"])
    logged = [r["val_accuracy"] for r in metric_rows(run_dir) if "val_accuracy" in r]
    assert len(logged) == 2 and logged[-1] == pytest.approx(np.mean(hits)) and logged[-1] == 1.0

    output = tmp_path / "submission.csv"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(run_dir / "model"),
                "--data",
                str(separable_hw4),
                "--output",
                str(output),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    with open(output, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"]
    assert rows[1:] == [[f"uttr-test{i}.pt", SEPARABLE_SPEAKERS[i % 3]] for i in range(6)]


def test_hw4_source_refuses_an_audio_front_end(separable_hw4: Path, tmp_path: Path, capsys) -> None:
    args = fit_args(tmp_path / "run", [{"type": "hw4", "root": str(separable_hw4)}])
    args += ["--set", "frontend={preset: default}"]
    assert main(args) == 2
    assert "HW4 features have 40 mel bands but frontend.n_mels is 80" in capsys.readouterr().err
