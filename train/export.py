"""``python -m train export``: write the checkpoint's encoder network as ``model.onnx`` for ONNX
Runtime (``speakerdemo.onnx_runtime``), check it against torch, and name it in config.json.

After the export the checkpoint loads with ONNX Runtime on the CPU wherever onnxruntime is
installed (``SpeakerEncoder.from_pretrained(..., backend="auto")``, the app included), and a Hub
push uploads the file with the rest of the folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from speakerdemo.encoder import SpeakerEncoder
from speakerdemo.features import pad_frames
from speakerdemo.onnx_runtime import ONNX_FILE, OnnxError, OnnxNetwork, export_network
from speakerdemo.scoring import cosine

from .checkpoints import atomic_save_pretrained
from .data import DataError
from .logs import setup_logging

log = logging.getLogger(__name__)
MIN_COSINE = 0.9999  # torch and ONNX embeddings of the same frames: the same up to float rounding


def parity(encoder: SpeakerEncoder, network: OnnxNetwork, seed: int = 0) -> dict[str, float]:
    """Torch and ONNX on one padded batch of random frames of three lengths: the lowest cosine of
    their embeddings and the largest difference of their attention weights."""
    generator = torch.Generator().manual_seed(seed)
    n_mels = encoder.frontend.config.n_mels
    windows = [torch.randn(t, n_mels, generator=generator) for t in (80, 300, 517)]
    feats, mask = pad_frames(windows)
    with torch.inference_mode():
        ours = encoder.model.cpu()(feats, mask)
    theirs = network(feats, mask)
    cosines = np.diag(cosine(ours.embedding.numpy(), theirs.embedding.numpy()))
    return {
        "min_cosine": float(cosines.min()),
        "max_weight_difference": float((ours.weights - theirs.weights).abs().max()),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``export`` sub-command."""
    parser.description = __doc__.split("\n\n")[0].replace("``", "")
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder (written in place)")


def run(args: argparse.Namespace) -> int:
    """Run ``export``: the parity check is printed as JSON; the checkpoint is rewritten atomically."""
    setup_logging(None)
    if not args.checkpoint.is_dir():
        raise DataError(f"{args.checkpoint} is not a checkpoint folder.")
    encoder = SpeakerEncoder.from_pretrained(args.checkpoint, device="cpu", backend="torch")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ONNX_FILE
        log.info("exporting the %s network to ONNX", encoder.encoder_config.get("name"))
        entry = export_network(encoder.model, encoder.frontend.config.n_mels, path)
        try:
            network = OnnxNetwork(path)
        except OnnxError as err:
            raise DataError(f"The exported model does not load in ONNX Runtime: {err}") from err
    check = parity(encoder, network)
    if check["min_cosine"] < MIN_COSINE:
        raise DataError(f"The exported model disagrees with torch (cosine {check['min_cosine']:.6f}); not written.")
    encoder.use_onnx(network, entry)
    atomic_save_pretrained(encoder, args.checkpoint)
    print(json.dumps({"checkpoint": str(args.checkpoint), "onnx": entry, **check}, indent=2))
    return 0
