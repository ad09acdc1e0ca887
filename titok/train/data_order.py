"""Where a run is in its data, and how it continues there after a resume.

An indexed dataset is visited in :class:`~titok.data.sampler.ResumableSampler`'s order from ``position``, the number
of items this process has taken (saved with every checkpoint, so a resumed run may change the batch size). A stream
(an ``IterableDataset`` with ``assign``, such as :class:`~titok.data.webdataset.ShardStream`) reports its readers'
cursors with every batch; :meth:`DataOrder.state` stores them and a resumed run continues each reader where it
stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from titok.data.sampler import ResumableSampler
from titok.train.config import RunConfig
from titok.train.stream import StreamBatches, resume_cursors

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run cannot go on (NaN loss, an output folder that already holds a run, ...); the message says why."""


@dataclass
class DataOrder:
    """The data order of process ``rank`` of ``world``: micro-batches of ``run.batch_size`` from ``position``."""

    run: RunConfig
    rank: int
    world: int
    device: torch.device
    position: int = 0  # items this process has taken from its data order
    resumed: dict[str, Any] | None = None  # the stream state of the checkpoint resumed from
    stream: StreamBatches | None = field(default=None, init=False)

    def batches(self, dataset: Dataset, collate: Callable | None = None) -> Iterator[Any]:
        """Micro-batches in the deterministic order, from ``position``; for a stream: from the resumed cursors."""
        if isinstance(dataset, IterableDataset):
            return self._count(self._stream_batches(dataset, collate))
        return self._count(self._indexed_batches(dataset, collate))

    def _indexed_batches(self, dataset: Dataset, collate: Callable | None) -> Iterator[Any]:
        run = self.run
        sampler = ResumableSampler(len(dataset), seed=run.seed, rank=self.rank, world=self.world, start=self.position)
        if len(dataset) // self.world < run.batch_size:
            raise TrainingError(f"{len(dataset)} item(s) cannot fill a batch of {run.batch_size} per process")
        loader = DataLoader(
            dataset,
            batch_size=run.batch_size,
            sampler=sampler,
            num_workers=run.num_workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=run.num_workers > 0,
            generator=torch.Generator().manual_seed(run.seed),  # keeps the global RNG untouched
        )
        return iter(loader)

    def _stream_batches(self, stream: IterableDataset, collate: Callable | None) -> Iterator[Any]:
        if not hasattr(stream, "assign"):
            raise TypeError(f"{type(stream).__name__} is an iterable dataset without assign(): it cannot be resumed")
        workers = max(1, self.run.num_workers)
        drawn = self.position // self.run.batch_size  # batches this process had taken
        cursors = resume_cursors(self.resumed, self.rank, self.world, workers)
        # A DataLoader takes batches from its workers in turn, starting with worker 0: worker j plays the reader
        # whose turn it would have been in the uninterrupted run.
        roles = [(j + drawn) % workers for j in range(workers)]
        assigned = stream.assign(rank=self.rank, world=self.world, workers=workers, roles=roles, cursors=cursors)
        loader = DataLoader(
            assigned,
            batch_size=self.run.batch_size,
            num_workers=self.run.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.run.num_workers > 0,
        )
        self.stream = StreamBatches(iter(loader), cursors)
        return self.stream

    def _count(self, batches: Iterator[Any]) -> Iterator[Any]:
        """``batches``, adding each one's items to ``position`` as it is taken."""
        for batch in batches:
            self.position += self.run.batch_size
            yield batch

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the order (every process calls it: a stream's cursors are gathered)."""
        state: dict[str, Any] = {"data_position": self.position, "data_world": self.world}
        if self.stream is not None:
            state["data"] = self.stream_state()
        return state

    def stream_state(self) -> dict[str, Any]:
        from accelerate.utils import gather_object

        mine = [list(c) for c in self.stream.cursors]
        cursors = mine if self.world == 1 else gather_object(mine)
        return {"kind": "stream", "world": self.world, "workers": len(self.stream.cursors), "cursors": cursors}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``state`` (see :meth:`state`), written by any number of processes."""
        self.position = state["data_position"]
        saved_world = state.get("data_world", self.world)
        if saved_world != self.world and state.get("data") is None:
            # The order is one permutation per epoch dealt out to the processes: keep the items taken in total.
            logger.warning(
                "the checkpoint was written by %d process(es), this run has %d: each process continues after "
                "%d of the %d items taken in all (the order is kept up to a batch at the boundary)",
                saved_world,
                self.world,
                self.position * saved_world // self.world,
                self.position * saved_world,
            )
            self.position = self.position * saved_world // self.world
        self.resumed = state.get("data")
