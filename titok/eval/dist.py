"""Which share of an evaluation this process does: rank and world size under torchrun / accelerate."""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


class Shard(NamedTuple):
    rank: int
    world: int

    def part(self, total: int) -> range:
        """This process's contiguous share of ``total`` items: ``[r * total // world, (r + 1) * total // world)``."""
        return range(self.rank * total // self.world, (self.rank + 1) * total // self.world)


def current_shard() -> Shard:
    """(rank, world) of the default process group, or (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard(0, 1)


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group that torchrun / accelerate describe in the environment (``WORLD_SIZE`` > 1), with
    NCCL on CUDA and gloo otherwise; returns the device this process should use (``cuda:LOCAL_RANK`` on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        logger.info("process %d of %d on %s", dist.get_rank(), world, device)
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def gather_lists(items: list) -> list:
    """The concatenation, in rank order, of every process's ``items`` (picklable); ``items`` when not distributed."""
    shard = current_shard()
    if shard.world == 1:
        return items
    gathered: list[list] = [[] for _ in range(shard.world)]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
