"""The encoder network exported to ONNX, and run with ONNX Runtime on the CPU.

Only the network is exported: log-mel frames and their mask in, the embedding and the pooling's
attention weights out, with batch and length dynamic. Audio loading, the VAD, the log-mel front end
and windowing stay where they are (``speakerdemo.audio``, ``speakerdemo.features``): they are a few
milliseconds of numpy and torch per clip, and keeping them in one place keeps the two backends'
inputs identical. A checkpoint's ``config.json`` names the file under ``"onnx"``
(:data:`ONNX_FILE`, its inputs, outputs and opset) and, when ``python -m train export --int8`` made
one, its int8 copy under ``"onnx"["int8"]`` (:data:`INT8_FILE`); ``SpeakerEncoder`` runs the int8
network, else the fp32 one, when ONNX Runtime is installed and the encoder runs on the CPU
(``backend="auto"``).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write, atomic_write_bytes
from .models.output import EncoderOutput

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
QUANTIZED_OPS = ("Conv",)
# Convolutions left in fp32 (by a part of the exporter's node names, "/model/<module path>/..."): the
# first layer, which sees the features (each member's, in an ensemble: "/model/members.0/layer1/").
# Measured on the single-network checkpoint (lowest cosine to torch over 64 training clips; ONNX
# Runtime profile of one 20-s window, two cores): every convolution in int8 0.99988, 30.6 ms; all
# but the first layer 0.99994, 34.7 ms; fp32 66 ms.
KEPT_FP32 = ("/layer1/",)
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


def quantize_network(source: Path, target: Path, calibration: Sequence[np.ndarray]) -> dict[str, Any]:
    """Write an int8 copy of the exported network ``source`` to ``target``, atomically.

    Static quantisation (QDQ) of the convolutions only (but :data:`KEPT_FP32`): weights per output
    channel, inputs per tensor with ranges measured on ``calibration`` (normalised log-mel frames
    of real clips, one clip per run). Batch norm, squeeze-excitation, the residual additions, the
    pooling's softmax and statistics read and write fp32 (:func:`_feed_fp32_to_the_rest`):
    quantising every op added more (de)quantisation than the int8 kernels saved (1 x 60 s on the
    shipped ECAPA-TDNN, two cores: all ops 253 ms, convolutions only 107 ms, fp32 148 ms).
    Returns the ``"int8"`` entry of config.json's ``"onnx"`` (the caller adds where the frames came from).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            frames = next(self.items, None)
            if frames is None:
                return None
            return {"feats": frames[None].astype(np.float32), "mask": np.ones((1, len(frames)), dtype=bool)}

    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / INT8_FILE
        # The quantiser logs a warning per 1-d tensor it leaves alone: none of them is a problem.
        root.setLevel(logging.ERROR)
        try:
            # auto_merge: a strided convolution's output length, floor((T - 1) / 2) + 1, and the
            # mask sliced to it, ceil(T / 2), are one number the shape inference cannot prove equal
            # (the 2-D encoders); it changes nothing where no such pair meets (ECAPA-TDNN).
            quant_pre_process(str(source), str(prepared), auto_merge=True)
            kept = [
                node.name
                for node in onnx.load(str(prepared)).graph.node
                if node.op_type in QUANTIZED_OPS and any(part in node.name for part in KEPT_FP32)
            ]
            quantize_static(
                str(prepared),
                str(quantized),
                Frames(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=kept,
            )
        finally:
            root.setLevel(level)
        model = onnx.load(str(quantized))
        _feed_fp32_to_the_rest(model, set(kept))
        atomic_write_bytes(target, model.SerializeToString())
    return {
        "file": target.name,
        "ops": list(QUANTIZED_OPS),
        "kept_fp32": kept,
        "weights": "int8, per output channel",
        "activations": "int8, per tensor, static",
    }


def _feed_fp32_to_the_rest(model: Any, kept: set[str]) -> None:
    """Give ops other than the int8 convolutions the fp32 tensor where one exists, not its
    quantised copy.

    The quantiser routes all readers of a quantised tensor through one DequantizeLinear: the
    residual additions of ECAPA-TDNN then see int8-rounded values, and ONNX Runtime does not fuse
    a DequantizeLinear with two readers into its int8 convolution, so the three block-input
    convolutions ran dequantised in fp32. Rewired, they run in int8 and the additions are exact.
    The output of an int8 convolution is int8 (its QuantizeLinear is fused into it): its readers
    keep the DequantizeLinear.
    """

    def quantised(node: Any) -> bool:
        return node.op_type in QUANTIZED_OPS and node.name not in kept

    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if quantised(node):
            continue
        for i, name in enumerate(node.input):
            dequantize = producers.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = producers.get(dequantize.input[0])
            if quantize is None or quantize.op_type != "QuantizeLinear":
                continue
            source = producers.get(quantize.input[0])
            if source is None or not quantised(source):
                node.input[i] = quantize.input[0]


def exported_files(entry: dict | None) -> list[str]:
    """The files a config.json ``"onnx"`` entry names: the fp32 network, then its int8 copy if any."""
    if not entry:
        return []
    int8 = entry.get("int8")
    return [str(entry.get("file", ONNX_FILE))] + ([str(int8.get("file", INT8_FILE))] if int8 else [])


def onnx_runtime_available() -> bool:
    """Whether ONNX Runtime can be imported here (it is an optional dependency of inference)."""
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxNetwork:
    """An exported encoder network in an ONNX Runtime session: called like the torch encoder.

    ``name`` says where the bytes came from, for error messages.
    """

    def __init__(self, model_bytes: bytes, name: str, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise OnnxError("onnxruntime is not installed (pip install onnxruntime).") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: spinning ones take the cores from the torch and
        # numpy work between runs (front end, next window). 8 clips of 60 s: 1.41 s spinning, 1.02 s not.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: shape-inference notes are not for users
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ONNX Runtime raises its own exception types for every kind of damage
            raise OnnxError(f"{name} is not a readable ONNX model: {err}") from err
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != (list(INPUTS), list(OUTPUTS)):
            raise OnnxError(f"{name} has inputs {names[0]} and outputs {names[1]}, not {INPUTS} and {OUTPUTS}.")

    def __call__(self, feats: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        embedding, weights = self.session.run(
            list(OUTPUTS),
            {"feats": feats.detach().float().cpu().numpy(), "mask": mask.detach().cpu().numpy().astype(bool)},
        )
        return EncoderOutput(torch.from_numpy(np.asarray(embedding)), torch.from_numpy(np.asarray(weights)))
