"""Optimizers and learning-rate schedules, one function each.

Each function takes what the training loop supplies positionally (the parameters; the optimizer
and the run's step count) and the config section's options as keywords, without defaults: the
names, and the default of every option, are listed once, in ``train.config.OPTIMIZERS`` and
``train.config.SCHEDULES``, so that config.yaml records every value a run used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import Optimizer, lr_scheduler


def adamw(params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float) -> Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def sgd(params: Iterable[torch.nn.Parameter], *, lr: float, momentum: float, weight_decay: float) -> Optimizer:
    """SGD with Nesterov momentum, as in the Kaldi/WeSpeaker recipes."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)


def cosine(opt: Optimizer, total_steps: int, *, warmup_steps: int, min_lr_ratio: float) -> lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then a cosine decay to ``min_lr_ratio`` of the peak at the
    last step: a floor keeps the last steps learning instead of standing still."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return lr_scheduler.LambdaLR(opt, factor)


def step(opt: Optimizer, total_steps: int, *, step_size: int, gamma: float) -> lr_scheduler.StepLR:
    return lr_scheduler.StepLR(opt, step_size, gamma)


def multistep(opt: Optimizer, total_steps: int, *, milestones: list[int], gamma: float) -> lr_scheduler.MultiStepLR:
    return lr_scheduler.MultiStepLR(opt, milestones, gamma)


def exponential(opt: Optimizer, total_steps: int, *, gamma: float) -> lr_scheduler.ExponentialLR:
    return lr_scheduler.ExponentialLR(opt, gamma)


def plateau(opt: Optimizer, total_steps: int, *, gamma: float, patience: int) -> lr_scheduler.ReduceLROnPlateau:
    """Stepped at each validation with the best metric, not after each optimizer step (see train.loop)."""
    return lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=gamma, patience=patience)


def cyclic(opt: Optimizer, total_steps: int, *, base_lr: float | None, step_size_up: int) -> lr_scheduler.CyclicLR:
    """Triangular cycles between ``base_lr`` (None: a tenth of the optimizer's rate) and the optimizer's rate."""
    peak = opt.param_groups[0]["lr"]
    return lr_scheduler.CyclicLR(
        opt, peak / 10 if base_lr is None else base_lr, peak, step_size_up=step_size_up, cycle_momentum=False
    )
