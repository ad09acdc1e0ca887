"""A recipe's ``data`` section and the dataset it names."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import Dataset, IterableDataset

from titok.config import Config
from titok.data.datasets import FashionMNIST, ImageFolder
from titok.data.transforms import Preprocess


@dataclass(frozen=True)
class DataConfig(Config):
    """Where images come from. ``source``: Fashion-MNIST (Debian's package, or ``path`` holding its IDX files),
    a folder of images (class subfolders give labels), webdataset tar shards (``path`` a file, a folder, a glob or
    a brace pattern; ``cls`` entries give labels), or an ``.npz`` with ``arr_0`` images (N, H, W, 3) uint8 and
    optionally ``arr_1`` labels (:mod:`titok.data.sources` reads the same from one string)."""

    source: Literal["fashion_mnist", "folder", "webdataset", "npz"] = "fashion_mnist"
    path: str | None = None
    split: Literal["train", "test"] = "train"
    random_crop: bool = True
    random_flip: bool = True
    limit: int | None = None  # use only the first N items
    shuffle_buffer: int = 1000  # webdataset: samples a reader holds to shuffle a shard (memory ~ this x sample size)

    def __post_init__(self) -> None:
        if self.source != "fashion_mnist" and not self.path:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data.limit must be at least 1, got {self.limit}")
        if self.shuffle_buffer < 1:
            raise ValueError(f"data.shuffle_buffer must be at least 1, got {self.shuffle_buffer}")


def build_dataset(
    cfg: DataConfig, image_size: int, *, train: bool = True, seed: int = 0, ordered: bool = False
) -> Dataset:
    """The dataset of ``cfg`` at ``image_size``; ``train`` enables the configured random crop/flip.

    Fashion-MNIST, folders and ``.npz`` files give map-style datasets (indexed by :class:`ResumableSampler`).
    Webdataset shards give an endless :class:`~titok.data.webdataset.ShardStream` whose order is drawn from
    ``seed``, or with ``ordered`` (pretokenizing, evaluating) a map-style
    :class:`~titok.data.shards.ShardSamples` of every sample once, in shard order. Map-style datasets also read
    items with evaluation preprocessing and no substitution (``dataset.read(i)``).
    """
    preprocess = Preprocess(image_size, random_crop=train and cfg.random_crop, random_flip=train and cfg.random_flip)
    if cfg.source == "webdataset" and not ordered:
        from titok.data.webdataset import ShardStream, expand_shards

        if cfg.limit is not None:
            raise ValueError("data.limit is not supported for webdataset shards: list fewer shards instead")
        return ShardStream(expand_shards(cfg.path), preprocess, seed=seed, shuffle_buffer=cfg.shuffle_buffer)
    if cfg.source == "fashion_mnist":
        dataset: Dataset = FashionMNIST(cfg.split, preprocess, root=cfg.path)
    elif cfg.source == "webdataset":
        from titok.data.shards import ShardSamples

        dataset = ShardSamples(cfg.path, preprocess)
    elif cfg.source == "npz":
        from titok.data.npz import NpzImages

        dataset = NpzImages(cfg.path, preprocess)
    else:
        dataset = ImageFolder(cfg.path, preprocess)
    if cfg.limit is not None and cfg.limit < len(dataset):
        dataset = FirstItems(dataset, cfg.limit)
    return dataset


def first_images(cfg: DataConfig, image_size: int, n: int) -> torch.Tensor:
    """The first (up to) ``n`` images of the data with evaluation preprocessing, (n, 3, S, S) in [0, 1]: the fixed
    inputs of a run's reconstruction previews."""
    dataset = build_dataset(cfg, image_size, train=False)
    if isinstance(dataset, IterableDataset):
        items = itertools.islice(iter(dataset), n)
    else:
        items = (dataset[i] for i in range(min(n, len(dataset))))
    return torch.stack([item[0] for item in items])


class FirstItems(Dataset):
    """The first ``n`` items of ``dataset``, indexed like it (plain or ``(index, seed)``), read like it."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, n
        self.unlisted = getattr(dataset, "unlisted", [])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        return self.dataset[item]

    def read(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset.read(index)
