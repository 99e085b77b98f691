"""A run's records: train.log (Python logging), and per-step metrics in metrics.jsonl, TensorBoard
when installed, and a curves plot at the end.

Only the main process writes them (``enabled``); a resumed run first drops what the interrupted
one logged after its last checkpoint, so that every step appears once.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("train")


def setup_logging(run_dir: Path | None, main: bool = True) -> None:
    """Log to stderr, and to run_dir/train.log from the main process; other processes warn only."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None and main:
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )


class MetricLog:
    """Per-step metrics to metrics.jsonl, TensorBoard when installed, and a curves plot."""

    def __init__(self, run_dir: Path, enabled: bool, resumed_at: int | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step hides the events an interrupted run logged after its last checkpoint.
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resumed_at)
            except ImportError:
                log.info("tensorboard is not installed: metrics go to metrics.jsonl only")

    def write(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the curve has no duplicates.

        A run killed mid-write leaves a torn last line; it was logged after the checkpoint too.
        """
        if not (self.enabled and self.path.exists()):
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if row["step"] <= step:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))

    def plot(self, out: Path) -> None:
        """One panel per metric over the steps (without matplotlib, nothing)."""
        if not (self.enabled and self.path.exists()):
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        keys = sorted({k for r in rows for k in r} - {"step", "lr", "samples_per_s"})
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for ax, key in zip(axes[0], keys):
            points = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
            ax.set_title(key)
            ax.set_xlabel("step")
        fig.tight_layout()
        fig.savefig(out, dpi=90)
        plt.close(fig)
