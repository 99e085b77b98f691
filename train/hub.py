"""Model cards and ``python -m train push``: a checkpoint folder -> a Hugging Face Hub model repo.

The card is generated from what the folder itself holds (config.json, tensor shapes in
model.safetensors) plus what only the caller knows (metrics, the training command, the training
data with its licences), so that what the card states about the model cannot drift from the
weights it ships with. A card is for its reader: current facts only; history, probes and
ablations go into the folder's EXPERIMENTS.md, which the card links.

:func:`uploaded_files` is the one list of what ``push`` uploads: config.json, model.safetensors
and README.md always; model.onnx and model.int8.onnx after ``python -m train export [--int8]``
and cohort.safetensors after ``python -m train calibrate --cohort`` (as config.json names them);
EXPERIMENTS.md when the folder has one. Nothing else: run folders also hold optimizer states,
logs and data splits, which do not belong in a public repo.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open

from speakerdemo.atomic import atomic_write_text
from speakerdemo.checkpoint import CONFIG_FILE, HUB_LIBRARY, HUB_LICENSE, HUB_TAGS, WEIGHTS_FILE
from speakerdemo.features import FrontEndConfig
from speakerdemo.onnx_runtime import exported_files
from speakerdemo.scoring import EER_RULE

CARD_FILE = "README.md"
# The record behind a card (history, probes, superseded tables): uploaded and linked when present.
EXPERIMENTS_FILE = "EXPERIMENTS.md"
ALWAYS_UPLOADED = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
DEFAULT_COMMIT_MESSAGE = "Upload speakerdemo checkpoint"
# The tag PyTorchModelHubMixin puts on the placeholder card it writes with every save_pretrained.
MIXIN_TAG = "pytorch_model_hub_mixin"
# speakerdemo's own tags (those save_pretrained writes) and the framework.
TAGS = [*HUB_TAGS, "pytorch"]
# BatchNorm statistics are stored with the weights but are not parameters.
NOT_PARAMETERS = ("running_mean", "running_var", "num_batches_tracked")
# Hub client failures: HTTP errors and missing tokens are OSErrors, but connection failures come
# from the HTTP library (httpx2.HTTPError), and malformed repo ids are ValueErrors.
HUB_ERRORS = (HfHubHTTPError, LocalTokenNotFoundError, HFValidationError, OSError, httpx2.HTTPError)


class HubError(ValueError):
    """A checkpoint that cannot be described or published; the message says what to fix."""


# ----------------------------------------------------------------------------- reading the checkpoint
def read_config(checkpoint_dir: Path) -> dict[str, Any]:
    """config.json of a checkpoint folder, checked to exist next to its weights."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (checkpoint_dir / name).is_file():
            raise HubError(f"{checkpoint_dir} has no {name}: not a speakerdemo checkpoint folder.")
    try:
        return json.loads((checkpoint_dir / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f"{checkpoint_dir / CONFIG_FILE} is not valid JSON: {err}") from err


def parameter_counts(weights: Path) -> dict[str, int]:
    """Parameters per top-level module ("model", "head"), from tensor shapes alone.

    Reading shapes from the safetensors header needs neither the model code nor the memory for
    the weights, and counts exactly what is published.
    """
    counts: Counter[str] = Counter()
    try:
        with safe_open(str(weights), "pt") as f:
            for name in f.keys():
                if not name.endswith(NOT_PARAMETERS):
                    counts[name.split(".")[0]] += math.prod(f.get_slice(name).get_shape())
    except (SafetensorError, OSError) as err:
        raise HubError(f"{weights} is not a readable safetensors file: {err}") from err
    return dict(counts)


def training_command(checkpoint_dir: Path) -> str | None:
    """The command recorded in the run folder's config.yaml (``python -m train fit`` writes it)."""
    run_config = checkpoint_dir.parent / "config.yaml"
    if not run_config.is_file():
        return None
    loaded = yaml.safe_load(run_config.read_text())
    return loaded.get("command") if isinstance(loaded, dict) else None


# ----------------------------------------------------------------------------- the card
def model_card(
    checkpoint_dir: Path,
    *,
    metrics: dict | None = None,
    command: str | None = None,
    data: list[dict] | None = None,
    extra_sections: str = "",
    repo_id: str | None = None,
    license: str = HUB_LICENSE,
) -> str:
    """README.md text for a checkpoint folder: YAML metadata, then the card body.

    ``metrics`` is the JSON that ``python -m train evaluate`` prints (``trials``, ``eer`` as a
    fraction, ``eer_threshold``, ``min_dcf_<p_target>``, optional ``snorm`` and ``identification``);
    its verification results also go into the ``model-index`` the Hub displays. ``data`` lists the
    training sets as ``{"name", "licence", "attribution", "url", "hub_id"}`` (all but ``name``
    optional; ``hub_id`` is a Hub dataset id for the ``datasets`` metadata). ``extra_sections`` is
    Markdown appended verbatim (current comparisons). The card links the folder's EXPERIMENTS.md
    when it has one: history, probes and ablations go there, not into the card.
    """
    checkpoint_dir = Path(checkpoint_dir)
    config = read_config(checkpoint_dir)
    counts = parameter_counts(checkpoint_dir / WEIGHTS_FILE)
    check_card_inputs(metrics, data)
    name = (repo_id or checkpoint_dir.resolve().name).split("/")[-1]
    results = eval_results(metrics) if metrics else []
    card_data = ModelCardData(
        library_name=HUB_LIBRARY,
        license=license,
        tags=TAGS,
        datasets=[entry.get("hub_id") or entry["name"] for entry in data] if data else None,
        model_name=name if results else None,
        eval_results=results or None,
    )
    sections = [
        f"# {name}\n\nA speaker-embedding model for the `speakerdemo` library: two recordings are compared "
        "by the cosine similarity of their embeddings." + experiments_link(checkpoint_dir),
        architecture_section(config, counts),
        data_section(data),
        command_section(command),
        metrics_section(metrics),
        USE_SECTION,
        usage_section(repo_id or str(checkpoint_dir)),
        extra_sections,
    ]
    body = "\n\n".join(section for section in sections if section)
    ending = "" if body.endswith("\n") else "\n"
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}{ending}"))


def experiments_link(checkpoint_dir: Path) -> str:
    """A sentence linking the folder's EXPERIMENTS.md, or nothing when it has none."""
    if not (Path(checkpoint_dir) / EXPERIMENTS_FILE).is_file():
        return ""
    return f" Experiments, ablations and earlier versions: [{EXPERIMENTS_FILE}]({EXPERIMENTS_FILE})."


def write_model_card(checkpoint_dir: Path, **options: Any) -> Path:
    """Write ``model_card(checkpoint_dir, **options)`` to checkpoint_dir/README.md atomically."""
    path = Path(checkpoint_dir) / CARD_FILE
    atomic_write_text(path, model_card(checkpoint_dir, **options))
    return path


def check_card_inputs(metrics: Any, data: Any) -> None:
    """Refuse metrics and data lists the card cannot state correctly, before anything is written."""
    if metrics is not None and not isinstance(metrics, dict):
        raise HubError("metrics must be a JSON object, as `python -m train evaluate --output` writes it.")
    if metrics and ("eer" in metrics or _dcf_keys(metrics)) and not metrics.get("trials"):
        raise HubError("metrics need a 'trials' entry naming the trial list they were measured on.")
    if data is not None and not (isinstance(data, list) and all(isinstance(e, dict) and e.get("name") for e in data)):
        raise HubError("the training data must be a list of entries, each with at least a 'name'.")


def _dcf_keys(metrics: dict) -> list[str]:
    return sorted(key for key in metrics if key.startswith("min_dcf_"))


def eval_results(metrics: dict) -> list[EvalResult]:
    """The verification metrics as Hub ``model-index`` entries: EER in percent and each minDCF."""
    if "eer" not in metrics and not _dcf_keys(metrics):
        return []
    trials = str(metrics["trials"])
    dataset = dict(
        task_type="speaker-verification",
        task_name="Speaker verification",
        dataset_type=trials.split("/")[0] if "/" in trials else Path(trials).stem,
        dataset_name=trials,
    )
    results = []
    if "eer" in metrics:
        results.append(
            EvalResult(
                **dataset, metric_type="eer", metric_name="EER (%)", metric_value=round(100 * float(metrics["eer"]), 4)
            )
        )
    for key in _dcf_keys(metrics):
        p_target = key.removeprefix("min_dcf_")
        results.append(
            EvalResult(
                **dataset,
                metric_type="min_dcf",
                metric_name=f"minDCF (p_target={p_target})",
                metric_config=f"p_target={p_target}",
                metric_value=round(float(metrics[key]), 4),
            )
        )
    return results


def _settings(encoder: dict) -> str:
    """An encoder config's settings but its name, as ``key=value, ...`` in key order."""
    return ", ".join(f"{key}={value}" for key, value in sorted(encoder.items()) if key != "name")


def architecture_section(config: dict, counts: dict[str, int]) -> str:
    """Encoder, front end, head and calibration as config.json describes them."""
    encoder = dict(config.get("encoder") or {})
    encoder_name = encoder.pop("name", "unknown")
    members = encoder.pop("members", None) if encoder_name == "ensemble" else None
    options = _settings(encoder) or "default sizes"
    if members:  # an ensemble (python -m train ensemble): say what each member is
        described = "; ".join(f"`{m.get('name', 'unknown')}` ({_settings(m)})" for m in members)
        options = f"of {described}; the score is the mean of the members' cosines"
    try:
        fe = FrontEndConfig(**(config.get("frontend") or {}))
    except TypeError as err:
        raise HubError(f"config.json's frontend is not a speakerdemo front end: {err}") from err
    sr = fe.sample_rate
    lines = [
        "## Architecture",
        "",
        f"- **Encoder**: `{encoder_name}` ({options}), {counts.get('model', 0):,} parameters.",
        f"- **Front end**: {fe.n_mels}-band log-mel features of {sr} Hz audio, "
        f"{1000 * fe.win_length / sr:g} ms windows every {1000 * fe.hop_length / sr:g} ms, "
        f"{fe.f_min}-{fe.f_max or sr / 2} Hz, normalisation: {fe.normalize}. "
        "The configuration travels in config.json, so the model is always fed the features it was trained on.",
    ]
    head, classes = config.get("head"), config.get("classes") or []
    if head:
        lines.append(
            f"- **Training head**: `{head.get('name')}` over {len(classes)} training speakers "
            f"({counts.get('head', 0):,} parameters); it serves training and top-k identification "
            "of those speakers, not verification."
        )
    calibration = config.get("calibration")
    if calibration:
        rule = calibration.get("rule") or EER_RULE
        lines.append(
            f"- **Decision threshold**: {calibration['threshold']:.4f}, {rule}, on "
            f"{calibration.get('trials') or 'a trial list'} (pooled EER {100 * calibration['eer']:.2f} %)."
        )
        shifts = {kind: v for kind, v in (calibration.get("shifts") or {}).items() if v}
        if shifts:
            lines.append(
                "- **Score shifts** (subtracted from the cosine of a pair of that kind of clip before it meets "
                "the threshold): " + ", ".join(f"{kind} {v:+.3f}" for kind, v in sorted(shifts.items())) + "."
            )
    cohort = config.get("cohort")
    if cohort:
        lines.append(
            f"- **Score cohort**: `{cohort['file']}`, {cohort['size']:,} embeddings of training speakers' clips; "
            f"a score is the cosine normalised against each clip's {cohort['top_n']} closest cohort clips "
            f"(adaptive s-norm; means floored at {cohort['mean_floor']:.3f}, spreads at {cohort['std_floor']:.3f})."
        )
    return "\n".join(lines)


def data_section(data: list[dict] | None) -> str:
    """Training sets with their licences and the attribution they require."""
    if not data:
        return "## Training data\n\nNot documented for this checkpoint."
    lines = ["## Training data", ""]
    for entry in data:
        title = f"[{entry['name']}]({entry['url']})" if entry.get("url") else entry["name"]
        licence = entry.get("licence") or entry.get("license") or "licence not stated"
        attribution = f" {entry['attribution']}" if entry.get("attribution") else ""
        lines.append(f"- **{title}**, licence: {licence}.{attribution}")
    return "\n".join(lines)


def command_section(command: str | None) -> str:
    """The exact command that trained the model, so the run can be reproduced."""
    if not command:
        return ""
    return f"## Training command\n\n```bash\n{command}\n```"


def metrics_section(metrics: dict | None) -> str:
    """Verification results (cosine, and AS-Norm when evaluated) and identification accuracy."""
    parts = [verification_table(metrics), identification_line(metrics)] if metrics else []
    parts = [part for part in parts if part]
    return "\n\n".join(["## Results", *parts]) if parts else ""


def verification_table(metrics: dict) -> str:
    """EER, its threshold and each minDCF, one row per scoring method that was evaluated."""
    if "eer" not in metrics:
        return ""
    dcf_keys = _dcf_keys(metrics)
    header = ["Scoring", "EER (%)", "EER threshold", *(f"minDCF (p={k.removeprefix('min_dcf_')})" for k in dcf_keys)]
    rows = [("cosine", metrics)]
    if isinstance(metrics.get("snorm"), dict):
        rows.append(("cosine + AS-Norm", metrics["snorm"]))
    size = f" ({metrics['n_trials']:,} trials)" if isinstance(metrics.get("n_trials"), int) else ""
    lines = [
        f"Speaker verification on `{metrics['trials']}`{size}:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += [
        "| "
        + " | ".join(
            [label, _percent(m.get("eer")), _number(m.get("eer_threshold")), *(_number(m.get(k)) for k in dcf_keys)]
        )
        + " |"
        for label, m in rows
    ]
    return "\n".join(lines)


def identification_line(metrics: dict) -> str:
    """Closed-set identification accuracy, reported beside verification when it was measured."""
    ident = metrics.get("identification")
    if not isinstance(ident, dict):
        return ""
    return (
        f"Closed-set identification of {ident.get('speakers')} speakers "
        f"({ident.get('enrolment_clips_per_speaker')} enrolment clips each, {ident.get('test_clips')} test "
        f"clips): top-1 {_percent(ident.get('top1'))} %, top-5 {_percent(ident.get('top5'))} %."
    )


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _percent(fraction: Any) -> str:
    return f"{100 * fraction:.2f}" if isinstance(fraction, (int, float)) else "n/a"


USE_SECTION = """## Intended use and limitations

Intended for speaker verification (are two recordings the same speaker?), speaker identification
among enrolled speakers, and teaching or demonstrating speaker embeddings, on 16 kHz speech with
the speakers' consent. Not for identifying people without their consent, for surveillance, or as
sole evidence in forensic or access-control decisions.

Accuracy drops on short clips (under about 2 seconds of speech), noisy or reverberant recordings,
channels, languages and ages unlike the training data, and for speakers under-represented in it.
The decision threshold holds for the trials it was measured on; recalibrate it
(`python -m train calibrate --cohort` with a recipe of speakers like yours, or
`python -m train evaluate --calibrate` on a trial list) on data like your own before relying on it."""


def usage_section(source: str) -> str:
    """Five lines of Python that load the model and compare two clips."""
    return f"""## How to use

```python
from speakerdemo import SpeakerEncoder

encoder = SpeakerEncoder.from_pretrained("{source}")
a, b = encoder.embed("alice.wav"), encoder.embed("unknown.wav")
score = encoder.score(a, b)
print(f"{{score:.3f}}", "same speaker" if score >= encoder.threshold else "different speakers")
```"""


# ----------------------------------------------------------------------------- push
def has_real_card(checkpoint_dir: Path) -> bool:
    """Whether README.md exists and is not the placeholder save_pretrained writes with every save."""
    path = checkpoint_dir / CARD_FILE
    if not path.is_file():
        return False
    try:
        tags = ModelCard.load(path).data.tags or []
    except ValueError as err:
        raise HubError(f"{path} has invalid metadata: {err}") from err
    return MIXIN_TAG not in tags


def check_repo_id(repo_id: str) -> None:
    """Refuse a malformed repo id before a card names it or a request is made."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"{repo_id!r} is not a Hub repo id (expected 'user/name'): {err}") from err


def uploaded_files(checkpoint_dir: Path, config: dict[str, Any]) -> list[str]:
    """What ``push`` uploads from a checkpoint folder, in order: config.json, model.safetensors and
    README.md; the exported networks config.json names (model.onnx, model.int8.onnx); the score
    cohort it names (cohort.safetensors); EXPERIMENTS.md if the folder has one."""
    cohort = [str(config["cohort"]["file"])] if isinstance(config.get("cohort"), dict) else []
    experiments = [EXPERIMENTS_FILE] if (Path(checkpoint_dir) / EXPERIMENTS_FILE).is_file() else []
    return [*ALWAYS_UPLOADED, *exported_files(config.get("onnx")), *cohort, *experiments]


def push(
    checkpoint_dir: Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Create (or reuse) the model repo and upload the folder's :func:`uploaded_files`.

    The folder is checked, and a card generated if it has none, before any request is made; the
    token is the argument, else HF_TOKEN, else the ``hf auth login`` cache. Returns the commit URL.
    """
    checkpoint_dir = Path(checkpoint_dir)
    config = read_config(checkpoint_dir)
    uploaded = uploaded_files(checkpoint_dir, config)
    check_repo_id(repo_id)
    if not has_real_card(checkpoint_dir):
        write_model_card(checkpoint_dir, repo_id=repo_id)
    token = token or get_token()
    if not token:
        raise HubError("No Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login`.")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=checkpoint_dir,
            repo_id=repo_id,
            repo_type="model",
            commit_message=commit_message,
            allow_patterns=uploaded,
        )
    except HUB_ERRORS as err:
        raise HubError(f"Could not push {checkpoint_dir} to {repo_id}: {err}") from err
    return commit.commit_url


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``push`` sub-command."""
    parser.description = (
        "Write a model card (README.md) for a checkpoint folder from its config.json and weights plus the "
        "options below, then upload config.json, model.safetensors and README.md (and model.onnx, model.int8.onnx "
        "after `python -m train export [--int8]`, cohort.safetensors after `python -m train calibrate --cohort`, "
        f"and {EXPERIMENTS_FILE} when the folder has one, which the card then links) to a Hub model repo (created "
        "if needed). The card is regenerated on every call: put hand-written sections of current facts in --extra, "
        f"and history, probes and ablations in CHECKPOINT_DIR/{EXPERIMENTS_FILE}."
    )
    parser.add_argument(
        "checkpoint_dir",
        type=Path,
        metavar="CHECKPOINT_DIR",
        help="checkpoint folder holding config.json and model.safetensors",
    )
    parser.add_argument(
        "--repo-id",
        required=True,
        metavar="ID",
        help="Hub model repo, 'user/name' or 'org/name'; also used in the card's usage example",
    )
    parser.add_argument(
        "--private", action="store_true", help="create the repo as private (an existing repo keeps its visibility)"
    )
    parser.add_argument(
        "--token", help="Hub token with write access (default: HF_TOKEN, else the `hf auth login` cache)"
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        metavar="METRICS.json",
        help="results JSON of `python -m train evaluate --output`: EER and minDCF go into the card and its model-index",
    )
    parser.add_argument(
        "--data-info",
        type=Path,
        metavar="DATA.yaml",
        help="YAML or JSON list of the training sets, each with name, licence, attribution, url and "
        "optionally hub_id, for the card's training-data section",
    )
    parser.add_argument(
        "--extra",
        type=Path,
        metavar="SECTIONS.md",
        help="Markdown appended verbatim to the card (current comparisons; history and ablations belong in "
        f"CHECKPOINT_DIR/{EXPERIMENTS_FILE}, uploaded and linked)",
    )
    parser.add_argument("--license", default=HUB_LICENSE, help=f"licence id for the card (default: {HUB_LICENSE})")
    parser.add_argument("--commit-message", default=DEFAULT_COMMIT_MESSAGE, help="message of the Hub commit")
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="write or refresh CHECKPOINT_DIR/README.md and stop, without contacting the Hub",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``push``; problems with the folder, the options or the Hub are one line, exit status 2."""
    try:
        check_repo_id(args.repo_id)
        card = write_model_card(
            args.checkpoint_dir,
            metrics=_load(args.metrics),
            data=_load(args.data_info),
            command=training_command(args.checkpoint_dir),
            extra_sections=args.extra.read_text() if args.extra else "",
            repo_id=args.repo_id,
            license=args.license,
        )
        if args.card_only:
            print(f"wrote {card}")
            return 0
        url = push(
            args.checkpoint_dir,
            args.repo_id,
            token=args.token,
            private=args.private,
            commit_message=args.commit_message,
        )
    except (HubError, OSError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"pushed {args.checkpoint_dir} to {url}")
    return 0


def _load(path: Path | None) -> Any:
    """A JSON or YAML option file (YAML reads both), or None when the option is not given."""
    return yaml.safe_load(path.read_text()) if path else None
