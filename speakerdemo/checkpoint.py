"""Reading and writing a checkpoint: a local folder or a Hub repo that rebuilds a SpeakerEncoder.

A checkpoint holds ``config.json`` (front end, encoder, head, class names, calibration) and
``model.safetensors``, and optionally its exported networks and its score cohort
(``cohort.safetensors``); nothing is ever unpickled. Every file in it is untrusted input: one that
cannot be found, read or matched to the rest is a :class:`CheckpointError` that says which and why.

:class:`~speakerdemo.encoder.SpeakerEncoder`'s Hub mixin methods delegate here and pass the encoder
class or instance in, so that this module never imports the encoder (which imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .atomic import atomic_write_bytes
from .cohort import Cohort
from .onnx_runtime import OnnxError, OnnxNetwork, exported_files, onnx_runtime_available

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
"""What may run the encoder network (see :func:`load`)."""
CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
"""The shipped checkpoints: ``checkpoints/`` beside the package in a source tree or an editable install."""
DEFAULT_MODEL = "ecapa-speechocean"
"""The checkpoint the app and the ``speakerdemo`` command load unless told otherwise: a name in
``CHECKPOINTS_DIR``, kept here so that both mean the same one."""
HUB_TAGS = ("speaker-verification", "speaker-identification", "speaker-embedding", "audio")
"""Tags of every speakerdemo model repo on the Hub (``save_pretrained`` cards and ``train push``)."""
HUB_LIBRARY = "speakerdemo"
HUB_LICENSE = "apache-2.0"  # of the code; a card may name the licence of its weights

Model = TypeVar("Model", bound=nn.Module)


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or trusted; the message says which and why."""


def config_json(encoder: nn.Module) -> dict[str, Any]:
    """config.json's content: the settings that rebuild ``encoder`` (a SpeakerEncoder), calibration
    included, naming its exported networks and cohort only where it has them to save."""
    return {
        "frontend": encoder.frontend.config.to_dict(),
        "encoder": encoder.encoder_config,
        "head": encoder.head_config,
        "classes": encoder.classes,
        "calibration": encoder.calibration.to_dict() if encoder.calibration else None,
        "window_seconds": encoder.window_seconds,
        "onnx": encoder.onnx_config if encoder.onnx is not None else None,
        "cohort": encoder.cohort.config() if encoder.cohort is not None else None,
    }


def save(write: Callable[..., str | None], folder: str | Path, encoder: nn.Module, **kwargs: Any) -> str | None:
    """Write ``encoder`` (a SpeakerEncoder) as a checkpoint: its score cohort when it has one, then
    config.json and the weights with ``write`` (the Hub mixin's ``save_pretrained``, given
    ``kwargs``), then the exported networks when they were loaded with it (:func:`config_json` names
    them only then)."""
    if encoder.cohort is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(folder) / encoder.cohort.config()["file"], encoder.cohort.to_bytes())
    result = write(folder, config=config_json(encoder), **kwargs)
    if encoder.onnx is not None:
        for name, data in encoder.onnx_files.items():
            atomic_write_bytes(Path(folder) / name, data)
    return result


def load(fetch: Callable[..., Model], source: str | Path, device: torch.device, backend: str, **kwargs: Any) -> Model:
    """The encoder of a local checkpoint folder or a Hub repo id on ``device``, with its cohort and,
    where ``backend`` asks for it, its exported network; ``fetch`` is the Hub mixin's
    ``from_pretrained`` of the encoder class, which reads config.json and calls :func:`build`.

    ``backend`` picks what runs the encoder network on the CPU: ``"onnx"`` the checkpoint's
    exported ``model.onnx`` in ONNX Runtime, ``"onnx-int8"`` its int8 copy
    (``model.int8.onnx``), ``"torch"`` the PyTorch module, ``"auto"`` the int8 copy, else the
    fp32 network, when the checkpoint has them and onnxruntime is installed. CUDA always runs
    torch. A damaged exported file is a CheckpointError unless ``backend="torch"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    path = Path(source)
    if path.is_dir() and not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} has no {CONFIG_FILE}: not a speakerdemo checkpoint.")
    if not path.is_dir() and (path.exists() or str(path).startswith((".", "/"))):
        raise CheckpointError(f"{path} is not a checkpoint folder.")
    try:
        model = fetch(source, **kwargs)
    except CheckpointError:
        raise
    except OSError as err:
        raise CheckpointError(f"Could not fetch {source!r}: {err}") from err
    except (TypeError, ValueError, AttributeError, KeyError, RuntimeError) as err:
        # config.json is untrusted input: not JSON, not UTF-8, not an object, unknown names, bad sizes.
        raise CheckpointError(f"{path}/{CONFIG_FILE} does not describe a speakerdemo model: {err}") from err
    model = model.to(device).eval()
    if model.cohort_config:
        model.cohort = _read_cohort(source, model.cohort_config, model.model.embed_dim, **kwargs)
    if backend != "torch" and model.device.type == "cpu":
        exported = _read_exported(source, model.onnx_config, backend, **kwargs)
        if exported is not None:
            model.use_onnx(*exported)
    return model


def build(
    cls: Callable[..., Model],
    *,
    model_id: str,
    revision: str | None,
    cache_dir: Any,
    force_download: bool,
    local_files_only: bool,
    token: Any,
    **model_kwargs: Any,
) -> Model:
    """``cls(**model_kwargs)`` (config.json's settings) with the checkpoint's weights: safetensors
    only, strict, so that a missing or misshapen tensor is an error, not a warning."""
    model = cls(**model_kwargs)
    if Path(model_id).is_dir():
        weights = Path(model_id) / WEIGHTS_FILE
    else:
        weights = Path(
            hf_hub_download(
                model_id,
                WEIGHTS_FILE,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        )
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing: checkpoints must ship {WEIGHTS_FILE}.")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {err}") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not match its config.json: {err}") from err
    return model


def _read_file(source: str | Path, name: str, **kwargs: Any) -> bytes:
    """The bytes of a file that config.json names (an exported network, the cohort) of a local
    checkpoint or a Hub repo; a name that is not a plain file name is refused, so that config.json
    cannot reach outside the checkpoint."""
    if Path(name).name != name:
        raise CheckpointError(f"config.json names the file {name!r}: it must be a file name inside the checkpoint.")
    if Path(source).is_dir():
        path = Path(source) / name
    else:
        options = {k: kwargs[k] for k in ("revision", "cache_dir", "force_download", "token") if k in kwargs}
        try:
            path = Path(hf_hub_download(str(source), name, **options))
        except OSError as err:
            raise CheckpointError(f"Could not fetch {name} of {source!r}: {err}") from err
    if not path.is_file():
        raise CheckpointError(f"{path} is missing, but config.json names it.")
    try:
        return path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err}") from err


def _read_cohort(source: str | Path, entry: dict[str, Any], embed_dim: int, **kwargs: Any) -> Cohort:
    """The score cohort that config.json's ``entry`` names, checked against the encoder's size."""
    if not isinstance(entry.get("file"), str):
        raise CheckpointError(f"{source}/{CONFIG_FILE}: the cohort entry must name its file.")
    try:
        cohort = Cohort.from_bytes(_read_file(source, entry["file"], **kwargs), entry)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err
    if cohort.dim != embed_dim:
        raise CheckpointError(
            f"{source}: the cohort's vectors have {cohort.dim} dimensions, the encoder's {embed_dim}."
        )
    return cohort


def _read_exported(
    source: str | Path, entry: dict[str, Any] | None, backend: str, **kwargs: Any
) -> tuple[OnnxNetwork, dict[str, Any], dict[str, bytes], bool] | None:
    """The exported network ``backend`` asks for, with the arguments of ``SpeakerEncoder.use_onnx``;
    None where the checkpoint has none (or there is no onnxruntime) and ``backend`` is ``"auto"``."""
    int8 = backend == "onnx-int8" or (backend == "auto" and bool((entry or {}).get("int8")))
    if not entry or (int8 and not entry.get("int8")):
        if backend != "auto":
            option = " --int8" if int8 else ""
            raise CheckpointError(
                f"{source} has no exported {'int8 ' if int8 else ''}ONNX model: "
                f"run `python -m train export{option}` on it."
            )
        return None
    if not onnx_runtime_available():
        if backend != "auto":
            raise CheckpointError(f"backend={backend!r} needs onnxruntime (pip install onnxruntime).")
        return None
    names = exported_files(entry)
    files = {name: _read_file(source, name, **kwargs) for name in names}
    name = names[-1 if int8 else 0]
    try:
        network = OnnxNetwork(files[name], name)
    except OnnxError as err:
        raise CheckpointError(str(err)) from err
    return network, entry, files, int8
