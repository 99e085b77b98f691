"""``python -m train export``: write the checkpoint's encoder network as ``model.onnx`` for ONNX
Runtime (``speakerdemo.onnx_runtime``), check it against torch, and name it in config.json; with
``--int8``, also an int8 copy (``model.int8.onnx``) calibrated on the recipe's training clips.

After the export the checkpoint loads with ONNX Runtime on the CPU wherever onnxruntime is
installed (``SpeakerEncoder.from_pretrained(..., backend="auto")``, the app included: the int8 copy
when there is one), and a Hub push uploads the files with the rest of the folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.features import pad_frames
from speakerdemo.onnx_runtime import INT8_FILE, ONNX_FILE, OnnxError, OnnxNetwork, export_network, quantize_network
from speakerdemo.scoring import cosine

from .checkpoints import atomic_save_pretrained
from .config import load_config
from .data import DataError, Utterance
from .logs import setup_logging
from .prepare import load_source

log = logging.getLogger(__name__)
MIN_COSINE = 0.9999  # torch and ONNX embeddings of the same frames: the same up to float rounding
# torch and int8 embeddings of the same real clips. Measured on the shipped checkpoint: 0.99936 at
# worst over 51 LibriSpeech clips (median 0.99993); below this the copy is not written.
MIN_INT8_COSINE = 0.998
CALIBRATION_CLIPS = 64


def parity(encoder: SpeakerEncoder, network: OnnxNetwork, seed: int = 0) -> dict[str, float]:
    """Torch and ONNX on one padded batch of random frames of three lengths: the lowest cosine of
    their embeddings and the largest difference of their attention weights."""
    generator = torch.Generator().manual_seed(seed)
    n_mels = encoder.frontend.config.n_mels
    windows = [torch.randn(t, n_mels, generator=generator) for t in (80, 300, 517)]
    return _compare(encoder, network, [pad_frames(windows)])


def _compare(encoder: SpeakerEncoder, network: OnnxNetwork, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """The lowest cosine between torch's and ``network``'s embeddings over ``batches`` of
    (frames, mask), and the largest difference of their attention weights."""
    model = encoder.model.cpu()
    cosines, differences = [], []
    for feats, mask in batches:
        with torch.inference_mode():
            ours = model(feats, mask)
        theirs = network(feats, mask)
        cosines.append(np.diag(cosine(ours.embedding.numpy(), theirs.embedding.numpy())).min())
        differences.append(float((ours.weights - theirs.weights).abs().max()))
    return {"min_cosine": float(min(cosines)), "max_weight_difference": max(differences)}


def calibration_clips(recipe: Path, count: int) -> list[Utterance]:
    """``2 * count`` clips spread evenly over the recipe's training utterances (its held-out
    speakers excluded): the even ones set the int8 ranges, the odd ones check the result."""
    cfg = load_config(recipe, [])
    utts = [u for spec in cfg["data"]["sources"] for u in load_source(spec, cfg["seed"])[0]]
    if len(utts) < 2 * count:
        raise DataError(f"{recipe} lists {len(utts)} training clips; --int8 needs {2 * count}.")
    return [utts[i] for i in np.linspace(0, len(utts) - 1, 2 * count).round().astype(int)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``export`` sub-command."""
    parser.description = __doc__.split("\n\n")[0].replace("``", "")
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder (written in place)")
    parser.add_argument(
        "--int8",
        action="store_true",
        help=f"also write {INT8_FILE}: convolutions in int8, calibrated on --recipe's training clips",
    )
    parser.add_argument("--recipe", type=Path, help="the checkpoint's training recipe (YAML); needed by --int8")
    parser.add_argument(
        "--calibration-clips",
        type=int,
        default=CALIBRATION_CLIPS,
        help=f"clips that set the int8 ranges, and as many more that check them (default {CALIBRATION_CLIPS})",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``export``: the parity checks are printed as JSON; the checkpoint is rewritten atomically."""
    setup_logging(None)
    if not args.checkpoint.is_dir():
        raise DataError(f"{args.checkpoint} is not a checkpoint folder.")
    if args.int8 and args.recipe is None:
        raise DataError("--int8 needs --recipe: its training clips calibrate the int8 ranges.")
    encoder = SpeakerEncoder.from_pretrained(args.checkpoint, device="cpu", backend="torch")
    report: dict = {"checkpoint": str(args.checkpoint)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ONNX_FILE
        log.info("exporting the %s network to ONNX", encoder.encoder_config.get("name"))
        entry = export_network(encoder.model, encoder.frontend.config.n_mels, path)
        files = {ONNX_FILE: path.read_bytes()}
        network = _load(files[ONNX_FILE], ONNX_FILE)
        report.update(onnx=entry, **parity(encoder, network))
        if report["min_cosine"] < MIN_COSINE:
            raise DataError(
                f"The exported model disagrees with torch (cosine {report['min_cosine']:.6f}); not written."
            )
        if args.int8:
            clips = calibration_clips(args.recipe, args.calibration_clips)
            inputs = [encoder.network_inputs(u.file) for u in tqdm(clips, desc="calibration clips", leave=False)]
            ranges = [w.numpy() for windows in inputs[0::2] for w in windows]
            checks = [w for windows in inputs[1::2] for w in windows]
            log.info("quantising to int8 on %d clips, checking on %d more", len(clips) // 2, len(clips) // 2)
            entry["int8"] = quantize_network(path, Path(tmp) / INT8_FILE, ranges)
            entry["int8"]["calibration_clips"] = len(clips) // 2
            files[INT8_FILE] = (Path(tmp) / INT8_FILE).read_bytes()
            check = _compare(encoder, _load(files[INT8_FILE], INT8_FILE), [pad_frames([w]) for w in checks])
            entry["int8"]["min_cosine"] = check["min_cosine"]
            report["int8"] = check
            if check["min_cosine"] < MIN_INT8_COSINE:
                raise DataError(
                    f"The int8 model disagrees with torch on real clips (cosine {check['min_cosine']:.5f} "
                    f"< {MIN_INT8_COSINE}); nothing written."
                )
    encoder.use_onnx(network, entry, files)
    atomic_save_pretrained(encoder, args.checkpoint)
    print(json.dumps(report, indent=2))
    return 0


def _load(data: bytes, name: str) -> OnnxNetwork:
    try:
        return OnnxNetwork(data, name)
    except OnnxError as err:
        raise DataError(f"The exported {name} does not load in ONNX Runtime: {err}") from err
