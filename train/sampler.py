"""The order in which training crops are drawn: seeded per epoch, sharded over processes, resumable."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from .distributed import Dist


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
