"""The shipped checkpoint's model card: short, with the metadata the Hub reads, facts that match
config.json, and links that resolve inside the checkpoint folder (what is uploaded with it).

History, probes and superseded tables live in the folder's EXPERIMENTS.md, which the card links.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "ecapa-speechocean"
CARD = CHECKPOINT / "README.md"
EXPERIMENTS = CHECKPOINT / "EXPERIMENTS.md"
MAX_CARD_LINES = 200
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def front_matter(text: str) -> dict:
    assert text.startswith("---\n"), "the card must open with YAML front matter"
    return yaml.safe_load(text.split("---\n")[1])


def relative_links(text: str) -> list[str]:
    """Link targets that are not web addresses or same-page anchors."""
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def slug(heading: str) -> str:
    """The anchor GitHub and the Hub give a Markdown heading."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def test_card_is_short_enough_to_read() -> None:
    lines = CARD.read_text().splitlines()
    assert len(lines) <= MAX_CARD_LINES, f"{len(lines)} lines: move history to {EXPERIMENTS.name}"


def test_card_has_the_front_matter_the_hub_reads() -> None:
    meta = front_matter(CARD.read_text())
    assert meta["library_name"] == "speakerdemo"
    assert meta["license"] == "apache-2.0"
    assert {"speaker-verification", "speaker-embedding"} <= set(meta["tags"])
    assert meta["datasets"] == ["mispeech/speechocean762", "openslr/librispeech_asr"]
    (entry,) = meta["model-index"]
    metrics = {m["type"]: m["value"] for m in entry["results"][0]["metrics"]}
    assert entry["results"][0]["dataset"]["name"] == "speechocean762/trials_test.txt"
    assert f"**{metrics['eer']:.2f}**" in CARD.read_text()  # the metadata and the results table agree


@pytest.mark.parametrize("document", [CARD, EXPERIMENTS], ids=lambda p: p.name)
def test_every_relative_link_is_a_file_in_the_checkpoint_folder(document: Path) -> None:
    for target in relative_links(document.read_text()):
        path = (CHECKPOINT / target.split("#")[0]).resolve()
        assert path.parent == CHECKPOINT.resolve() and path.is_file(), f"{document.name} links {target}"


def test_card_links_the_experiments_and_they_keep_the_history() -> None:
    assert "EXPERIMENTS.md" in relative_links(CARD.read_text())
    experiments = EXPERIMENTS.read_text()
    anchors = {slug(line.lstrip("#")) for line in experiments.splitlines() if line.startswith("#")}
    for target in LINK.findall(experiments):
        if target.startswith("#"):
            assert target[1:] in anchors, f"EXPERIMENTS.md links a missing heading {target}"
    assert "## Before the cohort: a shift per kind of clip" in experiments.replace("###", "##")


def test_card_states_the_threshold_and_cohort_config_json_holds() -> None:
    card = CARD.read_text()
    config = json.loads((CHECKPOINT / "config.json").read_text())
    assert f"{config['calibration']['threshold']:.4f}" in card
    cohort = config["cohort"]
    assert f"{cohort['size']:,} embeddings" in card and f"{cohort['top_n']} highest cosines" in card
    assert f"{cohort['mean_floor']:.4f}" in card and f"{cohort['std_floor']:.4f}" in card
    assert "python -m train calibrate" in card and "--cohort" in card


def test_the_model_tab_turns_links_beside_the_card_into_paths(tmp_path: Path) -> None:
    from speakerdemo.app_state import read_model_card

    shown = read_model_card(str(CHECKPOINT))
    assert not relative_links(shown)  # a relative link would point into the app's own site
    assert f"`{CHECKPOINT / 'EXPERIMENTS.md'}`" in shown
    (tmp_path / "README.md").write_text(
        "---\nlicense: mit\n---\nSee [the history](EXPERIMENTS.md), [the paper](https://arxiv.org/abs/1) "
        "and [below](#results).\n"
    )
    assert read_model_card(str(tmp_path)) == (
        f"See the history (`{tmp_path / 'EXPERIMENTS.md'}`), [the paper](https://arxiv.org/abs/1) "
        "and [below](#results)."
    )
