"""Write a tokenizer's codes of a whole dataset to a tokens folder (see :mod:`titok.data.tokens`).

Each process encodes its contiguous slice of the dataset into its own shard and records its progress after every
batch, so an interrupted job resumes where it stopped; the main process merges the shards at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from titok.data.tokens import META, ShardWriter, TokensMeta, code_dtype, merge_shards

logger = logging.getLogger(__name__)


class _Slice(Dataset):
    def __init__(self, dataset: Dataset, indices: range) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, int]:
        image, label, skipped = self.dataset[self.indices[i]]
        return image, label, skipped, self.indices[i]


_SAME_DATA = ("source", "path", "split", "limit", "image_size")


def finished(
    out: str | Path, tokenizer: Any, tokenizer_name: str, data_description: dict[str, Any], flip_copies: bool
) -> TokensMeta | None:
    """The metadata of the finished tokens folder ``out`` if it was written with these settings (rerunning the
    job is then a no-op), None if it is not finished; ``FileExistsError`` naming the differences if it was
    written with other ones."""
    if not (Path(out) / META).is_file():
        return None
    meta = TokensMeta.read(out)
    wanted = {
        "tokenizer": tokenizer_name,
        "flip_copies": flip_copies,
        "codebook_size": tokenizer.codebook_size,
        "num_tokens": tokenizer.num_tokens,
        **{f"data.{k}": data_description.get(k) for k in _SAME_DATA},
    }
    found = {k: getattr(meta, k) for k in ("tokenizer", "flip_copies", "codebook_size", "num_tokens")}
    found.update({f"data.{k}": meta.data.get(k) for k in _SAME_DATA})
    differ = [f"{k} {found[k]!r} (now {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise FileExistsError(
            f"{out} already holds a finished tokens folder written with other settings: {', '.join(differ)}; "
            "choose another -o or delete it"
        )
    return meta


def pretokenize(
    tokenizer: Any,
    dataset: Dataset,
    out: str | Path,
    *,
    tokenizer_name: str,
    data_description: dict[str, Any],
    flip_copies: bool = False,
    batch_size: int = 64,
    num_workers: int = 2,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
    progress: bool = True,
) -> TokensMeta | None:
    """Encode ``dataset`` (items ``(image, label, skipped)``, evaluation preprocessing) with ``tokenizer``.

    Returns the merged folder's metadata on the main process (None elsewhere). An item whose file could not be
    read (``skipped > 0``) is left out and counted. A folder already finished with the same settings is left as it
    is (see :func:`finished`).
    """
    out = Path(out)
    done = finished(out, tokenizer, tokenizer_name, data_description, flip_copies)
    if done is not None:
        logger.info("%s is already finished (%d sequences): nothing to do", out, done.count)
        return done if rank == 0 else None
    if tokenizer.codebook_size is None:
        raise ValueError("a continuous (VAE) tokenizer has no codes to pretokenize")
    n = len(dataset)
    mine = range(rank * n // world, (rank + 1) * n // world)
    copies = 2 if flip_copies else 1
    writer = ShardWriter(
        out, rank, world, len(mine) * copies, tokenizer.num_tokens, code_dtype(tokenizer.codebook_size)
    )
    start = writer.done // copies
    loader = DataLoader(_Slice(dataset, mine[start:]), batch_size=batch_size, num_workers=num_workers)
    quiet = None if progress else True  # None: a bar on a terminal only
    with tqdm(total=len(mine), initial=start, unit="img", desc=f"pretokenize[{rank}]", disable=quiet) as bar:
        for images, labels, skipped, sources in loader:
            _write_batch(writer, tokenizer, images, labels, skipped, sources, copies)
            bar.update(len(images))
    barrier()
    if rank != 0:
        return None
    meta = TokensMeta(
        codebook_size=tokenizer.codebook_size,
        num_tokens=tokenizer.num_tokens,
        count=0,
        tokenizer=tokenizer_name,
        flip_copies=flip_copies,
        data=data_description,
    )
    meta = merge_shards(out, world, meta)
    if meta.skipped:
        logger.warning("%d row(s) of unreadable images were left out", meta.skipped)
    return meta


def _write_batch(
    writer: ShardWriter,
    tokenizer: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    skipped: torch.Tensor,
    sources: torch.Tensor,
    copies: int,
) -> None:
    """Encode a batch (and, with ``copies`` 2, its mirror images) into ``writer``'s rows."""
    codes = [tokenizer.tokenize(images)]
    if copies == 2:
        codes.append(tokenizer.tokenize(images.flip(-1)))
    # rows alternate original / flipped copy per image
    stacked = torch.stack(codes, 1).flatten(0, 1).cpu().numpy()
    src = torch.stack([sources, -1 - sources], 1)[:, :copies].flatten().numpy()
    writer.write(
        stacked.astype(writer.codes.dtype),
        labels.repeat_interleave(copies).numpy().astype(np.int32),
        src,
        (skipped == 0).repeat_interleave(copies).numpy(),
    )
