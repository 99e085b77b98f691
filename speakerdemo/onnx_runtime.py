"""The encoder network exported to ONNX, and run with ONNX Runtime on the CPU.

Only the network is exported: log-mel frames and their mask in, the embedding and the pooling's
attention weights out, with batch and length dynamic. Audio loading, the VAD, the log-mel front end
and windowing stay where they are (``speakerdemo.audio``, ``speakerdemo.features``): they are a few
milliseconds of numpy and torch per clip, and keeping them in one place keeps the two backends'
inputs identical. A checkpoint's ``config.json`` names the file under ``"onnx"``
(:data:`ONNX_FILE`, its inputs, outputs and opset); ``SpeakerEncoder`` loads it when ONNX Runtime is
installed and the encoder runs on the CPU (``backend="auto"``).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write
from .models.output import EncoderOutput

ONNX_FILE = "model.onnx"
INPUTS = ("feats", "mask")
OUTPUTS = ("embedding", "weights")
OPSET = 17  # every op of the three encoders is in opset 17 (ONNX Runtime 1.14 and later)


class OnnxError(RuntimeError):
    """An exported model that cannot be written, read or run: the message says which and why."""


class _Network(nn.Module):
    """The encoder with plain tensor outputs, as ONNX needs them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(feats, mask)
        return out.embedding, out.weights


def export_network(model: nn.Module, n_mels: int, path: Path) -> dict[str, Any]:
    """Write ``model`` (an encoder of ``speakerdemo.models``) to ``path`` as ONNX, atomically.

    The trace runs on a batch whose second item is partly padding, so that the masked code path is
    the one recorded: it is exact for any mask, while the encoders skip masking when nothing is
    padded. Returns the ``"onnx"`` entry of ``config.json``.
    """
    feats = torch.randn(2, 200, n_mels)
    mask = torch.ones(2, 200, dtype=torch.bool)
    mask[1, 120:] = False
    network = _Network(model).eval().cpu()
    dynamic = {
        "feats": {0: "batch", 1: "frames"},
        "mask": {0: "batch", 1: "frames"},
        "embedding": {0: "batch"},
        "weights": {0: "batch", 1: "frames"},
    }

    def write(f: Any) -> None:
        # The tracer warns at the encoders' "nothing padded?" branch: the traced batch is padded on
        # purpose (see above), so the branch recorded is the general one. The TorchScript exporter is
        # deprecated in favour of torch.export, which needs onnxscript; it still exports every op here.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                network,
                (feats, mask),
                f,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )

    atomic_write(path, write)
    return {"file": path.name, "inputs": list(INPUTS), "outputs": list(OUTPUTS), "opset": OPSET}


def onnx_runtime_available() -> bool:
    """Whether ONNX Runtime can be imported here (it is an optional dependency of inference)."""
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxNetwork:
    """An exported encoder network in an ONNX Runtime session: called like the torch encoder.

    It keeps the file's bytes, so that an encoder saved again carries the same network.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise OnnxError("onnxruntime is not installed (pip install onnxruntime).") from err
        try:
            self.model_bytes = Path(path).read_bytes()
        except OSError as err:
            raise OnnxError(f"{path} cannot be read: {err}") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: shape-inference notes are not for users
        try:
            self.session = ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ONNX Runtime raises its own exception types for every kind of damage
            raise OnnxError(f"{path} is not a readable ONNX model: {err}") from err
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != (list(INPUTS), list(OUTPUTS)):
            raise OnnxError(f"{path} has inputs {names[0]} and outputs {names[1]}, not {INPUTS} and {OUTPUTS}.")

    def __call__(self, feats: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        embedding, weights = self.session.run(
            list(OUTPUTS),
            {"feats": feats.detach().float().cpu().numpy(), "mask": mask.detach().cpu().numpy().astype(bool)},
        )
        return EncoderOutput(torch.from_numpy(np.asarray(embedding)), torch.from_numpy(np.asarray(weights)))
