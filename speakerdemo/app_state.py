"""What the web app shares between sessions: the loaded models, the persistent gallery, model cards.

Kept apart from the Gradio layout and handlers (``speakerdemo.ui``) because it is the app's
process-wide state: created once by ``app.py``, read by every request, changed only under a lock.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from .checkpoint import CONFIG_FILE, CheckpointError
from .encoder import SpeakerEncoder
from .gallery import Gallery


def available_checkpoints(folder: Path) -> dict[str, str]:
    """Checkpoint folders (those with a config.json) by name."""
    if not folder.is_dir():
        return {}
    return {p.name: str(p) for p in sorted(folder.iterdir()) if (p / CONFIG_FILE).is_file()}


# A Markdown link to a file beside the card ("[the experiments](EXPERIMENTS.md)"): not a web
# address, an anchor or a mail link.
RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)\)", re.I)


def read_model_card(source: str) -> str:
    """The model card's Markdown without its YAML header, from a folder or the Hub.

    Links to files beside the card (its EXPERIMENTS.md) would point into the app's own site: they
    become the file's path in a local checkpoint, and its page on the Hub for a Hub repo.
    """
    path = Path(source) / "README.md"
    try:
        if path.is_file():
            text = path.read_text()
            text = RELATIVE_LINK.sub(lambda m: f"{m[1]} (`{Path(source) / m[2]}`)", text)
        else:
            from huggingface_hub import ModelCard

            text = ModelCard.load(source).content
            text = RELATIVE_LINK.sub(lambda m: f"[{m[1]}](https://huggingface.co/{source}/blob/main/{m[2]})", text)
    except Exception as err:  # an unreachable Hub must not stop the demo; say so in the panel
        return f"*Model card unavailable: {err}*"
    return re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S).strip()


class Models:
    """Encoders loaded once each (the default at start-up, others on first use), shared read-only.

    Errors are ``gr.Error`` because they reach a user: an unknown name, or a checkpoint that
    cannot be loaded (its CheckpointError message says why).
    """

    def __init__(self, default: str, choices: dict[str, str], device: str | None = None, backend: str = "auto") -> None:
        self.device = device
        self.backend = backend
        self.default = default
        self.choices = dict(choices)
        if default not in self.choices:
            self.choices = {default: default, **self.choices}
        self._loaded: dict[str, SpeakerEncoder] = {}
        self._lock = threading.Lock()
        self.get(default)

    def get(self, name: str | None) -> SpeakerEncoder:
        """The encoder called ``name`` (the default for None or ""), loading it on first use."""
        name = name or self.default
        if name not in self.choices:
            raise gr.Error(f"Unknown model {name!r}.")
        with self._lock:
            if name not in self._loaded:
                try:
                    self._loaded[name] = SpeakerEncoder.from_pretrained(
                        self.choices[name], device=self.device, backend=self.backend
                    )
                except CheckpointError as err:
                    raise gr.Error(str(err)) from None
            return self._loaded[name]


class SharedGallery:
    """The persistent gallery of ``--gallery FILE``: changed under a lock, saved atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.gallery = Gallery.load(path) if path.exists() else Gallery()

    def update(self, change: Callable[[Gallery], None]) -> Gallery:
        """Apply ``change`` to a copy and save it; the shared gallery changes only if the save succeeds."""
        with self.lock:
            candidate = self.gallery.copy()
            change(candidate)
            candidate.save(self.path)
            self.gallery = candidate
            return candidate.copy()

    def snapshot(self) -> Gallery:
        """A copy of the current gallery, which later updates do not change."""
        with self.lock:
            return self.gallery.copy()
