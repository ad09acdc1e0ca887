"""The runtime's side of a stream (an ``IterableDataset`` with ``assign``, such as
:class:`~titok.data.webdataset.ShardStream`): the cursors its readers report, and where they resume."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from titok.data.batch import LabeledBatch, StreamBatch

logger = logging.getLogger(__name__)


class StreamBatches(Iterator):
    """A stream's batches without their cursors, which it keeps: ``cursors[role]`` is the last position reader
    ``role`` of this process delivered, (epoch, shard position, samples consumed)."""

    def __init__(self, batches: Iterator[Any], cursors: list[list[int]]) -> None:
        self.batches, self.cursors = batches, cursors

    def __next__(self) -> LabeledBatch:
        batch: StreamBatch = next(self.batches)
        role, *position = batch.cursors[-1].tolist()
        self.cursors[role] = position
        return batch.without_cursors()


def resume_cursors(saved: dict[str, Any] | None, rank: int, world: int, workers: int) -> list[list[int]]:
    """The cursors the ``workers`` readers of process ``rank`` of ``world`` start from: the checkpoint's stream
    state ``saved`` (None: the beginning) when it was read by as many processes and workers, else the beginning of
    its oldest epoch."""
    if not saved or saved.get("kind") != "stream":
        return [[0, 0, 0] for _ in range(workers)]
    if (saved["world"], saved["workers"]) == (world, workers):
        return [list(c) for c in saved["cursors"][rank * workers : (rank + 1) * workers]]
    epoch = min(c[0] for c in saved["cursors"])
    logger.warning(
        "the checkpoint's stream was read by %d process(es) x %d worker(s), this run has %d x %d: every reader "
        "restarts at the beginning of epoch %d (some samples of that epoch are seen again)",
        saved["world"],
        saved["workers"],
        world,
        workers,
        epoch,
    )
    return [[epoch, 0, 0] for _ in range(workers)]
