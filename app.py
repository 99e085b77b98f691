"""speakerdemo web app: ``python app.py [--model M] [--port N] [--share] [--gallery FILE] [--calibration FILE]``.

Parses arguments, loads the shared state (``speakerdemo.app_state``), builds the UI from
``speakerdemo.layout`` and launches it. Nothing else, but for one process setting
(``limit_malloc_arenas``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from pathlib import Path

import gradio as gr

from speakerdemo.adapt import AdaptationError, from_bytes
from speakerdemo.app_state import Models, SharedGallery, available_checkpoints
from speakerdemo.checkpoint import CHECKPOINTS_DIR
from speakerdemo.cli import add_model_options
from speakerdemo.layout import build_demo
from speakerdemo.ui import MAX_UPLOAD_MB, Demo

CHECKPOINTS = CHECKPOINTS_DIR  # a module attribute, so that a test can point the app at another folder
QUEUE_CONCURRENCY = 2  # requests run at once; more queue up (one CPU request already uses both cores)
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would, set before the server's threads exist).

    Gradio serves requests from a pool of threads, and glibc gives busy threads arenas of their
    own that hand freed memory back slowly: under 32 concurrent clients the app's RSS kept rising
    by about 80 MiB a minute with the default, and levelled off with two arenas
    (``python -m benchmarks.load_test``). A no-op where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def read_calibration(path: Path, models: Models) -> bytes:
    """The operator's calibration file, checked against the default model (exit with the reason if not)."""
    try:
        data = path.read_bytes()
        from_bytes(models.get(models.default), data)
    except (OSError, AdaptationError) as err:
        sys.exit(f"--calibration {path}: {err}")
    return data


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--gallery", type=Path, help="persistent gallery file shared by all sessions")
    # --model, --device, --backend, --max-seconds, --calibration: as the command line takes them; the
    # calibration serves every session that does not make its own.
    add_model_options(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    limit_malloc_arenas()
    checkpoints = available_checkpoints(CHECKPOINTS)
    by_folder = {str(Path(path).resolve()): name for name, path in checkpoints.items()}
    # A folder of checkpoints/ given as a path is that checkpoint, not a second dropdown entry.
    model = args.model if args.model in checkpoints else by_folder.get(str(Path(args.model).resolve()), args.model)
    models = Models(model, checkpoints, args.device, args.backend)
    demo = Demo(models, SharedGallery(args.gallery) if args.gallery else None, args.max_seconds)
    if args.calibration is not None:
        demo.calibration = read_calibration(args.calibration, models)
    blocks = build_demo(demo)
    blocks.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=64)
    blocks.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        theme=gr.themes.Soft(),
        footer_links=["api"],
    )


if __name__ == "__main__":
    main()
