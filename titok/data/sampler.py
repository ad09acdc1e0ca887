"""A deterministic, resumable order over a map-style dataset, sharded across processes.

Epoch ``e`` visits the items in the order of a permutation drawn from ``seed + e``; process ``rank`` of ``world``
takes every ``world``-th item of it. Each item comes with its own augmentation seed, so random crops and flips depend
only on (seed, epoch, position), never on worker processes: a run resumed from position ``p`` sees exactly what an
uninterrupted run saw after ``p`` items.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)`` forever (or for ``num_epochs``), starting after ``start`` items."""

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
    ) -> None:
        if size < world:
            raise ValueError(f"a dataset of {size} item(s) cannot be shared by {world} processes")
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.start, self.shuffle, self.num_epochs = start, shuffle, num_epochs
        self.per_epoch = size // world  # every process sees the same number of items per epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_epoch)
        while self.num_epochs is None or epoch < self.num_epochs:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
            mine = order[self.rank : self.per_epoch * self.world : self.world]
            aug = torch.randint(0, 2**62, (self.size,), generator=g)[
                self.rank : self.per_epoch * self.world : self.world
            ]
            for i in range(offset, self.per_epoch):
                yield int(mine[i]), int(aug[i])
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:
        if self.num_epochs is None:
            raise TypeError("an endless ResumableSampler has no length")
        return self.num_epochs * self.per_epoch - self.start
