"""Pretokenized datasets: a tokenizer's codes of a whole image dataset, memory-mapped for training.

A tokens folder holds ``codes.npy`` (M x N, uint16 when the codebook allows, else int32), ``labels.npy`` (M,) int32
(-1: no class), ``sources.npy`` (M,) int64 (the source dataset's index; ``-1 - index`` for a horizontally flipped
copy) and ``meta.json`` (the tokenizer, its codebook size and token count, the data and its preprocessing).
While being written, each process fills its own ``shard-{rank}/`` with a progress file, so an interrupted job
resumes where it stopped; the shards are merged into the final arrays at the end.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from titok.data.batch import CodedBatch, TokenBatch
from titok.io import atomic_write

META = "meta.json"


@dataclass
class TokensMeta:
    codebook_size: int
    num_tokens: int
    count: int
    tokenizer: str
    flip_copies: bool
    data: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0
    format_version: int = 1

    @staticmethod
    def read(root: str | Path) -> TokensMeta:
        path = Path(root) / META
        if not path.is_file():
            raise FileNotFoundError(f"{root} is not a tokens folder (no {META}); write one with `titok pretokenize`")
        raw = json.loads(path.read_text())
        known = {k: raw[k] for k in TokensMeta.__dataclass_fields__ if k in raw}
        return TokensMeta(**known)


def code_dtype(codebook_size: int) -> np.dtype:
    return np.dtype(np.uint16) if codebook_size <= 65536 else np.dtype(np.int32)


class TokenDataset(Dataset):
    """Items ``(codes (N,) int64, label int)``; indexing takes plain indices or ``(index, seed)`` pairs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = TokensMeta.read(self.root)
        self.codes = np.load(self.root / "codes.npy", mmap_mode="r")
        self.labels = np.load(self.root / "labels.npy", mmap_mode="r")
        if self.codes.shape != (self.meta.count, self.meta.num_tokens) or len(self.labels) != self.meta.count:
            raise ValueError(f"{self.root}: arrays of shape {self.codes.shape} do not match {META}")

    def __len__(self) -> int:
        return self.meta.count

    def __getitem__(self, item: int | tuple[int, int]) -> TokenBatch:
        index = item[0] if isinstance(item, tuple) else item
        return TokenBatch(torch.from_numpy(self.codes[index].astype(np.int64)), int(self.labels[index]))

    def check(self, codebook_size: int, num_tokens: int, num_classes: int | None = None) -> None:
        """Raise ``ValueError`` unless these tokens fit a model of this codebook size, length and class count."""
        m = self.meta
        if m.codebook_size != codebook_size:
            raise ValueError(
                f"{self.root} holds codes of a tokenizer with codebook size {m.codebook_size} ({m.tokenizer}); "
                f"this model's codebook_size is {codebook_size}"
            )
        if m.num_tokens != num_tokens:
            raise ValueError(f"{self.root} holds {m.num_tokens} tokens per image; this model reads {num_tokens}")
        if num_classes is not None and len(self.labels) and int(np.max(self.labels)) >= num_classes:
            raise ValueError(f"{self.root} holds class id {int(np.max(self.labels))}; this model has {num_classes}")


class ShardWriter:
    """One process's part of a tokens folder: preallocated memory-mapped arrays plus a progress counter."""

    def __init__(self, root: Path, rank: int, world: int, capacity: int, num_tokens: int, dtype: np.dtype) -> None:
        self.dir = root / f"shard-{rank}"
        self.dir.mkdir(parents=True, exist_ok=True)
        progress = self.dir / "progress.json"
        state = json.loads(progress.read_text()) if progress.is_file() else None
        if state is not None and (state["world"], state["capacity"]) != (world, capacity):
            raise ValueError(
                f"{self.dir} was started by a job of {state['world']} process(es); resume it with the same "
                "number of processes and the same data, or write to a new folder"
            )
        mode = "r+" if state is not None else "w+"
        self.codes = np.lib.format.open_memmap(self.dir / "codes.npy", mode, dtype, (capacity, num_tokens))
        self.labels = np.lib.format.open_memmap(self.dir / "labels.npy", mode, np.int32, (capacity,))
        self.sources = np.lib.format.open_memmap(self.dir / "sources.npy", mode, np.int64, (capacity,))
        self.valid = np.lib.format.open_memmap(self.dir / "valid.npy", mode, np.bool_, (capacity,))
        self.world, self.capacity = world, capacity
        self.done = state["done"] if state is not None else 0

    def write(self, codes: np.ndarray, labels: np.ndarray, sources: np.ndarray, valid: np.ndarray) -> None:
        """Append rows and record the progress (after the rows are on disk)."""
        lo, hi = self.done, self.done + len(codes)
        self.codes[lo:hi], self.labels[lo:hi], self.sources[lo:hi], self.valid[lo:hi] = codes, labels, sources, valid
        for array in (self.codes, self.labels, self.sources, self.valid):
            array.flush()
        self.done = hi
        state = {"done": hi, "world": self.world, "capacity": self.capacity}
        atomic_write(self.dir / "progress.json", lambda p: Path(p).write_text(json.dumps(state)))


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temporary name
        np.save(f, array)


def merge_shards(root: Path, world: int, meta: TokensMeta) -> TokensMeta:
    """Concatenate the shards' valid rows in rank order into the final arrays and write ``meta.json`` last."""
    shards = [root / f"shard-{r}" for r in range(world)]
    parts = {name: [] for name in ("codes", "labels", "sources")}
    total = skipped = 0
    for shard in shards:
        progress = json.loads((shard / "progress.json").read_text())
        if progress["done"] != progress["capacity"]:
            raise RuntimeError(f"{shard} is incomplete ({progress['done']} of {progress['capacity']} rows)")
        valid = np.load(shard / "valid.npy")
        for name in parts:
            parts[name].append(np.load(shard / f"{name}.npy", mmap_mode="r")[valid])
        total += int(valid.sum())
        skipped += int((~valid).sum())
    for name, chunks in parts.items():
        array = np.concatenate(chunks)
        atomic_write(root / f"{name}.npy", lambda p, a=array: _save_npy(p, a))
    meta.count, meta.skipped = total, skipped
    atomic_write(root / META, lambda p: Path(p).write_text(json.dumps(asdict(meta), indent=2) + "\n"))
    for shard in shards:
        shutil.rmtree(shard)
    return meta


def write_tokens(
    root: str | Path,
    codes: np.ndarray,
    labels: np.ndarray,
    *,
    codebook_size: int,
    tokenizer: str,
    data: dict[str, Any] | None = None,
) -> TokensMeta:
    """Write codes (M, N) and labels (M,) you already have as a tokens folder (one process, all rows valid)."""
    root = Path(root)
    codes, labels = np.asarray(codes), np.asarray(labels)
    if codes.ndim != 2 or len(labels) != len(codes):
        raise ValueError(f"codes must be (M, N) with M labels, got {codes.shape} and {labels.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
    writer = ShardWriter(root, 0, 1, len(codes), codes.shape[1], code_dtype(codebook_size))
    writer.write(
        codes.astype(writer.codes.dtype),
        labels.astype(np.int32),
        np.arange(len(codes)),
        np.ones(len(codes), dtype=bool),
    )
    meta = TokensMeta(codebook_size, codes.shape[1], 0, tokenizer, False, dict(data or {}))
    return merge_shards(root, 1, meta)


class WithCachedCodes(Dataset):
    """An indexed image dataset with every image's codes read from a tokens folder written over the same data by
    ``titok pretokenize`` (e.g. a stage-1 teacher's codes): items ``(image, label, skipped, codes (N,) int64)``.

    The images must be preprocessed as the cache was (resize + center crop, no random crop and no flip: build
    ``dataset`` so). With ``flip``, which needs a cache written with ``--flip``, half of the items, chosen by their
    augmentation seed, are mirrored and take the mirrored copy's codes.
    """

    def __init__(self, dataset: Dataset, root: str | Path, *, flip: bool = False) -> None:
        self.dataset, self.root, self.flip = dataset, Path(root), flip
        self.tokens = TokenDataset(root)
        meta = self.tokens.meta
        if flip and not meta.flip_copies:
            raise ValueError(
                f"{root} holds no flipped copies: set data.random_flip=false, or pretokenize again with --flip"
            )
        copies = 2 if meta.flip_copies else 1
        images = (meta.count + meta.skipped) // copies
        if images != len(dataset):
            raise ValueError(
                f"{root} was written from {images} image(s), the data has {len(dataset)}: pretokenize the same data "
                "(same source, path and limit)"
            )
        sources = np.load(self.root / "sources.npy")
        self.rows = np.full(len(dataset), -1, dtype=np.int64)
        self.flipped_rows = np.full(len(dataset), -1, dtype=np.int64)
        originals = sources >= 0
        self.rows[sources[originals]] = np.flatnonzero(originals)
        self.flipped_rows[-1 - sources[~originals]] = np.flatnonzero(~originals)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]) -> CodedBatch:
        index, seed = item if isinstance(item, tuple) else (item, None)
        image, label, skipped = self.dataset[item]
        served = (index + skipped) % len(self.dataset)  # a folder serves the next readable file for a broken one
        coin = torch.rand((), generator=torch.Generator().manual_seed(seed)) if seed is not None else None
        mirrored = self.flip and coin is not None and bool(coin < 0.5)
        row = int((self.flipped_rows if mirrored else self.rows)[served])
        if row < 0:
            raise ValueError(f"image {served} of the data has no codes in {self.root} (unreadable when pretokenized)")
        return CodedBatch((image.flip(-1) if mirrored else image), label, skipped, self.tokens[row].codes)
