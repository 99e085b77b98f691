"""Training: the model in training (``TrainModel``), one optimizer step (``train_step``), the loop
(``fit``: mixed precision, schedules, the step for the head's margin warm-up, longer crops late,
validation, the best checkpoint, atomic checkpoints, exact resume, DistributedDataParallel under
torchrun), and the ``fit`` command around it.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader
from tqdm import tqdm

from speakerdemo.encoder import SpeakerEncoder, resolve_device
from speakerdemo.metrics import compute_eer

from .augment import SpecAugment
from .checkpoints import (
    STATE_FILE,
    atomic_save_pretrained,
    atomic_torch_save,
    init_from_checkpoint,
    restore_state,
    training_state,
)
from .config import OPTIMIZERS, SCHEDULES, build, load_config
from .data import NO_CLASS, Utterance
from .distill import TEACHERS, distillation_losses
from .distributed import Dist, init_distributed
from .hw4 import Hw4TestItem, predicted_classes
from .logs import MetricLog, setup_logging
from .prepare import Prepared, prepare_data
from .sampler import ResumableSampler
from .trials import TrialSet, embed_clips

log = logging.getLogger("train")


# ----------------------------------------------------------------------------- the model in training
class TrainModel(nn.Module):
    """SpeakerEncoder + SpecAugment + head (+ the distillation projection): crops and labels in,
    loss and logits out.

    Crops are waveforms (B, N), or features (B, T, F) for data sets that ship features (HW4):
    those already are the front end's output, so they go straight to SpecAugment. Crops are never
    padded, so every frame is real. With a teacher (``distill``), ``targets`` are its embeddings of
    the same crops, and the distillation losses join the head's loss through ``projection``, which
    lives here (trained, resumed) and not in the encoder (never in a checkpoint).
    """

    def __init__(
        self, encoder: SpeakerEncoder, specaug: SpecAugment, distill: dict | None = None, teacher_dim: int = 0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.specaug = specaug
        self.distill = distill if teacher_dim else None
        self.projection = nn.Linear(encoder.model.embed_dim, teacher_dim) if teacher_dim else None

    @classmethod
    def from_config(cls, cfg: dict, classes: list[str]) -> TrainModel:
        """The model a resolved config describes, with a fresh head over ``classes``."""
        encoder = SpeakerEncoder(frontend=cfg["frontend"], encoder=cfg["encoder"], head=cfg["head"], classes=classes)
        aug, distill = cfg["augment"], cfg["distill"]
        teacher_dim = TEACHERS[distill["teacher"]].embed_dim if distill["teacher"] else 0
        specaug = SpecAugment(aug["spec_freq_mask"], aug["spec_time_mask"], aug["spec_prob"])
        return cls(encoder, specaug, distill, teacher_dim)

    def forward(
        self, crops: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, logits without margin of the labelled crops, the loss terms by name for the log)."""
        if crops.dim() == 3:
            feats = crops
            mask = torch.ones(crops.shape[:2], dtype=torch.bool, device=crops.device)
        else:
            with torch.no_grad():
                feats, mask = self.encoder.frontend(crops)
        embedding = self.encoder.model(self.specaug(feats), mask).embedding.float()
        known = labels != NO_CLASS  # crops of unlabelled sources teach through distillation alone
        result = self.encoder.head(embedding[known], labels[known])
        loss = result.loss if bool(known.any()) else embedding.sum() * 0.0
        terms = {"class_loss": loss}
        if targets is not None and self.projection is not None:
            cosine, similarity = distillation_losses(embedding, self.projection(embedding), targets)
            terms.update(distill_cosine=cosine, distill_similarity=similarity)
            loss = loss + self.distill["cosine_weight"] * cosine + self.distill["similarity_weight"] * similarity
        return loss, result.logits, terms


# ----------------------------------------------------------------------------- one step
class AccuracyTally:
    """Training accuracy over every labelled crop since the last log, not one batch's.

    One batch's accuracy moves in steps of 1/batch and reads 0 or 1 for long stretches of a run
    (all wrong at the start, all right once the head memorises the batch), which says little;
    counting every crop between two logs gives a fraction that moves. It counts the head's logits
    without the margin (``HeadOutput.logits``), so a large margin cannot hold it at 0.
    """

    def __init__(self) -> None:
        self.correct, self.count = 0, 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count a batch: ``logits`` (N, classes) of its ``labels`` (N,) labelled crops."""
        self.correct += int((logits.argmax(dim=1) == labels).sum())
        self.count += len(labels)

    @property
    def accuracy(self) -> float:
        """The fraction right so far (NaN before any labelled crop: distillation-only batches)."""
        return self.correct / self.count if self.count else float("nan")

    def take(self) -> float:
        """The fraction right since the last ``take``, and start counting again."""
        accuracy = self.accuracy
        self.correct, self.count = 0, 0
        return accuracy


class StepResult(NamedTuple):
    """What ``fit`` logs of a step: the batch's loss and logits, the gradient norm before clipping,
    and the loss's terms (classification, distillation) by name."""

    loss: torch.Tensor
    logits: torch.Tensor
    grad_norm: torch.Tensor
    terms: dict[str, torch.Tensor]


def autocast(device: torch.device, amp: str) -> torch.autocast:
    """Mixed precision on CUDA (``train.amp`` bf16 or fp16); the CPU always runs fp32."""
    enabled = device.type == "cuda" and amp in ("bf16", "fp16")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16, enabled=enabled)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler("cuda") if device.type == "cuda" and amp == "fp16" else None


def train_step(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    crops: torch.Tensor,
    labels: torch.Tensor,
    *,
    amp: str,
    grad_clip: float,
    scaler: torch.amp.GradScaler | None = None,
    teacher: nn.Module | None = None,
) -> StepResult:
    """One optimizer step on a batch already on the model's device: the teacher's embeddings of
    the crops (when distilling), forward under autocast, backward (scaled with ``scaler``),
    gradient clipping, the optimizer's step.

    ``net`` may be the DistributedDataParallel wrapper, whose backward averages the gradients.
    """
    targets = teacher(crops) if teacher is not None else None
    with autocast(crops.device, amp):
        loss, logits, terms = net(crops, labels, targets)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return StepResult(loss, logits, grad_norm, terms)


# ----------------------------------------------------------------------------- validation
def validate(
    encoder: SpeakerEncoder,
    val_utts: list[Utterance],
    labels: dict[str, int],
    trials: TrialSet | None,
    frames: dict[str, int] | None = None,
) -> dict[str, float]:
    """Utterance accuracy (logits without margin, full utterances) and the EER of ``trials`` if given.

    ``frames`` marks feature data sets (HW4): their utterances are feature files, classified by
    ``encoder.model`` and the head directly; audio clips go through the encoder's front end.
    """
    encoder.eval()
    metrics: dict[str, float] = {}
    known = [u for u in val_utts if u.speaker in labels]
    if known:
        if frames is not None:
            items = [Hw4TestItem(str(u.file), frames[u.path]) for u in known]
            predicted = predicted_classes(encoder, Path("/"), items, batch_size=32)
        else:
            embeddings = embed_clips(encoder, [u.file for u in known], class_logits=True, desc="validation")
            predicted = [int(np.argmax(e.class_logits)) for e in embeddings]
        metrics["val_accuracy"] = float(np.mean([p == labels[u.speaker] for u, p in zip(known, predicted)]))
    if trials is not None:
        metrics["val_eer"] = compute_eer(*trials.scores(encoder))[0]
    encoder.train()
    return metrics


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new > old if metric.endswith("accuracy") else new < old


def _validate_and_keep_best(
    cfg: dict, run_dir: Path, model: TrainModel, data: Prepared, d: Dist, progress: dict, metrics: MetricLog, sched: Any
) -> None:
    """Validation runs on rank 0; the others wait. The best checkpoint is written atomically."""
    if d.main and (data.val_utts or data.trials):
        values = validate(model.encoder, data.val_utts, data.labels, data.trials, data.val_frames)
        metrics.write(progress["step"], **values)
        log.info("step %d: %s", progress["step"], " ".join(f"{k}={v:.4f}" for k, v in values.items()))
        key = cfg["train"]["best_metric"]
        if key in values and _better(key, values[key], progress["best"]):
            progress["best"] = values[key]
            atomic_save_pretrained(model.encoder, run_dir / "best")
        if isinstance(sched, ReduceLROnPlateau) and key in values:
            sched.step(-values[key] if key.endswith("accuracy") else values[key])
    if d.world > 1:
        dist.barrier()


# ----------------------------------------------------------------------------- fit
def fit(cfg: dict, run_dir: Path, data: Prepared, d: Dist, resume: bool = False) -> Path:
    """Train until ``cfg['train']['steps']`` optimizer steps; returns the folder of the final checkpoint."""
    t = cfg["train"]
    torch.manual_seed(cfg["seed"])
    device = resolve_device(cfg["device"])
    model = TrainModel.from_config(cfg, data.classes)
    head = model.encoder.head
    state_path = run_dir / STATE_FILE
    resumed = resume and state_path.exists()
    if t["init_from"] and not resumed:  # a resumed run restores its own weights
        init_from_checkpoint(model.encoder, Path(t["init_from"]))
    model = model.to(device)
    if t["compile"]:
        model.encoder.model = torch.compile(model.encoder.model)
    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = build(OPTIMIZERS, cfg["optim"], model.parameters())
    sched = build(SCHEDULES, cfg["schedule"], opt, t["steps"])
    scaler = grad_scaler(device, t["amp"])
    teacher = TEACHERS[cfg["distill"]["teacher"]]().to(device) if cfg["distill"]["teacher"] else None
    if d.main and t["best_metric"] == "val_eer" and data.trials is None:
        log.warning(
            "no held-out speakers or trial list: no validation EER, so no best/ checkpoint "
            "(hold out speakers, set data.trials, or set train.best_metric=val_accuracy)"
        )

    dataset = data.dataset
    sampler = ResumableSampler(len(dataset), t["batch_size"], cfg["seed"], d)
    if sampler.batches_per_epoch() == 0:
        raise ValueError(f"{len(dataset)} training crops are fewer than one batch of {t['batch_size']} per process.")
    progress = {"step": 0, "epoch": 0, "batch": 0, "best": None, "crop_samples": dataset.crop_samples}
    if resumed:
        progress = restore_state(state_path, model, opt, sched, scaler)
    metrics = MetricLog(run_dir, d.main, resumed_at=progress["step"] if resumed else None)
    if resumed:
        metrics.truncate_after(progress["step"])
        log.info("resumed from step %d (epoch %d, batch %d)", progress["step"], progress["epoch"], progress["batch"])
    total = t["steps"]
    long_crop = int(t["long_crop_seconds"] * model.encoder.frontend.config.sample_rate)
    bar = tqdm(
        total=total, initial=progress["step"], desc="training", unit="step", disable=not d.main, dynamic_ncols=True
    )
    model.train()
    seen, started = 0, time.perf_counter()
    tally = AccuracyTally()
    while progress["step"] < total:
        if long_crop and progress["batch"] == 0 and progress["step"] >= t["long_crop_from"] * total:
            progress["crop_samples"] = long_crop
        dataset.crop_samples = progress["crop_samples"]
        dataset.epoch = sampler.epoch = progress["epoch"]
        sampler.start_batch = progress["batch"]
        # The loader's own generator: by default each new loader draws its workers' base seed from
        # the global RNG, so a resumed run (one extra loader) would get other dropout and masks.
        loader = DataLoader(
            dataset,
            t["batch_size"],
            sampler=sampler,
            num_workers=t["num_workers"],
            drop_last=True,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if t["num_workers"] else None,
            generator=torch.Generator().manual_seed(cfg["seed"] + progress["epoch"]),
        )
        for crops, labels in loader:
            head.set_step(progress["step"])  # the head warms its margin up (speakerdemo.losses)
            crops, labels = crops.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            step = train_step(
                net, opt, crops, labels, amp=t["amp"], grad_clip=t["grad_clip"], scaler=scaler, teacher=teacher
            )
            if not isinstance(sched, ReduceLROnPlateau):  # that one steps on the validation metric
                sched.step()
            progress["step"] += 1
            progress["batch"] += 1
            seen += crops.shape[0] * d.world
            tally.add(step.logits, labels[labels != NO_CLASS])
            rate = seen / (time.perf_counter() - started)
            lr = opt.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(
                loss=f"{step.loss.item():.3f}", acc=f"{tally.accuracy:.3f}", lr=f"{lr:.2e}", sps=f"{rate:.1f}"
            )
            if progress["step"] % t["log_every"] == 0:
                metrics.write(
                    progress["step"],
                    loss=step.loss.item(),
                    accuracy=tally.take(),
                    lr=lr,
                    grad_norm=float(step.grad_norm),
                    samples_per_s=rate,
                    **({name: value.item() for name, value in step.terms.items()} if len(step.terms) > 1 else {}),
                )
            last = progress["step"] >= total
            if progress["step"] % t["validate_every"] == 0 or last:
                _validate_and_keep_best(cfg, run_dir, model, data, d, progress, metrics, sched)
            if progress["step"] % t["checkpoint_every"] == 0 or last:
                if d.main:
                    atomic_torch_save(training_state(model, opt, sched, scaler, progress), state_path)
                if d.world > 1:
                    dist.barrier()
            if last:
                break
        else:
            progress["epoch"] += 1
            progress["batch"] = 0
    bar.close()
    final = run_dir / "model"
    if d.main:
        atomic_save_pretrained(model.encoder, final)
        metrics.plot(run_dir / "curves.png")
        log.info("finished %d steps; model in %s", total, final)
    return final


# ----------------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``fit`` sub-command."""
    parser.description = (
        "Train a speaker encoder. Every run gets a folder with the resolved config, the split, "
        "logs, metrics (jsonl + TensorBoard), curves.png and checkpoints."
    )
    parser.add_argument("--config", type=Path, help="YAML config (see train/configs/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=500 --set encoder.channels=256",
    )
    parser.add_argument("--run-dir", help="run folder (default: run_dir from the config, else runs/latest)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")


def run(args: argparse.Namespace) -> int:
    """Run ``fit``: the run folder gets config.yaml (every setting, and the command) before any data is read."""
    d = init_distributed()
    if args.resume:
        run_dir = Path(args.resume)
        resolved = run_dir / "config.yaml"
        if not resolved.exists():
            raise SystemExit(f"{run_dir} has no config.yaml: not a run folder to resume.")
        cfg = load_config(resolved, args.set)
    else:
        cfg = load_config(args.config, args.set)
        run_dir = Path(args.run_dir or cfg["run_dir"])
        cfg["run_dir"] = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir, d.main)
    if d.main:
        command = "python -m train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if args.resume and cfg["command"]:  # config.yaml keeps the command that started the run
            log.info("resumed with: %s", command)
        else:
            cfg["command"] = command
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    fit(cfg, run_dir, prepare_data(cfg, run_dir, d), d, resume=bool(args.resume))
    if d.world > 1:
        dist.destroy_process_group()
    return 0
