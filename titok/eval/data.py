"""Evaluation images, from any data source (:mod:`titok.data.sources`): a folder of files, webdataset shards (every
sample once, in shard order), the ``arr_0`` of an ADM-style ``.npz``, or Fashion-MNIST.

Every source is a map-style dataset of ``(image (3, S, S) float in [0, 1] or None, index, error)``: an unreadable
item yields ``None`` and its error instead of being replaced by another image (which would count an image twice),
and :func:`collate` drops such items from the batch and hands their errors on, so that they are reported.
Preprocessing is the reference's evaluation transform, the same as every command's: resize the shorter side to S
(bicubic, antialiased), center crop S x S.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from titok.data.sources import FASHION_MNIST, data_config, describe

__all__ = ["FASHION_MNIST", "Batch", "EvalImages", "collate", "loader", "open_source"]


class Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, S, S) float in [0, 1]
    indices: torch.Tensor  # (B,) int64: positions in the source
    errors: list[str]  # one message per unreadable item of this batch


class EvalImages(Dataset):
    """The first ``limit`` items of a map-style image dataset (:func:`~titok.data.build.build_dataset`), read with
    evaluation preprocessing; ``skipped`` holds what listing the data left out (FIFOs, link loops, unlistable
    folders, shards that are not tar files)."""

    def __init__(self, dataset: Dataset, limit: int | None = None) -> None:
        self.dataset = dataset
        self.count = len(dataset) if limit is None else min(limit, len(dataset))
        self.skipped = [reason for _, reason in getattr(dataset, "unlisted", [])]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        if not 0 <= index < self.count:
            raise IndexError(f"item {index} of {self.count}")
        try:
            return self.dataset.read(index)[0], index, ""
        except ValueError as e:
            return None, index, str(e)


def open_source(spec: str, size: int, limit: int | None = None) -> tuple[EvalImages, str]:
    """A dataset for ``spec`` (see :func:`titok.data.sources.resolve`; a bare ``fashion-mnist`` is its test split)
    at ``size`` pixels, of its first ``limit`` items (default all), and a canonical description of it (for results
    and cache keys)."""
    from titok.data.build import build_dataset

    cfg = data_config(spec)
    return EvalImages(build_dataset(cfg, size, train=False, ordered=True), limit), describe(cfg)


def collate(items: list[tuple[torch.Tensor | None, int, str]]) -> Batch:
    kept = [(image, index) for image, index, _ in items if image is not None]
    errors = [error for image, _, error in items if image is None]
    images = torch.stack([image for image, _ in kept]) if kept else torch.empty(0, 3, 0, 0)
    return Batch(images, torch.tensor([index for _, index in kept], dtype=torch.long), errors)


def loader(dataset: Dataset, indices: range, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches of ``dataset[i]`` for ``i`` in ``indices``, in order."""
    subset = torch.utils.data.Subset(dataset, list(indices))
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
