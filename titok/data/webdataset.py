"""WebDataset tar shards as an endless, deterministic and resumable stream of training images.

Shards: a file, a folder (its ``*.tar``), a glob or a brace pattern (``shards/train-{0000..0099}.tar``), several of
them joined by ``::``; local paths. A sample's image is its ``jpg``, ``jpeg``, ``png`` or ``webp`` entry and its label
its ``cls`` entry (-1 when there is none), as in the reference.

Order. The stream is read by C "consumers" (processes x loader workers). Epoch e visits the shards in a permutation
drawn from (seed, e). With at least C shards, consumer c reads every C-th shard of that order; with fewer, every
consumer reads every shard and keeps the samples at positions p with (shard position + p) % C == c. A shard is read
into memory as raw bytes and its samples are visited in a permutation drawn from (seed, e, shard), and each sample's
random crop and flip come from its own seed, so nothing depends on timing or on which process runs a consumer.

Resume. Every item carries its consumer's cursor after it, ``(role, epoch, shard position, samples consumed)``; the
training runtime keeps the last cursor each consumer delivered and saves them in its checkpoints. A resumed stream
reopens each consumer's shard at its cursor and skips what was consumed: with as many processes and workers as
before, exactly the continuation of the uninterrupted stream.

Unreadable data. A sample whose image cannot be decoded, or that has no image, is skipped and logged; the count
travels with the next good item (its ``skipped`` field), so the loop can count skips made in loader workers. A
truncated or corrupt tar file ends that shard early and counts once (webdataset's error handler). Only a consumer
that finds no readable sample in a whole epoch stops the run.
"""

from __future__ import annotations

import copy
import glob
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from titok.data.images import read_image
from titok.data.transforms import Preprocess

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_MIX = 1_000_003
MAX_BARREN_EPOCHS = 10


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise ImportError("reading webdataset shards needs webdataset: pip install 'titok[webdataset]'") from None
    return webdataset


def expand_shards(spec: str) -> list[str]:
    """The shard files of ``spec`` (files, folders, globs and brace patterns joined by ``::``), in the given order
    (globs and folders sorted). Raises ``FileNotFoundError`` naming what matched nothing."""
    found: list[str] = []
    for pattern in _webdataset().shardlists.expand_urls(spec):
        path = Path(pattern)
        if path.is_dir():
            files = sorted(str(p) for p in path.glob("*.tar"))
        elif any(ch in pattern for ch in "*?["):
            files = sorted(glob.glob(pattern))
        else:
            files = [pattern] if path.is_file() else []
        if not files:
            raise FileNotFoundError(f"data.path {spec!r}: {pattern} matches no shard file")
        found.extend(files)
    return found


def _seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * _MIX + part) % 2**62
    return value


class ShardStream(IterableDataset):
    """Items ``(image (3, S, S) float32 in [0, 1], label, skipped, cursor (4,) int64)``, endlessly.

    Use :meth:`assign` to give it its place among the readers of a run before handing it to a DataLoader.
    """

    def __init__(self, shards: Sequence[str], preprocess: Preprocess, seed: int = 0) -> None:
        if not shards:
            raise ValueError("a shard stream needs at least one shard")
        self.shards = list(shards)
        self.preprocess = preprocess
        self.seed = seed
        self.rank, self.world, self.workers = 0, 1, 1
        self.roles: list[int] = [0]
        self.cursors: list[tuple[int, int, int]] = [(0, 0, 0)]

    def assign(
        self, *, rank: int, world: int, workers: int, roles: Sequence[int], cursors: Sequence[Sequence[int]]
    ) -> ShardStream:
        """A copy read by process ``rank`` of ``world`` through ``workers`` loader workers (1 without workers):
        worker j plays consumer role ``roles[j]`` and starts at ``cursors[roles[j]]`` = (epoch, shard position,
        samples consumed)."""
        if len(roles) != workers or len(cursors) != workers:
            raise ValueError(f"{workers} worker(s) need as many roles and cursors, got {len(roles)} and {len(cursors)}")
        if len(self.shards) < world * workers and rank == 0:
            logger.warning(
                "%d shard(s) for %d readers (%d process(es) x %d worker(s)): every reader reads every shard and keeps "
                "1/%d of its samples; with at least %d shards each reader reads its own",
                len(self.shards),
                world * workers,
                world,
                workers,
                world * workers,
                world * workers,
            )
        stream = copy.copy(self)
        stream.rank, stream.world, stream.workers = rank, world, workers
        stream.roles = list(roles)
        stream.cursors = [(int(e), int(p), int(k)) for e, p, k in cursors]
        return stream

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int, torch.Tensor]]:
        info = get_worker_info()
        role = self.roles[info.id if info is not None else 0]
        return self._consume(role, *self.cursors[role])

    def _consume(self, role: int, epoch: int, pos: int, offset: int) -> Iterator[Any]:
        consumer, consumers = self.rank * self.workers + role, self.world * self.workers
        skipped, barren = 0, 0  # barren: whole epochs in a row without a readable sample
        while True:
            order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(_seed(self.seed, epoch)))
            by_shard = len(order) >= consumers
            mine = order[consumer::consumers].tolist() if by_shard else order.tolist()
            whole, good = pos == 0 and offset == 0, 0
            for p in range(pos, len(mine)):
                samples, lost = self._read(mine[p])
                skipped += lost
                gen = torch.Generator().manual_seed(_seed(self.seed, epoch, mine[p]))
                perm = torch.randperm(len(samples), generator=gen).tolist()
                for k in range(offset if p == pos else 0, len(samples)):
                    if not by_shard and (p + k) % consumers != consumer:
                        continue
                    item = self._decode(samples[perm[k]], _seed(self.seed, epoch, mine[p], k))
                    if item is None:
                        skipped += 1
                        continue
                    good += 1
                    yield item[0], item[1], skipped, torch.tensor([role, epoch, p, k + 1])
                    skipped = 0
            barren = barren + 1 if whole and good == 0 else 0
            if barren >= MAX_BARREN_EPOCHS:
                raise RuntimeError(
                    f"reader {consumer} of {consumers} found no readable sample in {barren} epochs over "
                    f"{len(self.shards)} shard(s): too few samples for this many processes x workers, or none readable"
                )
            epoch, pos, offset = epoch + 1, 0, 0

    def _read(self, index: int) -> tuple[list[dict[str, Any]], int]:
        """The raw samples of shard ``index``, and 1 if it could not be read to its end (webdataset may report one
        broken tar several times), else 0."""
        wds, url, errors = _webdataset(), self.shards[index], []

        def handler(exn: Exception) -> bool:
            errors.append(exn)
            logger.warning("skipped unreadable data in shard %s: %s", url, exn)
            return True

        try:
            with open(url, "rb") as f:
                files = wds.tariterators.tar_file_expander([{"url": url, "stream": f}], handler=handler)
                samples = list(wds.tariterators.group_by_keys(files, handler=handler))
        except OSError as e:
            handler(e)
            samples = []
        return samples, int(bool(errors))

    def _decode(self, sample: dict[str, Any], seed: int) -> tuple[torch.Tensor, int] | None:
        key = next((k for k in IMAGE_KEYS if k in sample), None)
        name = f"{sample.get('__key__')} in {sample.get('__url__')}"
        if key is None:
            logger.warning("skipped sample %s: no image (%s)", name, ", ".join(IMAGE_KEYS))
            return None
        try:
            array = read_image(io.BytesIO(sample[key]), self.preprocess.size)
            label = int(sample["cls"].decode().strip()) if "cls" in sample else -1
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError, UnicodeDecodeError) as e:
            logger.warning("skipped unreadable sample %s: %s", name, e)
            return None
        return self.preprocess(torch.from_numpy(array.copy()).permute(2, 0, 1), seed), label
