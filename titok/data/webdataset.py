"""WebDataset tar shards as an endless, deterministic and resumable stream of training images.

Shards: a file, a folder (its ``*.tar``), a glob or a brace pattern (``shards/train-{0000..0099}.tar``), several of
them joined by ``::``; local paths. A sample's image is its ``jpg``, ``jpeg``, ``png`` or ``webp`` entry and its label
its ``cls`` entry (-1 when there is none), as in the reference.

Order. The stream is read by C "consumers" (processes x loader workers). Epoch e visits the shards in a permutation
drawn from (seed, e). With at least C shards, consumer c reads every C-th shard of that order; with fewer, every
consumer reads every shard and keeps the samples at positions p with (shard position + p) % C == c. A shard is
streamed, never held whole: its raw samples pass through a shuffle buffer of ``shuffle_buffer`` samples (see
:func:`shuffled`) driven by a generator seeded from (seed, e, shard), so a reader holds at most that many raw
samples (+1 arriving) whatever the shard's size; a shard that fits in the buffer is visited in a uniform random
permutation. Each sample's random crop and flip come from its own seed, so nothing depends on timing or on which
process runs a consumer.

Resume. Every item carries its consumer's cursor after it, ``(role, epoch, shard position, samples consumed)``; the
training runtime keeps the last cursor each consumer delivered and saves them in its checkpoints. A resumed stream
reopens each consumer's shard at its cursor and replays the shard's shuffle from its start, skipping (without
decoding) the samples consumed: the buffer refills exactly as before, so with as many processes and workers (and the
same ``shuffle_buffer``) the stream is exactly the continuation of the uninterrupted one.

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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.data import IterableDataset, get_worker_info

from titok.data.batch import StreamBatch
from titok.data.images import read_image
from titok.data.transforms import Preprocess
from titok.extras import install_hint

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_MIX = 1_000_003
MAX_BARREN_EPOCHS = 10
DEFAULT_SHUFFLE_BUFFER = 1000
_DRAWS = 1024  # buffer slots drawn at a time
T = TypeVar("T")


def require_webdataset():
    try:
        import webdataset
    except ImportError:
        raise ImportError(f"reading webdataset shards needs webdataset: {install_hint('webdataset')}") from None
    return webdataset


def expand_shards(spec: str) -> list[str]:
    """The shard files of ``spec`` (files, folders, globs and brace patterns joined by ``::``), in the given order
    (globs and folders sorted). Raises ``FileNotFoundError`` naming the pattern that matched nothing."""
    found: list[str] = []
    for pattern in require_webdataset().shardlists.expand_urls(spec):
        path = Path(pattern)
        if path.is_dir():
            files = sorted(str(p) for p in path.glob("*.tar"))
        elif any(ch in pattern for ch in "*?["):
            files = sorted(glob.glob(pattern))
        else:
            files = [pattern] if path.is_file() else []
        if not files:
            raise FileNotFoundError(f"webdataset shards {spec!r}: {pattern} matches no shard file")
        found.extend(files)
    return found


def _seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * _MIX + part) % 2**62
    return value


def shuffled(items: Iterable[T], size: int, generator: torch.Generator) -> Iterator[T]:
    """``items`` in a random order, holding at most ``size`` of them (and the one arriving): the buffer fills with
    the first ``size``; then each arriving item takes the place of a uniformly drawn one, which is emitted; when the
    input ends, the buffer empties in a random permutation. Input that fits in the buffer (n <= size) comes out in
    the order ``torch.randperm(n, generator=generator)``. The order depends only on the input and the generator."""
    if size < 1:
        raise ValueError(f"a shuffle buffer holds at least 1 item, got size {size}")
    buffer: list[T] = []
    source = iter(items)
    for item in source:
        buffer.append(item)
        if len(buffer) == size:
            break
    draws: Iterator[int] = iter(())
    for item in source:
        slot = next(draws, None)
        if slot is None:
            draws = iter(torch.randint(size, (_DRAWS,), generator=generator).tolist())
            slot = next(draws)
        yield buffer[slot]
        buffer[slot] = item
    for i in torch.randperm(len(buffer), generator=generator).tolist():
        yield buffer[i]


class ShardStream(IterableDataset):
    """Items ``(image (3, S, S) float32 in [0, 1], label, skipped, cursor (4,) int64)``, endlessly.

    Use :meth:`assign` to give it its place among the readers of a run before handing it to a DataLoader.
    """

    def __init__(
        self,
        shards: Sequence[str],
        preprocess: Preprocess,
        seed: int = 0,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    ) -> None:
        if not shards:
            raise ValueError("a shard stream needs at least one shard")
        if shuffle_buffer < 1:
            raise ValueError(f"data.shuffle_buffer must be at least 1, got {shuffle_buffer}")
        self.shards = list(shards)
        self.shuffle_buffer = shuffle_buffer
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

    def __iter__(self) -> Iterator[StreamBatch]:
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
                keep = None if by_shard else (lambda k, p=p: (p + k) % consumers == consumer)
                for k, item, lost in self._shard(epoch, mine[p], offset if p == pos else 0, keep):
                    skipped += lost
                    if item is None:
                        continue
                    good += 1
                    yield StreamBatch(item[0], item[1], skipped, torch.tensor([role, epoch, p, k + 1]))
                    skipped = 0
            barren = barren + 1 if whole and good == 0 else 0
            if barren >= MAX_BARREN_EPOCHS:
                raise RuntimeError(
                    f"reader {consumer} of {consumers} found no readable sample in {barren} epochs over "
                    f"{len(self.shards)} shard(s): too few samples for this many processes x workers, or none readable"
                )
            epoch, pos, offset = epoch + 1, 0, 0

    def _shard(self, epoch: int, index: int, start: int, keep) -> Iterator[tuple[int, Any, int]]:
        """``(k, decoded item or None, samples lost)`` for the samples of shard ``index`` at shuffled positions
        ``k >= start`` that ``keep(k)`` accepts (all when ``keep`` is None); those before ``start`` are replayed
        through the shuffle without being decoded. A shard that cannot be read to its end counts 1 lost sample,
        once, with the first position reached after the error showed (not if that is before ``start``: the count
        travelled with an item delivered before the resume)."""
        errors: list[Exception] = []
        gen = torch.Generator().manual_seed(_seed(self.seed, epoch, index))
        counted, k = False, -1
        for k, sample in enumerate(shuffled(self._samples(index, errors), self.shuffle_buffer, gen)):
            lost = int(bool(errors) and not counted and k >= start)
            counted = counted or bool(errors)
            if k < start or (keep is not None and not keep(k)):
                if lost:
                    yield k, None, lost
                continue
            item = self._decode(sample, _seed(self.seed, epoch, index, k))
            yield k, item, lost + (item is None)
        if errors and not counted and k + 1 >= start:
            yield k + 1, None, 1

    def _samples(self, index: int, errors: list[Exception]) -> Iterator[dict[str, Any]]:
        """The raw samples of shard ``index``, read one at a time; each read error is logged and appended to
        ``errors`` (webdataset may report one broken tar several times)."""
        wds, url = require_webdataset(), self.shards[index]

        def handler(exn: Exception) -> bool:
            errors.append(exn)
            logger.warning("skipped unreadable data in shard %s: %s", url, exn)
            return True

        try:
            with open(url, "rb") as f:
                files = wds.tariterators.tar_file_expander([{"url": url, "stream": f}], handler=handler)
                yield from wds.tariterators.group_by_keys(files, handler=handler)
        except OSError as e:
            handler(e)

    def _decode(self, sample: dict[str, Any], seed: int) -> tuple[torch.Tensor, int] | None:
        try:
            array, label = decode_sample(sample, self.preprocess.size)
        except ValueError as e:
            logger.warning("skipped %s", e)
            return None
        return self.preprocess(array, seed), label


def decode_sample(sample: dict[str, Any], size: int) -> tuple[Any, int]:
    """A webdataset sample's image (its first :data:`IMAGE_KEYS` entry, decoded by
    :func:`~titok.data.images.read_image` for resizing to ``size``) and label (its ``cls`` entry, -1 when there is
    none). Raises ``ValueError`` naming the sample (its key and shard) when either cannot be read."""
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    name = f"sample {sample.get('__key__')} in {sample.get('__url__')}"
    if key is None:
        raise ValueError(f"{name}: no image ({', '.join(IMAGE_KEYS)})")
    data = io.BytesIO(sample[key])
    data.name = f"{sample.get('__key__')}.{key}"  # read_image's errors name it
    try:
        array = read_image(data, size)
    except ValueError as e:  # Pillow names a file object by its repr: name the entry instead
        raise ValueError(f"{name}: {str(e).replace(repr(data), repr(data.name))}") from None
    try:
        label = int(sample["cls"].decode().strip()) if "cls" in sample else -1
    except ValueError as e:  # not UTF-8, or not an integer
        raise ValueError(f"{name}: its cls entry is not an integer label ({e})") from None
    return array, label
