"""WebDataset shards read once and in order, for pretokenizing and evaluating: every sample of every shard, shard
after shard, each at its place in its tar file, as a map-style dataset (training streams shards shuffled and
endlessly instead: see :mod:`titok.data.webdataset`).

Opening lists the samples from the shards' tar headers alone (nothing is decoded) and groups a shard's files into
samples as webdataset does: consecutive files sharing a key (the name up to the first dot of its base name),
``__*__`` metadata left out. A sample is read when it is used, and decoded as training decodes it
(:func:`~titok.data.webdataset.decode_sample`: image from its ``jpg``/``jpeg``/``png``/``webp`` entry, label from
its ``cls`` entry), then preprocessed as every image is (:class:`~titok.data.transforms.Preprocess`): an image in
a shard gives the same pixels as the same file in a folder.

A sample without an image, or whose image or label cannot be read, is an unreadable item (the commands report and
skip it). A shard that cannot be listed, or only in part, is reported in ``unlisted``; the samples listed before
the problem are kept. Shards must be uncompressed tar files: one sample of a compressed shard could only be read
by decompressing everything before it.
"""

from __future__ import annotations

import logging
import re
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from titok.data.datasets import IndexedImages
from titok.data.transforms import Preprocess
from titok.data.webdataset import IMAGE_KEYS, decode_sample, expand_shards, require_webdataset

logger = logging.getLogger(__name__)

META = re.compile(r"__[^/]*__($|/)")  # webdataset's metadata entries, left out as it leaves them out
_COLUMNS = 6  # shard, image key (index into IMAGE_KEYS, -1: none), image offset, size, cls offset (-1: none), size


class ShardSamples(IndexedImages):
    """Every sample of the shards ``spec`` names (see :func:`~titok.data.webdataset.expand_shards`), in order."""

    def __init__(self, spec: str, preprocess: Preprocess | int) -> None:
        super().__init__(Preprocess(preprocess) if isinstance(preprocess, int) else preprocess)
        self.shards = expand_shards(spec)
        self.unlisted: list[tuple[Path, str]] = []  # shards that could not be listed (to the end)
        self.keys: list[str] = []
        rows: list[list[int]] = []
        quiet = True if len(self.shards) == 1 else None  # None: a bar on a terminal only
        for i, url in enumerate(tqdm(self.shards, desc="listing shards", unit="shard", disable=quiet, leave=False)):
            for sample in _samples(url, self.unlisted):
                self.keys.append(sample["__key__"])
                rows.append([i, *_where(sample)])
        self.index = np.array(rows, dtype=np.int64).reshape(-1, _COLUMNS)
        if not rows:
            reasons = "".join(f"; {reason}" for _, reason in self.unlisted[:3])
            raise ValueError(f"webdataset shards {spec!r}: no sample in {len(self.shards)} shard(s){reasons}")

    def __len__(self) -> int:
        return len(self.index)

    def raw(self, index: int) -> tuple[np.ndarray, int]:
        shard, kind, offset, size, cls_offset, cls_size = self.index[index].tolist()
        sample: dict[str, Any] = {"__key__": self.keys[index], "__url__": self.shards[shard]}
        name = f"sample {self.keys[index]} in {self.shards[shard]}"
        try:
            with open(self.shards[shard], "rb") as f:
                if kind >= 0:
                    sample[IMAGE_KEYS[kind]] = _read(f, offset, size, f"{name}: its {IMAGE_KEYS[kind]} entry")
                if cls_offset >= 0:
                    sample["cls"] = _read(f, cls_offset, cls_size, f"{name}: its cls entry")
        except OSError as e:
            raise ValueError(f"cannot read {name}: {e.strerror or e}") from None
        return decode_sample(sample, self.preprocess.size)


def _read(f: BinaryIO, offset: int, size: int, what: str) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise ValueError(f"{what} is truncated ({len(data)} of {size} bytes)")
    return data


def _where(sample: dict[str, Any]) -> list[int]:
    """The index row of a listed sample (whose entries are (offset, size) pairs), less its shard."""
    kind = next((i for i, key in enumerate(IMAGE_KEYS) if key in sample), -1)
    image = sample[IMAGE_KEYS[kind]] if kind >= 0 else (-1, 0)
    cls = sample.get("cls", (-1, 0))
    return [kind, *image, *cls]


def _samples(url: str, unlisted: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    """The samples of shard ``url``, their entries (offset, size) pairs, grouped as webdataset groups them; what
    stops the listing goes to ``unlisted``."""
    files: list[dict[str, Any]] = []
    try:
        with tarfile.open(url, "r:") as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # listed here, not kept: a shard may hold millions of files
                if info.isreg() and not META.match(info.name):
                    files.append({"fname": info.name, "data": (info.offset_data, info.size), "__url__": url})
    except (tarfile.TarError, OSError) as e:
        where = f"unreadable after {len(files)} file(s)" if files else "not a readable uncompressed tar file"
        unlisted.append((Path(url), f"{url}: {where} ({e}); the samples after that are skipped"))
        logger.warning("shard %s: %s (%s)", url, where, e)

    def duplicate(exn: Exception) -> bool:
        logger.warning("in shard %s: %s", url, exn.args[0] if exn.args else exn)
        return True

    return list(require_webdataset().tariterators.group_by_keys(files, handler=duplicate))
