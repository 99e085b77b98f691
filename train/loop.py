"""The training loop: mixed precision, schedules, margin warm-up, validation, atomic checkpoints,
exact resume, and DistributedDataParallel under torchrun (only rank 0 writes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from speakerdemo.atomic import atomic_write, fsync_dir
from speakerdemo.encoder import CheckpointError, SpeakerEncoder
from speakerdemo.metrics import compute_eer

from .augment import SpecAugment
from .config import OPTIMIZERS, SCHEDULES
from .data import Trial, Utterance, safe_path
from .hw4 import Hw4TestItem
from .predict import batch_logits, batches, load_batch

log = logging.getLogger("train")

STATE_FILE = "state.pt"


# ----------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """torchrun sets WORLD_SIZE/RANK; gloo on CPU, NCCL on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(dist.get_rank(), dist.get_world_size())


class ResumableSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded over ranks, that can start mid-epoch.

    Unlike DistributedSampler it can skip the batches a resumed run has already seen, so a
    resumed run sees exactly the data an uninterrupted one would have.
    """

    def __init__(self, size: int, batch_size: int, seed: int, d: Dist) -> None:
        self.size, self.batch_size, self.seed, self.d = size, batch_size, seed, d
        self.epoch = 0
        self.start_batch = 0

    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.d.world)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        per_rank = self.batches_per_epoch() * self.batch_size
        mine = order[self.d.rank :: self.d.world][:per_rank]
        return iter(mine[self.start_batch * self.batch_size :].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.batch_size


# ----------------------------------------------------------------------------- optimisation
def build_optimizer(params: Any, cfg: dict) -> torch.optim.Optimizer:
    name = cfg.get("name", "adamw")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.01))
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                               weight_decay=cfg.get("weight_decay", 1e-4), nesterov=True)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}.")


def build_scheduler(opt: torch.optim.Optimizer, cfg: dict, total_steps: int) -> Any:
    """Stepped once per optimizer step, except reduce-on-plateau, stepped at each validation."""
    name = cfg.get("name", "cosine")
    sched = torch.optim.lr_scheduler
    if name == "cosine":
        warmup = cfg.get("warmup_steps", 0)
        floor = cfg.get("min_lr_ratio", 0.0)

        def factor(step: int) -> float:
            if step < warmup:
                return step / max(1, warmup)
            progress = (step - warmup) / max(1, total_steps - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return sched.LambdaLR(opt, factor)
    if name == "step":
        return sched.StepLR(opt, cfg["step_size"], cfg.get("gamma", 0.5))
    if name == "multistep":
        return sched.MultiStepLR(opt, cfg["milestones"], cfg.get("gamma", 0.1))
    if name == "exponential":
        return sched.ExponentialLR(opt, cfg["gamma"])
    if name == "plateau":
        return sched.ReduceLROnPlateau(opt, mode="min", factor=cfg.get("gamma", 0.5), patience=cfg.get("patience", 2))
    if name == "cyclic":
        return sched.CyclicLR(opt, cfg.get("base_lr", opt.param_groups[0]["lr"] / 10), opt.param_groups[0]["lr"],
                              step_size_up=cfg.get("step_size_up", 2000), cycle_momentum=False)
    raise ValueError(f"Unknown schedule {name!r}; choose one of {list(SCHEDULES)}.")


def margin_at(step: int, final: float, start: int, length: int) -> float:
    """Margin warm-up: 0 until ``start``, then linear to ``final`` over ``length`` steps."""
    if length <= 0:
        return final if step >= start else 0.0
    return final * min(1.0, max(0.0, (step - start) / length))


# ----------------------------------------------------------------------------- checkpoints
def atomic_torch_save(obj: Any, path: Path) -> None:
    """A training state written atomically: a crash leaves the old state or the new one."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_save_pretrained(model: SpeakerEncoder, folder: Path) -> None:
    """Save a Hub-format checkpoint into a fresh folder and swap it in with one rename."""
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old{os.getpid()}")
    if tmp.exists():
        _rmtree(tmp)
    model.save_pretrained(tmp)
    card = folder / "README.md"
    if card.exists():
        (tmp / "README.md").write_bytes(card.read_bytes())
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        _rmtree(old)
    fsync_dir(folder.parent)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)



# ----------------------------------------------------------------------------- the model in training
class TrainModel(nn.Module):
    """SpeakerEncoder + SpecAugment + head: crops and labels in, loss and logits out.

    Crops are waveforms (B, N), or features (B, T, F) for data sets that ship features (HW4):
    those already are the front end's output, so they go straight to SpecAugment. Crops are never
    padded, so every frame is real.
    """

    def __init__(self, encoder: SpeakerEncoder, specaug: SpecAugment) -> None:
        super().__init__()
        self.encoder = encoder
        self.specaug = specaug

    def forward(self, crops: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if crops.dim() == 3:
            feats = crops
            mask = torch.ones(crops.shape[:2], dtype=torch.bool, device=crops.device)
        else:
            with torch.no_grad():
                feats, mask = self.encoder.frontend(crops)
        out = self.encoder.model(self.specaug(feats), mask)
        result = self.encoder.head(out.embedding.float(), labels)
        return result.loss, result.logits


# ----------------------------------------------------------------------------- logging
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
        self.path.write_text("".join(l + "\n" for l in kept))

    def plot(self, out: Path) -> None:
        if not (self.enabled and self.path.exists()):
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = [json.loads(l) for l in self.path.read_text().splitlines() if l]
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


# ----------------------------------------------------------------------------- validation
def embed_files(encoder: SpeakerEncoder, files: list[Path], batch: int = 16, desc: str = "embedding") -> list[Any]:
    """Full-length embeddings of files (never cropped), in length-bucketed batches, with progress."""
    out: list[Any] = []
    for i in tqdm(range(0, len(files), batch), desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        out += encoder.embed_batch(files[i : i + batch], max_seconds=None, min_speech_seconds=0.0)
    return out


def trial_embeddings(encoder: SpeakerEncoder, trials: list[Trial], root: Path) -> dict[str, Any]:
    """Every file of a trial list embedded once, by its name in the list."""
    names = sorted({t.a for t in trials} | {t.b for t in trials})
    return dict(zip(names, embed_files(encoder, [safe_path(root, n) for n in names], desc="trial files")))


def trial_scores(encoder: SpeakerEncoder, trials: list[Trial], root: Path,
                 embeddings: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine score and label of every trial."""
    emb = embeddings if embeddings is not None else trial_embeddings(encoder, trials, root)
    scores = np.array([encoder.score(emb[t.a], emb[t.b]) for t in trials])
    return scores, np.array([t.label for t in trials])


def feature_predictions(encoder: SpeakerEncoder, utts: list[Utterance], frames: dict[str, int],
                        batch_size: int = 32) -> list[int]:
    """Class of each feature-file utterance at FULL length, computed exactly as ``predict`` does it.

    ``frames[u.path]`` is the utterance's length from the data set's index, so the files can be
    batched by length (and padded under a mask) without reading them twice.
    """
    items = [Hw4TestItem(str(u.file), frames[u.path]) for u in utts]
    predicted: dict[int, int] = {}
    for group in batches(items, batch_size):
        logits = batch_logits(encoder, *load_batch(Path("/"), [items[i] for i in group]))
        predicted.update(zip(group, logits.argmax(dim=1).tolist()))
    return [predicted[i] for i in range(len(items))]


def validate(encoder: SpeakerEncoder, val_utts: list[Utterance], labels: dict[str, int],
             trials: tuple[list[Trial], Path] | None, frames: dict[str, int] | None = None) -> dict[str, float]:
    """Utterance accuracy (logits without margin, full utterances) and EER on a trial list if given.

    ``frames`` marks feature data sets (HW4): their utterances are feature files, classified by
    ``encoder.model`` and the head directly; audio clips go through the encoder's front end.
    """
    encoder.eval()
    metrics: dict[str, float] = {}
    known = [u for u in val_utts if u.speaker in labels]
    if known:
        if frames is not None:
            predicted = feature_predictions(encoder, known, frames)
        else:
            predicted = [int(np.argmax(e.class_logits)) for e in embed_files(encoder, [u.file for u in known],
                                                                              desc="validation")]
        metrics["val_accuracy"] = float(np.mean([p == labels[u.speaker] for u, p in zip(known, predicted)]))
    if trials is not None:
        scores, lab = trial_scores(encoder, *trials)
        metrics["val_eer"] = compute_eer(scores, lab)[0]
    encoder.train()
    return metrics


# ----------------------------------------------------------------------------- fit
def _state(model: TrainModel, opt: Any, sched: Any, scaler: Any, progress: dict) -> dict:
    """Everything a resumed run needs to continue bit for bit, RNG states included (dropout and
    SpecAugment draw from the global generators)."""
    return {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "progress": progress,
    }


class StateError(ValueError):
    """A training state that cannot be resumed from (damaged, foreign, or of another model)."""


def _restore(path: Path, model: TrainModel, opt: Any, sched: Any, scaler: Any) -> dict:
    """Load a training state (tensors and plain containers only: ``weights_only=True``).

    Anything else (a pickle of other objects, a damaged file, a state of another configuration)
    is a StateError naming the file; nothing in it is executed.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise StateError(f"{path} is not a readable training state (only tensors and plain containers "
                         f"are loaded): {str(err).splitlines()[0]}") from err
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["progress"]
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise StateError(f"{path} does not fit this run's model and optimizer: {str(err).splitlines()[0]}") from err


def init_from_checkpoint(encoder: SpeakerEncoder, folder: Path) -> None:
    """Fine-tuning: start from a trained checkpoint's weights instead of a random initialisation.

    The encoder must have the same architecture. The classification head is taken over only when
    the checkpoint was trained on exactly these classes in this order (a row of the head is a
    speaker's centre, so a head from other speakers would be a wrong start, not a head start);
    otherwise it starts fresh. The run's own ``frontend``/``encoder`` settings must match the
    checkpoint's: a mismatch is refused, not silently half-loaded.
    """
    try:
        source = SpeakerEncoder.from_pretrained(folder, device="cpu")
    except CheckpointError as err:
        raise StateError(f"train.init_from: {err}") from err
    if source.frontend.config != encoder.frontend.config or source.encoder_config != encoder.encoder_config:
        raise StateError(f"train.init_from: {folder} has another front end or encoder than this run "
                         f"({source.encoder_config} vs {encoder.encoder_config}); copy its settings into the config.")
    encoder.frontend.load_state_dict(source.frontend.state_dict())
    encoder.model.load_state_dict(source.model.state_dict())
    same_head = source.classes == encoder.classes and \
        (source.head_config or {}).get("name") == (encoder.head_config or {}).get("name")
    if same_head:
        encoder.head.load_state_dict(source.head.state_dict())
    log.info("initialised from %s (%s)", folder, "encoder and head" if same_head else "encoder; new head")


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new > old if metric.endswith("accuracy") else new < old


def _autocast(device: torch.device, amp: str) -> Any:
    enabled = device.type == "cuda" and amp in ("bf16", "fp16")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


@dataclass
class Prepared:
    """Everything ``fit`` needs from the data stage.

    ``dataset`` yields (crop, label): ``train.data.CropDataset`` (waveforms) or
    ``train.hw4.Hw4CropDataset`` (features); both expose the ``crop_samples`` and ``epoch``
    attributes the loop sets. ``val_frames`` is set for feature data sets only: frames per
    validation utterance, for full-length validation on the feature files.
    """

    dataset: Dataset
    classes: list[str]
    labels: dict[str, int]
    val_utts: list[Utterance]
    trials: tuple[list[Trial], Path] | None
    val_frames: dict[str, int] | None = None


def fit(cfg: dict, run_dir: Path, data: Prepared, d: Dist, resume: bool = False) -> Path:
    """Train until ``cfg['steps']`` optimizer steps; returns the folder of the final checkpoint."""
    t = cfg["train"]
    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = SpeakerEncoder(frontend=cfg["frontend"], encoder=cfg["encoder"], head=cfg["head"],
                             classes=data.classes)
    aug = cfg["augment"]
    specaug = SpecAugment(aug.get("spec_freq_mask", 0), aug.get("spec_time_mask", 0), aug.get("spec_prob", 0.0))
    state_path = run_dir / STATE_FILE
    resumed = resume and state_path.exists()
    if t.get("init_from") and not resumed:  # a resumed run restores its own weights
        init_from_checkpoint(encoder, Path(t["init_from"]))
    model = TrainModel(encoder, specaug).to(device)
    if t.get("compile"):
        model.encoder.model = torch.compile(model.encoder.model)
    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = build_optimizer(model.parameters(), cfg["optim"])
    sched = build_scheduler(opt, cfg["schedule"], t["steps"])
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and t.get("amp") == "fp16" else None

    dataset = data.dataset
    sampler = ResumableSampler(len(dataset), t["batch_size"], cfg["seed"], d)
    if sampler.batches_per_epoch() == 0:
        raise ValueError(f"{len(dataset)} training crops are fewer than one batch of {t['batch_size']} per process.")
    progress = {"step": 0, "epoch": 0, "batch": 0, "best": None, "crop_samples": dataset.crop_samples}
    if resumed:
        progress = _restore(state_path, model, opt, sched, scaler)
    metrics = MetricLog(run_dir, d.main, resumed_at=progress["step"] if resumed else None)
    if resumed:
        metrics.truncate_after(progress["step"])
        log.info("resumed from step %d (epoch %d, batch %d)", progress["step"], progress["epoch"], progress["batch"])
    head = model.encoder.head
    total = t["steps"]
    long_crop = int(t.get("long_crop_seconds", 0) * model.encoder.frontend.config.sample_rate)
    bar = tqdm(total=total, initial=progress["step"], desc="training", unit="step", disable=not d.main,
               dynamic_ncols=True)
    model.train()
    seen, started = 0, time.perf_counter()
    while progress["step"] < total:
        if long_crop and progress["batch"] == 0 and progress["step"] >= t.get("long_crop_from", 1.0) * total:
            progress["crop_samples"] = long_crop
        dataset.crop_samples = progress["crop_samples"]
        dataset.epoch = sampler.epoch = progress["epoch"]
        sampler.start_batch = progress["batch"]
        # The loader's own generator: by default each new loader draws its workers' base seed from
        # the global RNG, so a resumed run (one extra loader) would get other dropout and masks.
        loader = DataLoader(dataset, t["batch_size"], sampler=sampler, num_workers=t.get("num_workers", 2),
                            drop_last=True, pin_memory=device.type == "cuda",
                            persistent_workers=False, prefetch_factor=4 if t.get("num_workers", 2) else None,
                            generator=torch.Generator().manual_seed(cfg["seed"] + progress["epoch"]))
        for crops, labels in loader:
            step = progress["step"]
            if hasattr(head, "margin"):
                head.margin = margin_at(step, cfg["head"].get("margin", 0.2), t.get("margin_warmup_start", 0),
                                        t.get("margin_warmup_steps", 0))
            crops, labels = crops.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with _autocast(device, t.get("amp", "bf16")):
                loss, logits = net(crops, labels)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), t.get("grad_clip", 5.0))
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if cfg["schedule"].get("name") != "plateau":
                sched.step()
            progress["step"] += 1
            progress["batch"] += 1
            seen += crops.shape[0] * d.world
            accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
            rate = seen / (time.perf_counter() - started)
            lr = opt.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}", lr=f"{lr:.2e}", sps=f"{rate:.1f}")
            if progress["step"] % t.get("log_every", 10) == 0:
                metrics.write(progress["step"], loss=loss.item(), accuracy=accuracy, lr=lr,
                              grad_norm=float(grad_norm), samples_per_s=rate)
            last = progress["step"] >= total
            if progress["step"] % t.get("validate_every", 1000) == 0 or last:
                _validate_and_keep_best(cfg, run_dir, model, data, d, progress, metrics, sched)
            if progress["step"] % t.get("checkpoint_every", 500) == 0 or last:
                if d.main:
                    atomic_torch_save(_state(model, opt, sched, scaler, progress), state_path)
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


def _validate_and_keep_best(cfg: dict, run_dir: Path, model: TrainModel, data: Prepared, d: Dist,
                            progress: dict, metrics: MetricLog, sched: Any) -> None:
    """Validation runs on rank 0; the others wait. The best checkpoint is written atomically."""
    if d.main and (data.val_utts or data.trials):
        values = validate(model.encoder, data.val_utts, data.labels, data.trials, data.val_frames)
        metrics.write(progress["step"], **values)
        log.info("step %d: %s", progress["step"], " ".join(f"{k}={v:.4f}" for k, v in values.items()))
        key = cfg["train"].get("best_metric")
        if key in values and _better(key, values[key], progress["best"]):
            progress["best"] = values[key]
            atomic_save_pretrained(model.encoder, run_dir / "best")
        if cfg["schedule"].get("name") == "plateau" and key in values:
            sched.step(-values[key] if key.endswith("accuracy") else values[key])
    if d.world > 1:
        dist.barrier()
