"""Training throughput per encoder, and whether the real data loader keeps up with the train step.

Part 1, the train step alone: for each encoder (transformer, conformer, ECAPA-TDNN 256 and 512,
ResNet34 and Res2Net50 at widths 16 and 32), random audio crops (2 s, batch 32) through
``train.loop.train_step``, the step ``train.loop.fit`` takes: ``TrainModel`` (log-mel, SpecAugment,
encoder, AAM-softmax head) under the recipe's autocast (bf16 on CUDA), backward, gradient clipping
and an AdamW step. Head, optimizer and SpecAugment come from the augmented recipe
(train/configs/ecapa_speechocean_augmented.yaml: the shipped recipe plus augmentation, so that part
2 has an augmenter to time). Random audio is fine: no step depends on the content.

Part 2, the loader: a DataLoader over the crops ``train.prepare.crop_dataset`` makes for that
recipe (speechocean762 train clips, preloaded, through its ``train.augment.Augmenter``: noise,
babble, reverberation, speed; with fewer simulated rooms than the recipe's 200, since the cost
per crop does not depend on their number), 1 and 2 workers. It times the loader alone (seconds
per batch once the workers run), and the recipe's encoder training on the loader's batches;
"loader + step" slower than "step alone" means the loader (or its competition for the cores)
holds training back. On CUDA, the GPU busy fraction is the time between CUDA events around each
step's work over the wall time: an upper bound of the real busy time, since it includes gaps
inside a step.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from benchmarks import common
from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.encoder import resolve_device
from train.config import OPTIMIZERS, build, load_config
from train.data import label_map, manifest_source
from train.loop import TrainModel, grad_scaler, train_step
from train.prepare import crop_dataset

NAME = "train_throughput"
RECIPE = common.REPO_ROOT / "train" / "configs" / "ecapa_speechocean_augmented.yaml"
ENCODERS: dict[str, dict] = {
    "transformer": {"name": "transformer"},
    "conformer": {"name": "conformer"},
    "ecapa_tdnn 256": {"name": "ecapa_tdnn", "channels": 256},
    "ecapa_tdnn 512": {"name": "ecapa_tdnn", "channels": 512},
    "resnet34 16": {"name": "resnet34", "width": 16},
    "resnet34 32": {"name": "resnet34", "width": 32},
    "res2net50 16": {"name": "res2net50", "width": 16},
    "res2net50 32": {"name": "res2net50", "width": 32},
}


@dataclass
class StepResult:
    device: str
    encoder: str
    params: int
    timing: common.Timing
    batch: int


@dataclass
class LoaderResult:
    device: str
    workers: int
    loader: float
    step: float
    combined: float
    busy: float | None


class Trainer:
    """One model of the recipe and its optimizer, stepped by ``train.loop.train_step`` as in ``fit``."""

    def __init__(self, cfg: dict, encoder: dict, classes: int, device: torch.device) -> None:
        self.model = TrainModel.from_config({**cfg, "encoder": encoder}, [str(i) for i in range(classes)])
        self.model.to(device).train()
        self.optimizer = build(OPTIMIZERS, cfg["optim"], self.model.parameters())
        self.scaler = grad_scaler(device, cfg["train"]["amp"])
        self.settings = cfg["train"]
        self.device = device

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.encoder.model.parameters())

    def step(self, wav: torch.Tensor, labels: torch.Tensor) -> None:
        train_step(
            self.model,
            self.optimizer,
            wav.to(self.device, non_blocking=True),
            labels.to(self.device, non_blocking=True),
            amp=self.settings["amp"],
            grad_clip=self.settings["grad_clip"],
            scaler=self.scaler,
        )


def random_batch(batch: int, seconds: float, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=generator)
    return wav, torch.randint(0, classes, (batch,), generator=generator)


def sync_for(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


# ----------------------------------------------------------------------------- part 1
def step_speeds(cfg: dict, devices: list[torch.device], args: Any) -> list[StepResult]:
    results = []
    wav, labels = random_batch(args.batch, args.crop, args.classes)
    for device in devices:
        for name, encoder in ENCODERS.items():
            trainer = Trainer(cfg, encoder, args.classes, device)
            timing = common.time_calls(partial(trainer.step, wav, labels), args.steps, args.warmup, sync_for(device))
            results.append(StepResult(device.type, name, trainer.params, timing, args.batch))
            common.note(f"{device.type} {name}: {timing.median:.3f} s per step")
    return results


# ----------------------------------------------------------------------------- part 2
def recipe_crops(cfg: dict, corpus: Path, utterances: int, rirs: int, crop: float) -> Any:
    """The recipe's training crops and augmentation over a seeded sample of speechocean762 train clips."""
    utts = [u for u in manifest_source(corpus / "utterances.csv", corpus) if u.split == "train"]
    utts = random.Random(0).sample(utts, min(utterances, len(utts)))
    run = {**cfg, "data": {**cfg["data"], "crop_seconds": crop}, "augment": {**cfg["augment"], "simulated_rirs": rirs}}
    return crop_dataset(run, utts, label_map(utts))


def make_loader(dataset: Any, batch: int, workers: int, batches: int, device: torch.device) -> DataLoader:
    """As in ``train.loop.fit`` (prefetch 4, pinned memory on CUDA), sampling with replacement so
    that a small sample of clips still gives ``batches`` batches after the first."""
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=(batches + 1) * batch, generator=torch.Generator().manual_seed(0)
    )
    return DataLoader(
        dataset,
        batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )


def loader_alone(dataset: Any, batch: int, workers: int, batches: int, device: torch.device) -> float:
    """Seconds per batch once the first batch is out (worker start-up is not counted)."""
    it = iter(make_loader(dataset, batch, workers, batches, device))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


def loader_and_step(
    trainer: Trainer, dataset: Any, batch: int, workers: int, batches: int
) -> tuple[float, float | None]:
    """Seconds per training step fed by the loader, and the GPU busy fraction on CUDA."""
    cuda = trainer.device.type == "cuda"
    it = iter(make_loader(dataset, batch, workers, batches, trainer.device))
    trainer.step(*next(it))
    events = []
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        wav, labels = next(it)
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
        trainer.step(wav, labels)
        if cuda:
            end.record()
            events.append((begin, end))
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    busy = sum(b.elapsed_time(e) for b, e in events) / 1000 / wall if cuda else None
    return wall / batches, busy


def loader_speeds(cfg: dict, corpus: Path, devices: list[torch.device], args: Any) -> list[LoaderResult]:
    dataset = recipe_crops(cfg, corpus, args.loader_utts, args.rirs, args.crop)
    wav, labels = random_batch(args.batch, args.crop, args.classes)
    results = []
    for device in devices:
        trainer = Trainer(cfg, cfg["encoder"], args.classes, device)
        step = common.time_calls(partial(trainer.step, wav, labels), args.steps, args.warmup, sync_for(device)).median
        for workers in args.workers:
            alone = loader_alone(dataset, args.batch, workers, args.loader_batches, device)
            combined, busy = loader_and_step(trainer, dataset, args.batch, workers, args.loader_batches)
            results.append(LoaderResult(device.type, workers, alone, step, combined, busy))
            common.note(
                f"{device.type} loader with {workers} worker(s): {alone:.3f} s per batch alone, "
                f"{combined:.3f} s per step with training"
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    step = parser.add_argument_group("part 1, the train step")
    step.add_argument("--batch", type=int, default=32, help="crops per step")
    step.add_argument("--crop", type=float, default=2.0, help="crop seconds")
    step.add_argument("--classes", type=int, default=978, help="head size: the recipe's 326 speakers x 3 speeds")
    step.add_argument("--steps", type=int, default=10, help="timed steps per encoder")
    step.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    step.add_argument("--threads", type=int, default=2, help="torch intra-op threads of the training process")
    loader = parser.add_argument_group("part 2, the loader")
    loader.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts")
    loader.add_argument("--loader-batches", type=int, default=10, help="timed batches per loader run")
    loader.add_argument("--loader-utts", type=int, default=500, help="speechocean762 train clips preloaded")
    loader.add_argument("--rirs", type=int, default=20, help="rooms to simulate (the recipe's 200 take minutes)")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], help="default: cpu, and cuda when available")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.crop, args.steps, args.warmup = 4, 0.5, 2, 1
        args.loader_batches, args.loader_utts, args.rirs = 2, 16, 2
    common.set_threads(args.threads)
    devices = [torch.device(d) for d in args.devices or sorted({"cpu", resolve_device(None).type})]
    cfg = load_config(RECIPE, [])
    common.print_header(NAME, f"batch {args.batch} x {args.crop:g} s crops")
    common.note(
        f"recipe: {RECIPE.relative_to(common.REPO_ROOT)}; median of {args.steps} steps after {args.warmup} warm-up"
    )

    steps = step_speeds(cfg, devices, args)
    common.print_table(
        ["device", "encoder", "params M", "s/step", "samples/s", "spread"],
        [
            [
                r.device,
                r.encoder,
                common.fmt(r.params / 1e6, 2),
                common.fmt(r.timing.median, 3),
                common.fmt(r.batch / r.timing.median, 1),
                common.fmt(r.timing.spread, 2),
            ]
            for r in steps
        ],
    )
    by_name = {(r.device, r.encoder): r.timing.median for r in steps}
    print("\nStep time relative to ecapa_tdnn 256 (the default recipe's encoder):")
    common.print_table(
        ["device", "encoder", "s/step common.ratio"],
        [
            [r.device, r.encoder, common.ratio(r.timing.median, by_name.get((r.device, "ecapa_tdnn 256")))]
            for r in steps
        ],
    )

    corpus = common.data_or_skip(args.data, "speechocean762")
    if corpus is None:
        return 0
    loaders = loader_speeds(cfg, corpus, devices, args)
    encoder = cfg["encoder"]
    print(f"\nLoader vs train step ({encoder['name']} {encoder.get('channels', '')}, s per batch of {args.batch}):")
    common.print_table(
        [
            "device",
            "workers",
            "loader alone",
            "step alone",
            "loader + step",
            "loader / step",
            "(loader + step) / step",
            "GPU busy",
        ],
        [
            [
                r.device,
                r.workers,
                common.fmt(r.loader, 3),
                common.fmt(r.step, 3),
                common.fmt(r.combined, 3),
                common.ratio(r.loader, r.step),
                common.ratio(r.combined, r.step),
                "n/a" if r.busy is None else f"{100 * r.busy:.0f} %",
            ]
            for r in loaders
        ],
    )
    common.note("loader / step <= 1: the loader alone is fast enough; (loader + step) / step near 1: it does keep up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
