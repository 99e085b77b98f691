"""Model cards and ``python -m train push`` (train/hub.py), with the Hub client intercepted.

There is no network here: ``HfApi.create_repo`` and ``HfApi.upload_folder`` are replaced by
recorders, and the token sources (environment, login cache) are emptied for every test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx2
import huggingface_hub
import numpy as np
import pytest
import yaml
from conftest import tiny_encoder
from huggingface_hub import CommitInfo, HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError

import train.hub
from speakerdemo.cohort import Cohort
from speakerdemo.encoder import SpeakerEncoder
from train.hub import HubError, add_arguments, model_card, push, run, uploaded_files, write_model_card

METRICS = {
    "checkpoint": "runs/x/model",
    "trials": "speechocean762/trials_test.txt",
    "n_trials": 4000,
    "eer": 0.034,
    "eer_threshold": 0.41,
    "min_dcf_0.01": 0.3,
    "min_dcf_0.05": 0.2,
}
DATA = [
    {
        "name": "speechocean762",
        "licence": "Apache-2.0",
        "url": "https://www.openslr.org/101/",
        "attribution": "Zhang et al., speechocean762, Interspeech 2021.",
        "hub_id": "mispeech/speechocean762",
    },
    {
        "name": "LibriSpeech train-clean-100",
        "licence": "CC BY 4.0",
        "attribution": "Panayotov et al., LibriSpeech, ICASSP 2015.",
    },
]
COMMIT_URL = "https://huggingface.co/me/ecapa/commit/0123456789abcdef"


@pytest.fixture(autouse=True)
def no_token_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see only the tokens they set: no HF_TOKEN, no login cache, no OIDC."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record the client calls push makes (and the card the upload would send) instead of sending them."""
    calls: list[dict] = []

    def create_repo(self: HfApi, repo_id: str, **kwargs) -> str:
        calls.append({"call": "create_repo", "token": self.token, "repo_id": repo_id, **kwargs})
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self: HfApi, **kwargs) -> CommitInfo:
        card = (Path(kwargs["folder_path"]) / "README.md").read_text()
        calls.append({"call": "upload_folder", "token": self.token, "card": card, **kwargs})
        return CommitInfo(COMMIT_URL, commit_message=kwargs["commit_message"], commit_description="", oid="0123")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def encoder() -> SpeakerEncoder:
    return tiny_encoder(32, head={"name": "aam_softmax"}, classes=["a", "b"])


@pytest.fixture
def checkpoint(tmp_path: Path, encoder: SpeakerEncoder) -> Path:
    """A real checkpoint in a run folder, as ``python -m train fit`` leaves it."""
    folder = tmp_path / "run" / "model"
    encoder.save_pretrained(folder)
    (tmp_path / "run" / "config.yaml").write_text(
        yaml.safe_dump({"seed": 0, "command": "python -m train fit --config train/configs/x.yaml"})
    )
    return folder


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(list(argv)))


# ----------------------------------------------------------------------------- the card
def test_card_metadata_carries_library_tags_licence_and_results(checkpoint: Path) -> None:
    card = model_card(checkpoint, metrics=METRICS, command="python -m train fit", data=DATA, repo_id="me/ecapa")
    meta = front_matter(card)
    assert meta["library_name"] == "speakerdemo"
    assert meta["license"] == "apache-2.0"
    assert meta["tags"] == ["speaker-verification", "speaker-identification", "speaker-embedding", "audio", "pytorch"]
    assert meta["datasets"] == ["mispeech/speechocean762", "LibriSpeech train-clean-100"]
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert entry["name"] == "ecapa"
    assert result["task"]["type"] == "speaker-verification"
    assert result["dataset"] == {"name": "speechocean762/trials_test.txt", "type": "speechocean762"}
    assert [(m["type"], m["value"]) for m in result["metrics"]] == [("eer", 3.4), ("min_dcf", 0.3), ("min_dcf", 0.2)]
    parsed = ModelCard(card).data
    assert [r.metric_value for r in parsed.eval_results] == [3.4, 0.3, 0.2]


def test_card_body_documents_model_data_command_and_use(checkpoint: Path, encoder: SpeakerEncoder) -> None:
    extra = "## Comparison\n\n| model | EER (%) |\n|---|---|\n| baseline | 5.0 |\n"
    card = model_card(
        checkpoint,
        metrics=METRICS,
        command="python -m train fit --set train.steps=3000",
        data=DATA,
        extra_sections=extra,
        repo_id="me/ecapa",
    )
    encoder_params = sum(p.numel() for p in encoder.model.parameters())
    head_params = sum(p.numel() for p in encoder.head.parameters())
    assert "`ecapa_tdnn` (channels=32)" in card
    assert f"{encoder_params:,} parameters" in card
    assert f"over 2 training speakers ({head_params:,} parameters)" in card
    assert "80-band log-mel" in card
    assert "[speechocean762](https://www.openslr.org/101/)**, licence: Apache-2.0. Zhang et al." in card
    assert "**LibriSpeech train-clean-100**, licence: CC BY 4.0. Panayotov et al." in card
    assert "```bash\npython -m train fit --set train.steps=3000\n```" in card
    assert "| cosine | 3.40 | 0.410 | 0.300 | 0.200 |" in card
    assert "## Intended use and limitations" in card
    assert 'SpeakerEncoder.from_pretrained("me/ecapa")' in card
    assert card.endswith(extra)


def test_card_without_metrics_has_no_results(checkpoint: Path) -> None:
    card = model_card(checkpoint, metrics=None, command=None, data=None)
    assert "model-index" not in front_matter(card)
    assert "datasets" not in front_matter(card)
    assert "## Results" not in card
    assert "## Training command" not in card
    assert "Not documented" in card


def test_metrics_must_name_their_trial_list(checkpoint: Path) -> None:
    with pytest.raises(HubError, match="'trials'"):
        model_card(checkpoint, metrics={"eer": 0.05}, command=None, data=None)


def test_write_model_card_replaces_the_save_pretrained_placeholder(checkpoint: Path) -> None:
    assert "pytorch_model_hub_mixin" in (checkpoint / "README.md").read_text()
    path = write_model_card(checkpoint, metrics=METRICS, command=None, data=DATA)
    assert path == checkpoint / "README.md"
    assert path.read_text() == model_card(checkpoint, metrics=METRICS, command=None, data=DATA)
    assert sorted(p.name for p in checkpoint.iterdir()) == ["README.md", "config.json", "model.safetensors"]


# ----------------------------------------------------------------------------- push
def test_push_uploads_weights_config_and_card(checkpoint: Path, hub: list[dict]) -> None:
    url = push(checkpoint, "me/ecapa", token="hf_argument", private=True, commit_message="v1")
    assert url == COMMIT_URL
    create, upload = hub
    assert create == {
        "call": "create_repo",
        "token": "hf_argument",
        "repo_id": "me/ecapa",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert upload["repo_id"] == "me/ecapa" and upload["repo_type"] == "model"
    assert Path(upload["folder_path"]) == checkpoint
    assert upload["allow_patterns"] == ["config.json", "model.safetensors", "README.md"]
    assert upload["commit_message"] == "v1"
    assert front_matter(upload["card"])["library_name"] == "speakerdemo"
    assert "pytorch_model_hub_mixin" not in upload["card"]
    assert 'from_pretrained("me/ecapa")' in upload["card"]
    assert "EXPERIMENTS.md" not in upload["card"]  # linked only where the folder has one


def test_push_uploads_the_experiments_and_the_card_links_them(checkpoint: Path, hub: list[dict]) -> None:
    (checkpoint / "EXPERIMENTS.md").write_text("# Experiments\n\n| run | EER (%) |\n|---|---|\n| probe | 9.9 |\n")
    push(checkpoint, "me/ecapa", token="hf_argument")
    assert hub[1]["allow_patterns"] == ["config.json", "model.safetensors", "README.md", "EXPERIMENTS.md"]
    assert "[EXPERIMENTS.md](EXPERIMENTS.md)" in hub[1]["card"]
    assert "| probe | 9.9 |" not in hub[1]["card"]  # the history stays out of the card


def test_the_docstring_and_help_name_every_file_push_uploads(checkpoint: Path) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    config = {**config, "onnx": {"file": "model.onnx", "int8": {"file": "model.int8.onnx"}}}
    config["cohort"] = {"file": "cohort.safetensors"}
    (checkpoint / "EXPERIMENTS.md").write_text("# Experiments\n")
    files = uploaded_files(checkpoint, config)
    assert files == [
        "config.json",
        "model.safetensors",
        "README.md",
        "model.onnx",
        "model.int8.onnx",
        "cohort.safetensors",
        "EXPERIMENTS.md",
    ]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for name in files:
        assert name in train.hub.__doc__ and name in parser.description, name


def test_push_uploads_the_exported_network_config_names(checkpoint: Path, hub: list[dict]) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "onnx": {"file": "model.onnx"}}))
    push(checkpoint, "me/ecapa", token="hf_argument")
    assert hub[1]["allow_patterns"] == ["config.json", "model.safetensors", "README.md", "model.onnx"]


def test_push_uploads_the_cohort_and_the_card_describes_it(checkpoint: Path, hub: list[dict]) -> None:
    encoder = SpeakerEncoder.from_pretrained(checkpoint)
    encoder.cohort = Cohort(np.eye(encoder.model.embed_dim)[:40], top_n=20, mean_floor=0.25, std_floor=0.05)
    encoder.save_pretrained(checkpoint)
    push(checkpoint, "me/ecapa", token="hf_argument")
    assert hub[1]["allow_patterns"] == ["config.json", "model.safetensors", "README.md", "cohort.safetensors"]
    assert (
        "- **Score cohort**: `cohort.safetensors`, 40 embeddings of training speakers' clips; a score is the cosine "
        "normalised against each clip's 20 closest cohort clips (adaptive s-norm; means floored at 0.250, spreads "
        "at 0.050)." in hub[1]["card"]
    )


def test_push_keeps_a_card_written_before(checkpoint: Path, hub: list[dict]) -> None:
    card = write_model_card(
        checkpoint, metrics=METRICS, command=None, data=DATA, extra_sections="## Hand-written notes\n"
    ).read_text()
    push(checkpoint, "me/ecapa", token="hf_argument")
    assert hub[1]["card"] == card


def test_push_without_weights_fails_before_any_client_call(checkpoint: Path, hub: list[dict]) -> None:
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(HubError, match="has no model.safetensors"):
        push(checkpoint, "me/ecapa", token="hf_argument")
    assert hub == []


def test_malformed_repo_id_fails_before_any_client_call(checkpoint: Path, hub: list[dict]) -> None:
    with pytest.raises(HubError, match="not a Hub repo id"):
        push(checkpoint, "me/too/deep", token="hf_argument")
    assert hub == []


def test_cli_takes_the_token_from_hf_token(
    checkpoint: Path, hub: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_from_environment")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    assert _run(str(checkpoint), "--repo-id", "me/ecapa", "--metrics", str(metrics)) == 0
    assert [call["token"] for call in hub] == ["hf_from_environment"] * 2
    assert front_matter(hub[1]["card"])["model-index"][0]["results"][0]["metrics"][0]["value"] == 3.4


def test_cli_without_any_token_says_how_to_give_one(checkpoint: Path, hub: list[dict], capsys) -> None:
    assert _run(str(checkpoint), "--repo-id", "me/ecapa") == 2
    assert "No Hugging Face token: pass --token, set HF_TOKEN" in capsys.readouterr().err
    assert hub == []


@pytest.mark.parametrize(
    "error",
    [
        httpx2.ConnectError("[Errno -2] Name or service not known"),
        HfHubHTTPError(
            "401 Client Error: Unauthorized",
            response=httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create")),
        ),
    ],
)
def test_hub_failures_are_one_clear_line(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys, error: Exception
) -> None:
    def create_repo(self: HfApi, repo_id: str, **kwargs) -> str:
        raise error

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    assert _run(str(checkpoint), "--repo-id", "me/ecapa", "--token", "hf_argument") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Could not push {checkpoint} to me/ecapa: ")
    assert str(error) in err


def test_card_only_writes_the_card_without_contacting_the_hub(
    checkpoint: Path, hub: list[dict], tmp_path: Path
) -> None:
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(DATA))
    extra = tmp_path / "extra.md"
    extra.write_text("## Ablations\n\n| variant | EER (%) |\n")
    assert (
        _run(
            str(checkpoint),
            "--repo-id",
            "me/ecapa",
            "--data-info",
            str(data),
            "--extra",
            str(extra),
            "--license",
            "cc-by-4.0",
            "--card-only",
        )
        == 0
    )
    card = (checkpoint / "README.md").read_text()
    assert front_matter(card)["license"] == "cc-by-4.0"
    assert "```bash\npython -m train fit --config train/configs/x.yaml\n```" in card
    assert "licence: CC BY 4.0. Panayotov et al." in card
    assert card.endswith("## Ablations\n\n| variant | EER (%) |\n")
    assert hub == []
